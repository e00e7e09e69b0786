//! Remount: `mount -o remount,ro DIR` and back to rw, through mount(8) and
//! mount.fuse3 (this build bind-mounted over /usr/local/sbin/daxlink in a
//! private mount namespace, since mount(8) resets PATH for helpers) or through
//! `daxlink mount SRC DIR -o remount,...`. While read-only every change fails
//! with the errno tmpfs gives, reads work and the image is marked clean (a
//! crash then needs no recovery); back to rw, writes work; everything survives
//! unmount + fsck + mount. Privilege, busy files and option changes are refused.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn superblock_clean(img: &Path) -> bool {
    // A raw read of the image file: the daemon's flock is advisory.
    let b = fs::read(img).unwrap();
    daxlink::format::Superblock::decode(&b[..512], b.len() as u64)
        .unwrap()
        .clean
}

fn have_mount_helper() -> bool {
    Path::new("/usr/local/sbin/daxlink").exists()
        && (Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists())
}

/// `mount -o remount,OPTS DIR` through mount(8) → mount.fuse3 → this build.
fn remount_mount8(dir: &Path, opts: &str) -> (i32, String) {
    let script = format!(
        "mount --bind {DAXLINK} /usr/local/sbin/daxlink && exec mount -o remount,{opts} {}",
        dir.display()
    );
    let out = Command::new("timeout")
        .args(["30", "unshare", "-m", "sh", "-c", &script])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `daxlink mount IMAGE DIR -o remount,OPTS` (the form mount.fuse3 runs).
fn remount_direct(img: &Path, dir: &Path, opts: &str) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["30", DAXLINK, "mount"])
        .arg(img)
        .arg(dir)
        .arg("-o")
        .arg(format!("remount,{opts}"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn set_xattr(p: &Path, name: &str, v: &[u8]) -> std::io::Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a live buffer.
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Lay out a few files in `root`.
fn populate(root: &Path) {
    fs::write(root.join("a"), b"alpha").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/b"), b"beta").unwrap();
}

/// Every change attempted on a populated tree, with its errno (0 = worked).
fn change_errnos(root: &Path) -> Vec<(&'static str, i32)> {
    let a = root.join("a");
    vec![
        (
            "open-write",
            errno_of(fs::OpenOptions::new().write(true).open(&a)),
        ),
        ("create", errno_of(fs::File::create(root.join("new")))),
        ("mkdir", errno_of(fs::create_dir(root.join("nd")))),
        ("unlink", errno_of(fs::remove_file(root.join("d/b")))),
        ("rmdir", errno_of(fs::remove_dir(root.join("d")))),
        ("rename", errno_of(fs::rename(&a, root.join("a2")))),
        ("link", errno_of(fs::hard_link(&a, root.join("a3")))),
        ("symlink", errno_of(symlink("a", root.join("s")))),
        (
            "chmod",
            errno_of(fs::set_permissions(&a, fs::Permissions::from_mode(0o600))),
        ),
        ("setxattr", errno_of(set_xattr(&a, "user.k", b"v"))),
        (
            "truncate",
            errno_of({
                let c = std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: valid NUL-terminated path.
                let r = unsafe { libc::truncate(c.as_ptr(), 1) };
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }),
        ),
    ]
}

/// The same changes on tmpfs remounted read-only: what Linux answers.
fn tmpfs_errnos() -> Vec<(&'static str, i32)> {
    let t = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(t.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    populate(t.path());
    assert!(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(t.path())
        .status()
        .unwrap()
        .success());
    let e = change_errnos(t.path());
    let _ = Command::new("umount").arg(t.path()).status();
    e
}

#[test]
fn remount_ro_and_back_rw() {
    let img = Image::new("remount", 64 << 20);
    let m = Mounted::new(&img.path, "");
    populate(m.root());
    let big = pattern(7, 300_000);
    fs::write(m.path("big"), &big).unwrap();
    assert!(!superblock_clean(&img.path));

    let via_mount8 = have_mount_helper();
    eprintln!("remount through mount(8): {via_mount8}");
    let remount = |opts: &str| {
        if via_mount8 {
            remount_mount8(m.root(), opts)
        } else {
            remount_direct(&img.path, m.root(), opts)
        }
    };
    let (rc, err) = remount("ro");
    assert_eq!(rc, 0, "remount,ro: {err}");
    let line = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = line
        .lines()
        .find(|l| l.contains(&*m.root().to_string_lossy()))
        .unwrap()
        .to_string();
    assert!(line.contains(" ro,"), "superblock not read-only: {line}");
    // Read-only: every change fails exactly as on tmpfs (EROFS), reads work.
    let ours = change_errnos(m.root());
    assert_eq!(ours, tmpfs_errnos());
    assert!(ours.iter().all(|(_, e)| *e == libc::EROFS), "{ours:?}");
    assert_eq!(fs::read(m.path("a")).unwrap(), b"alpha");
    assert_eq!(fs::read(m.path("big")).unwrap(), big);
    assert_eq!(fs::read_dir(m.path("d")).unwrap().count(), 1);
    // The image is marked clean while read-only.
    assert!(superblock_clean(&img.path), "read-only but not clean");

    let (rc, err) = remount("rw");
    assert_eq!(rc, 0, "remount,rw: {err}");
    assert!(!superblock_clean(&img.path), "read-write but still clean");
    fs::write(m.path("after"), b"written after rw").unwrap();
    fs::write(m.path("a"), b"alpha2").unwrap();
    set_xattr(&m.path("a"), "user.k", b"v").unwrap();
    assert_eq!(change_errnos(m.root())[0], ("open-write", 0));

    let m = m.cycle("");
    assert_eq!(fs::read(m.path("big")).unwrap(), big);
    assert_eq!(fs::read(m.path("after")).unwrap(), b"written after rw");
    // change_errnos renamed a to a2 (and then found no a for the rest).
    assert_eq!(fs::read(m.path("a2")).unwrap(), b"alpha2");
    assert!(!m.path("d").exists() && m.path("s").is_symlink());
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn crash_while_read_only_needs_no_recovery() {
    let img = Image::new("remount-crash", 64 << 20);
    let mut m = Mounted::new(&img.path, "");
    let data = pattern(3, 100_000);
    fs::write(m.path("f"), &data).unwrap();
    // The kernel refused this remount once with EBUSY right after the
    // write's close, in the suite on a loaded machine; a remount of a file
    // closed a moment ago is retried for up to 10 s.
    let t0 = std::time::Instant::now();
    let (rc, err) = loop {
        let (rc, err) = remount_direct(&img.path, m.root(), "ro");
        if rc == 0 || !err.contains("busy:") || t0.elapsed() > std::time::Duration::from_secs(10) {
            break (rc, err);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(rc, 0, "{err}");
    m.kill(); // SIGKILL while read-only
    assert!(superblock_clean(&img.path));
    let out = Command::new(FSCK)
        .arg("-n")
        .arg(&img.path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("not cleanly"), "{text}");
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("f")).unwrap(), data);
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn remount_refusals() {
    let img = Image::new("remount-refuse", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::write(m.path("f"), b"x").unwrap();
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();

    // Options only the daemon knows cannot change.
    let (rc, err) = remount_direct(&img.path, m.root(), "ro,page_model=legacy");
    assert_eq!(rc, 32);
    assert!(
        err.contains("page_model") && err.lines().count() == 1,
        "{err}"
    );
    // Unchanged values (as mount(8) passes them back) are fine: see below.

    // A file open for writing: the kernel refuses (EBUSY), the daemon stays rw.
    let w = fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap();
    let (rc, err) = remount_direct(&img.path, m.root(), "ro");
    assert_eq!(rc, 32);
    assert!(err.contains("busy"), "{err}");
    drop(w);
    fs::write(m.path("f"), b"still writable").unwrap();

    // Unprivileged: the kernel's mount(2) and the daemon's ioctl both refuse.
    for opts in ["ro", "rw"] {
        let (rc, err) = run_as(
            65534,
            65534,
            &format!("{DAXLINK} remount {} -o {opts}", m.root().display()),
        );
        assert_eq!(rc, 32, "{opts}: {err}");
        assert!(err.contains("permission denied"), "{opts}: {err}");
    }
    fs::write(m.path("f"), b"and still").unwrap();
    assert!(!superblock_clean(&img.path));

    // What mount(8) passes on remount: the current options, then ours.
    let (rc, err) = remount_direct(
        &img.path,
        m.root(),
        "rw,nosuid,nodev,relatime,ro,user_id=0,group_id=0,default_permissions,allow_other,page_model=proxy",
    );
    assert_eq!(rc, 0, "{err}");
    assert!(superblock_clean(&img.path));
    let (rc, err) = remount_direct(&img.path, m.root(), "rw");
    assert_eq!(rc, 0, "{err}");
    m.unmount();
    fsck_clean(&img.path);

    // A mount that began read-only cannot become read-write (the image is
    // open read-only; its journal was not replayed).
    let m = Mounted::new(&img.path, "ro");
    let (rc, err) = remount_direct(&img.path, m.root(), "rw");
    assert_eq!(rc, 32);
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"and still");
    m.unmount();
    fsck_clean(&img.path);

    // Not a daxlink mount.
    let t = tempfile::tempdir().unwrap();
    let (rc, err) = remount_direct(&img.path, t.path(), "ro");
    assert_eq!(rc, 32);
    assert!(err.contains("not a daxlink mount"), "{err}");
}
