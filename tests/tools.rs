//! The tools' messages and leftovers, as a user meets them:
//! one line naming the path and saying what to do, as e2fsprogs and
//! xfsprogs write them, and no file left behind by a tool that failed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The mkfs-daxlink binary of this build (the workspace's other package).
fn mkfs_bin() -> PathBuf {
    let p = Path::new(DAXLINK).parent().unwrap().join("mkfs-daxlink");
    assert!(
        p.exists(),
        "mkfs-daxlink is not built next to daxlink: run cargo build --workspace"
    );
    p
}

/// A scratch directory on /dev/shm.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap()
}

fn run(cmd: &mut Command) -> Out {
    let c = std::mem::replace(cmd, Command::new("true"));
    run_deadline(c, 60)
}

/// One line on stderr, naming `path`, containing each of `words`.
fn one_line_naming(o: &Out, path: &Path, words: &[&str]) {
    let e = o.stderr.trim_end();
    assert_eq!(e.lines().count(), 1, "not one line: {o:?}");
    assert!(e.contains(&path.display().to_string()), "no path: {o:?}");
    for w in words {
        assert!(e.contains(w), "no {w:?}: {o:?}");
    }
}

/// mkfs refuses, without --force, a file that carries another filesystem
/// (made by that filesystem's own mkfs) or swap, and formats it with --force.
#[test]
fn mkfs_refuses_a_foreign_filesystem_without_force() {
    let d = scratch();
    let img = d.path().join("img");
    let tools: &[(&str, &[&str], &str)] = &[
        ("mkfs.ext4", &["-q", "-F"], "ext2/ext3/ext4"),
        ("mkfs.xfs", &["-q", "-f"], "xfs"),
        ("mkswap", &[], "swap"),
    ];
    for (tool, args, kind) in tools {
        let _ = std::fs::remove_file(&img);
        std::fs::File::create(&img)
            .unwrap()
            .set_len(320 << 20)
            .unwrap();
        let o = run(Command::new(tool).args(*args).arg(&img));
        assert_eq!(o.rc, 0, "{tool} (is it installed?): {o:?}");
        let o = run(Command::new(mkfs_bin()).arg("-q").arg(&img));
        assert_eq!(o.rc, 1, "{tool}: {o:?}");
        one_line_naming(&o, &img, &[kind, "--force"]);
        // Nothing was written: the other filesystem's tools still see it.
        let o2 = run(Command::new("blkid")
            .arg("-p")
            .arg("-o")
            .arg("value")
            .arg("-s")
            .arg("TYPE")
            .arg(&img));
        assert!(
            !o2.stdout.trim().is_empty(),
            "{tool}: signature gone: {o2:?}"
        );
        let o = run(Command::new(mkfs_bin()).args(["-q", "--force"]).arg(&img));
        assert_eq!(o.rc, 0, "{tool}: {o:?}");
        fsck_clean(&img);
    }
}

/// A new image too small is refused and not left behind; a 0-byte file and
/// a missing one without --size are named, with what to do.
#[test]
fn mkfs_failures_name_the_path_and_leave_nothing() {
    let d = scratch();
    let new = d.path().join("new.img");
    let o = run(Command::new(mkfs_bin()).args(["--size", "1K"]).arg(&new));
    assert_eq!(o.rc, 1, "{o:?}");
    one_line_naming(&o, &new, &["too small"]);
    assert!(!new.exists(), "mkfs left {} behind", new.display());
    let o = run(Command::new(mkfs_bin()).arg(&new));
    assert_eq!(o.rc, 1, "{o:?}");
    one_line_naming(&o, &new, &["does not exist", "--size"]);
    assert!(!new.exists());
    let empty = d.path().join("empty.img");
    std::fs::File::create(&empty).unwrap();
    let o = run(Command::new(mkfs_bin()).arg(&empty));
    assert_eq!(o.rc, 1, "{o:?}");
    one_line_naming(&o, &empty, &["empty", "--size"]);
    assert!(empty.exists(), "mkfs removed a file it did not create");
}

/// `mkfs.daxlink --help` says what IMAGE is.
#[test]
fn mkfs_help_describes_the_image_argument() {
    let o = run(Command::new(mkfs_bin()).arg("--help"));
    assert_eq!(o.rc, 0, "{o:?}");
    let line = o
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("<IMAGE>"))
        .unwrap_or_else(|| panic!("no <IMAGE> line: {}", o.stdout));
    assert!(line.contains("image file"), "{line}");
}

