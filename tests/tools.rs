//! The tools' messages and leftovers, as a user meets them (issue 20 item 7):
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
