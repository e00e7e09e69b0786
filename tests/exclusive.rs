//! One writer per image: a mount locks its image (flock, see src/media/lock.rs), and
//! mkfs and fsck take the same lock. A second read-write mount, `fsck -y` or
//! mkfs of a mounted image is refused with one line naming the holder; `ro`
//! mounts share with each other and with `fsck -n`; a killed daemon's lock
//! goes with it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// `daxlink mount IMAGE DIR [-o OPTS]` (the daemon form) in a fresh directory.
fn mount_cmd(img: &Path, opts: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new("timeout");
    c.args(["30", DAXLINK, "mount"]).arg(img).arg(dir.path());
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    let out = c.output().unwrap();
    if is_mounted(dir.path()) {
        let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        panic!("mount -o '{opts}' of a locked image succeeded");
    }
    (out, dir)
}

fn fsck(args: &[&str], img: &Path) -> Output {
    Command::new("timeout")
        .args(["30", FSCK])
        .args(args)
        .arg(img)
        .output()
        .unwrap()
}

/// The mkfs-daxlink binary of this build (the workspace's other package).
fn mkfs_bin() -> Option<PathBuf> {
    let p = Path::new(DAXLINK).parent()?.join("mkfs-daxlink");
    p.exists().then_some(p)
}

/// Exactly one line on stderr, naming `pid` as the holder.
fn refused_naming(out: &Output, pid: u32, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(
        err.contains(&format!("in use by pid {pid} (daxlink)")),
        "{what}: {err}"
    );
}

#[test]
fn second_writer_mkfs_and_fsck_of_a_mounted_image_are_refused() {
    let img = Image::new("excl", 16 << 20);
    let m = Mounted::new(&img.path, "");
    let pid = m.pid().unwrap();
    fs::write(m.path("a"), b"first mount").unwrap();

    let (out, _d) = mount_cmd(&img.path, "");
    assert_eq!(out.status.code(), Some(32), "second rw mount");
    refused_naming(&out, pid, "second rw mount");
    let (out, _d) = mount_cmd(&img.path, "ro");
    assert_eq!(
        out.status.code(),
        Some(32),
        "ro mount of a rw-mounted image"
    );
    refused_naming(&out, pid, "ro mount");
    // The foreground form too.
    let e = Mounted::try_new(&img.path, "")
        .err()
        .expect("second -f mount");
    assert!(e.contains(&format!("in use by pid {pid}")), "{e}");

    for flag in ["-y", "-p", "-a", "-n"] {
        let out = fsck(&[flag], &img.path);
        assert_eq!(out.status.code(), Some(8), "fsck {flag}");
        refused_naming(&out, pid, &format!("fsck {flag}"));
    }

    let e =
        daxlink::tools::mkfs::mkfs_path(&img.path, None, true, &Default::default()).unwrap_err();
    assert!(e.contains(&format!("in use by pid {pid} (daxlink)")), "{e}");
    match mkfs_bin() {
        Some(mkfs) => {
            for args in [&["--force"][..], &["--force", "--size", "32M"][..]] {
                let out = Command::new(&mkfs)
                    .args(args)
                    .arg(&img.path)
                    .output()
                    .unwrap();
                assert_eq!(out.status.code(), Some(1), "mkfs {args:?}");
                refused_naming(&out, pid, "mkfs");
            }
        }
        None => panic!("mkfs-daxlink is not built next to daxlink: run cargo build --workspace"),
    }
    // Nothing of that touched the image: the mount still serves its file.
    assert_eq!(fs::metadata(&img.path).unwrap().len(), 16 << 20);
    assert_eq!(fs::read(m.path("a")).unwrap(), b"first mount");
    let m = m.cycle("");
    assert_eq!(fs::read(m.path("a")).unwrap(), b"first mount");
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn read_only_mounts_share_and_keep_writers_out() {
    let img = Image::new("shared", 16 << 20);
    let m = Mounted::new(&img.path, "");
    fs::write(m.path("f"), b"data").unwrap();
    m.unmount();
    let r1 = Mounted::new(&img.path, "ro");
    let r2 = Mounted::new(&img.path, "ro");
    assert_eq!(fs::read(r1.path("f")).unwrap(), b"data");
    assert_eq!(fs::read(r2.path("f")).unwrap(), b"data");
    // fsck -n shares with them; writers do not.
    fsck_clean(&img.path);
    let pids = [r1.pid().unwrap(), r2.pid().unwrap()];
    let (out, _d) = mount_cmd(&img.path, "");
    assert_eq!(out.status.code(), Some(32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        pids.iter()
            .any(|p| err.contains(&format!("pid {p} (daxlink)"))),
        "{err}"
    );
    let out = fsck(&["-y"], &img.path);
    assert_eq!(out.status.code(), Some(8));
    r1.unmount();
    r2.unmount();
    let m = Mounted::new(&img.path, "");
    fs::write(m.path("g"), b"writer again").unwrap();
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn a_killed_daemon_leaves_no_lock() {
    let img = Image::new("killed", 16 << 20);
    let mut m = Mounted::new(&img.path, "");
    fs::write(m.path("f"), b"before the crash").unwrap();
    m.kill();
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"before the crash");
    m.unmount();
    fsck_clean(&img.path);
}

/// The data loss this lock prevents: two daemons each mapping the image and
/// allocating from their own DRAM bitmap would hand out the same blocks and
/// inode numbers, and the last unmount would overwrite the other's metadata.
#[test]
fn two_mounts_writing_one_image_cannot_happen() {
    let img = Image::new("twomounts", 16 << 20);
    let m1 = Mounted::new(&img.path, "");
    fs::write(m1.path("one"), vec![1u8; 100_000]).unwrap();
    match Mounted::try_new(&img.path, "") {
        Ok(m2) => {
            fs::write(m2.path("two"), vec![2u8; 100_000]).unwrap();
            m2.unmount();
            panic!("a second read-write mount of one image succeeded");
        }
        Err(e) => assert!(e.contains("in use by pid"), "{e}"),
    }
    fs::write(m1.path("one-more"), b"still the only writer").unwrap();
    m1.unmount();
    fsck_clean(&img.path);
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("one")).unwrap(), vec![1u8; 100_000]);
    assert_eq!(
        fs::read(m.path("one-more")).unwrap(),
        b"still the only writer"
    );
    assert!(!m.path("two").exists());
    m.unmount();
    fsck_clean(&img.path);
}