/// A reference image of `images/`, unpacked into `dir` (mode 0600).
fn unpack(dir: &Path, name: &str) -> PathBuf {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let gz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(format!("{name}.img.gz"));
    let mut b = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
        .read_to_end(&mut b)
        .unwrap();
    let p = dir.join(format!("{name}.img"));
    std::fs::write(&p, b).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Mount of a file that holds no daxlink filesystem (another filesystem,
/// or random bytes) says so, instead of "corrupted, run fsck"; mount and
/// fsck name the superblock copies alike (A and B, FORMAT.md).
#[test]
fn mount_says_not_a_daxlink_filesystem_and_names_copies_as_fsck() {
    let d = scratch();
    let img = d.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let o = run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    assert_eq!(o.rc, 0, "mkfs.ext4 (is e2fsprogs installed?): {o:?}");
    let mnt = tempfile::tempdir().unwrap();
    let o = run(Command::new(DAXLINK).arg("mount").arg(&img).arg(mnt.path()));
    assert_eq!(o.rc, 32, "{o:?}");
    one_line_naming(&o, &img, &["not a daxlink filesystem"]);
    assert!(!o.stderr.contains("fsck"), "{o:?}");
    assert!(!is_mounted(mnt.path()));
    // Both copies damaged but daxlink's: mount names them as fsck does.
    let both = unpack(d.path(), "sb-both-bad");
    let m = run(Command::new(DAXLINK)
        .arg("mount")
        .arg(&both)
        .arg(mnt.path()));
    assert_eq!(m.rc, 32, "{m:?}");
    assert!(!is_mounted(mnt.path()));
    let f = run(Command::new(FSCK).arg("-n").arg(&both));
    for copy in ["superblock copy A (block 0)", "superblock copy B (block 1)"] {
        assert!(m.stderr.contains(copy), "mount: {m:?}");
        assert!(f.stdout.contains(copy), "fsck: {f:?}");
    }
    assert!(m.stderr.contains("run fsck"), "{m:?}");
}

/// `fsck -n` says what a repair would do, in the conditional, as
/// `xfs_repair -n` and `e2fsck -n` do; `fsck -y` says what it did.
#[test]
fn fsck_n_findings_say_what_would_be_done() {
    let d = scratch();
    for (name, n, y) in [
        (
            "wrong-nlink",
            "should be 2; would be corrected",
            "should be 2; corrected (fixed)",
        ),
        (
            "dirent-free-inode",
            "; entry would be removed",
            "; entry removed (fixed)",
        ),
        ("leaked-block", "; would be freed", "; freed (fixed)"),
    ] {
        let img = unpack(d.path(), name);
        let o = run(Command::new(FSCK).arg("-n").arg(&img));
        assert_eq!(o.rc, 4, "{o:?}");
        assert!(o.stdout.contains(n), "{name}: {o:?}");
        assert!(!o.stdout.contains("not fixed"), "{name}: {o:?}");
        let o = run(Command::new(FSCK).arg("-y").arg(&img));
        assert_eq!(o.rc, 1, "{o:?}");
        assert!(o.stdout.contains(y), "{name}: {o:?}");
    }
}

/// `daxlink reflink` failures name both paths and say why (FICLONERANGE's
/// rules), and a destination it created is not left behind; `daxlink pin`
/// of a range past the end of a file says so.
#[test]
fn reflink_and_pin_errors_say_why_and_leave_nothing() {
    let img = Image::new("tools-reflink", 32 << 20);
    let m = Mounted::new(&img.path, "");
    let src = m.path("small");
    std::fs::write(&src, b"hi\n").unwrap();
    let dst = m.path("dst");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--src-offset", "1", "--length", "4096"],
            "multiples of 4096",
        ),
        (
            &["--length", "8192"],
            "ends past the end of the source (3 bytes)",
        ),
    ];
    for (args, why) in cases {
        let o = run(Command::new(DAXLINK)
            .arg("reflink")
            .arg(&src)
            .arg(&dst)
            .args(*args));
        assert_eq!(o.rc, 1, "{o:?}");
        one_line_naming(&o, &dst, &[&src.display().to_string(), why]);
        assert!(
            !dst.exists(),
            "reflink left {} behind: {o:?}",
            dst.display()
        );
    }
    // Another filesystem: named, and nothing left there either.
    let t = scratch();
    let other = t.path().join("copy");
    let o = run(Command::new(DAXLINK).arg("reflink").arg(&src).arg(&other));
    assert_eq!(o.rc, 1, "{o:?}");
    one_line_naming(&o, &other, &["same daxlink filesystem"]);
    assert!(!other.exists());
    // An existing destination is kept (with its bytes) when a clone fails.
    std::fs::write(&dst, b"mine").unwrap();
    let o = run(Command::new(DAXLINK)
        .arg("reflink")
        .arg(&src)
        .arg(&dst)
        .args(["--dst-offset", "5"]));
    assert_eq!(o.rc, 1, "{o:?}");
    assert_eq!(std::fs::read(&dst).unwrap(), b"mine");
    std::fs::remove_file(&dst).unwrap();
    // And a good one works.
    daxlink(&[&"reflink", &src, &dst]);
    assert_eq!(std::fs::read(&dst).unwrap(), b"hi\n");
    // pin past EOF: docs/USAGE.md's example on a small file.
    let o = run(Command::new(DAXLINK).arg("pin").arg(&src).args([
        "--offset", "0", "--length", "4096", "--write", "--hold", "0",
    ]));
    assert_eq!(o.rc, 1, "{o:?}");
    one_line_naming(&o, &src, &["0..4096", "within the file (3 bytes)"]);
    // On a file of 4096 bytes it works.
    std::fs::write(&src, vec![7u8; 4096]).unwrap();
    daxlink(&[
        &"pin",
        &src,
        &"--offset",
        &"0",
        &"--length",
        &"4096",
        &"--write",
        &"--hold",
        &"0",
    ]);
    m.unmount();
    fsck_clean(&img.path);
}

/// threads= out of range: one line, exit 32, with the range docs/USAGE.md gives.
#[test]
fn threads_out_of_range_says_the_range() {
    let img = Image::new("tools-threads", 32 << 20);
    let mnt = tempfile::tempdir().unwrap();
    for t in ["0", "65"] {
        let o = run(Command::new(DAXLINK)
            .arg("mount")
            .arg(&img.path)
            .arg(mnt.path())
            .arg("-o")
            .arg(format!("threads={t}")));
        assert_eq!(o.rc, 32, "{o:?}");
        assert!(o.stderr.contains("between 1 and 64"), "{o:?}");
        assert!(!is_mounted(mnt.path()));
    }
    let usage =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/USAGE.md"))
            .unwrap();
    assert!(
        usage.contains("`threads=N` (FUSE worker threads, 1 to 64;"),
        "docs/USAGE.md disagrees"
    );
}

/// The docs agree with the tools and the package: every
/// `persist=` value `--help` offers is in docs/USAGE.md and every crashtest
/// workload in docs/CRASH.md, the README names the toolchain the build
/// needs and does not claim the report path is main.sh's last line, and the
/// license files Cargo.toml's "MIT OR Apache-2.0" points at exist.
#[test]
fn readme_and_licenses_agree_with_the_tools() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let usage = std::fs::read_to_string(root.join("docs/USAGE.md")).unwrap();
    let crash = std::fs::read_to_string(root.join("docs/CRASH.md")).unwrap();
    let mount_help = run(Command::new(DAXLINK).args(["mount", "--help"])).stdout;
    assert!(
        mount_help.contains("persist=cpu|msync|auto"),
        "{mount_help}"
    );
    assert!(usage.contains("persist=cpu|msync|auto"));
    let crash_help = run(Command::new(DAXLINK).args(["crashtest", "--help"])).stdout;
    let line = crash_help
        .lines()
        .find(|l| l.contains("--workload"))
        .unwrap()
        .to_string();
    for w in ["seq0", "seq1", "seq2", "big", "direct"] {
        assert!(line.contains(w), "{line}");
        assert!(
            crash.contains(&format!("`{w}`")),
            "docs/CRASH.md lacks workload {w}"
        );
    }
    assert!(
        readme.contains("Rust 1.88 or newer"),
        "no toolchain in README"
    );
    assert!(!readme.contains("the last line printed is"), "README");
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("license = \"MIT OR Apache-2.0\""));
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(mit.contains("Permission is hereby granted") && mit.contains("the daxlink authors"));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
}