/// As root the lock is a file in /run/daxlink (src/media/lock.rs), which a
/// non-root owner's tools cannot see; the image's own flock still keeps them
/// apart: root honours a flock by a user who can write the image, and takes
/// the image's flock itself, which the owner's tools meet.
#[test]
fn root_and_the_images_owner_keep_each_other_out() {
    use std::io::Write;
    const OWNER: u32 = 1000;
    let img = Image::new("owner", 16 << 20);
    std::os::unix::fs::chown(&img.path, Some(OWNER), Some(OWNER)).unwrap();
    // The owner holds the image's flock until its stdin closes.
    let mut held = Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "flock",
            "-n",
        ])
        .arg(&img.path)
        .args(["-c", "echo locked; read x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv and flock (util-linux)");
    let mut line = [0u8; 7];
    std::io::Read::read_exact(held.stdout.as_mut().unwrap(), &mut line).unwrap();
    assert_eq!(&line, b"locked\n");
    let pid = held.id();
    let (out, _d) = mount_cmd(&img.path, "");
    assert_eq!(
        out.status.code(),
        Some(32),
        "root's mount while the owner holds the lock"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("in use by pid {pid} (flock)")),
        "{err}"
    );
    assert_eq!(fsck(&["-y"], &img.path).status.code(), Some(8));
    let _ = held.stdin.take().unwrap().write_all(b"\n");
    held.wait().unwrap();

    let m = Mounted::new(&img.path, "");
    let out = Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "timeout",
            "30",
            FSCK,
            "-y",
        ])
        .arg(&img.path)
        .output()
        .expect("setpriv");
    assert_eq!(
        out.status.code(),
        Some(8),
        "the owner's fsck -y during root's mount"
    );
    refused_naming(&out, m.pid().unwrap(), "the owner's fsck -y");
    m.unmount();
    fsck_clean(&img.path);
}
