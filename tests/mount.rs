//! Mounting as users and mount(8) do it: the daemon form, the mount.fuse3
//! form, mount -t fuse.daxlink, options, read-only, bad images, SIGTERM,
//! and a request that panics.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn superblock_clean(img: &Path) -> bool {
    let b = fs::read(img).unwrap();
    let sb = daxlink::format::Superblock::decode(&b[..512], b.len() as u64).unwrap();
    sb.clean
}

/// The /proc/mounts line of the mount at `dir`.
fn mounts_line(dir: &Path) -> String {
    let d = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.contains(&d))
        .unwrap_or_else(|| panic!("{d} is not in /proc/mounts"))
        .to_string()
}

fn wait_unmounted(dir: &Path) {
    let t0 = Instant::now();
    while is_mounted(dir) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until no daxlink daemon has the image open (it has written its clean flag).
fn wait_daemon_gone(img: &Path) {
    let t0 = Instant::now();
    let name = img.file_name().unwrap().to_string_lossy().into_owned();
    loop {
        let out = Command::new("pgrep").args(["-f", &name]).output().unwrap();
        if out.stdout.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn daemon_form_returns_once_mounted_and_unmounts_cleanly() {
    let img = Image::new("daemon", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    daxlink(&[&"mount", &img.path, &dir.path()]);
    // Mounted by the time the command returns.
    assert!(is_mounted(dir.path()));
    let line = mounts_line(dir.path());
    assert!(line.contains(" fuse.daxlink "), "{line}");
    assert!(
        !superblock_clean(&img.path),
        "clean flag must be cleared while mounted"
    );
    fs::write(dir.path().join("f"), b"x").unwrap();
    assert!(Command::new("umount")
        .arg(dir.path())
        .status()
        .unwrap()
        .success());
    wait_daemon_gone(&img.path);
    assert!(superblock_clean(&img.path));
    fsck_clean(&img.path);
}

#[test]
fn mount_fuse3_form_and_options() {
    let img = Image::new("form", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    // The form mount.fuse3 uses, with the options mount(8) appends for root.
    let st = Command::new(DAXLINK)
        .arg(&img.path)
        .arg(dir.path())
        .args([
            "-o",
            "rw,dev,suid,threads=3,persist=cpu,page_model=proxy,noatime",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(is_mounted(dir.path()));
    let line = mounts_line(dir.path());
    assert!(line.contains("noatime"), "{line}");
    Command::new("umount").arg(dir.path()).status().unwrap();
    wait_unmounted(dir.path());
    wait_daemon_gone(&img.path);
}

#[test]
fn unknown_option_and_bad_images_fail_with_one_line() {
    let img = Image::new("badopt", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(DAXLINK)
        .arg("mount")
        .arg(&img.path)
        .arg(dir.path())
        .args(["-o", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown mount option 'frobnicate'"), "{err}");
    assert!(!is_mounted(dir.path()));
    // A file that is not a daxlink image.
    let junk = dir.path().join("junk.img");
    fs::write(&junk, vec![0x42u8; 4 << 20]).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let out = Command::new(DAXLINK)
        .arg("mount")
        .arg(&junk)
        .arg(mnt.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Not "corrupted, run fsck": it is not a daxlink filesystem at all.
    assert!(err.contains("not a daxlink filesystem"), "{err}");
    assert!(!err.contains("fsck"), "{err}");
    assert!(!is_mounted(mnt.path()));
    // Both superblocks scribbled: refused, never a panic.
    let mut b = fs::read(&img.path).unwrap();
    b[100] ^= 0xff;
    b[4096 + 100] ^= 0xff;
    fs::write(&img.path, &b).unwrap();
    let out = Command::new(DAXLINK)
        .arg("mount")
        .arg(&img.path)
        .arg(mnt.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
    // Only copy A scribbled: mounts from copy B.
    b[4096 + 100] ^= 0xff;
    fs::write(&img.path, &b).unwrap();
    let m = Mounted::new(&img.path, "");
    fs::write(m.path("ok"), b"ok").unwrap();
    m.unmount();
}

/// Run daxlink with `args`; require exit 32 and exactly one line on stderr; return it.
fn fails_32(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(32), "{cmd:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{cmd:?}: {err}");
    err
}

#[test]
fn every_mount_failure_exits_32_with_one_line() {
    let img = Image::new("exit32", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    // Usage errors of the mount subcommand (clap would say 2).
    let e = fails_32(Command::new(DAXLINK).arg("mount"));
    assert!(e.contains("<IMAGE>") && e.contains("usage"), "{e}");
    let e = fails_32(Command::new(DAXLINK).arg("mount").arg(&img.path));
    assert!(e.contains("<DIR>"), "{e}");
    let e = fails_32(
        Command::new(DAXLINK)
            .args(["mount", "--bogus"])
            .arg(&img.path)
            .arg(dir.path()),
    );
    assert!(e.contains("--bogus"), "{e}");
    // The mount.fuse3 form with an unknown option.
    let e = fails_32(
        Command::new(DAXLINK)
            .arg(&img.path)
            .arg(dir.path())
            .args(["-o", "rw,frob"]),
    );
    assert!(e.contains("unknown mount option 'frob'"), "{e}");
    // Other subcommands keep clap's usage status.
    let out = Command::new(DAXLINK).arg("reflink").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(DAXLINK)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    // "cannot start the daemon": run a copy of daxlink whose file is deleted, so
    // /proc/self/exe names a path that no longer exists.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("daxlink-copy");
    fs::copy(DAXLINK, &copy).unwrap();
    let exe = fs::File::open(&copy).unwrap();
    fs::remove_file(&copy).unwrap();
    let via_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&exe));
    let mut tries = 0;
    let e = loop {
        let out = Command::new(&via_fd)
            .arg("mount")
            .arg(&img.path)
            .arg(dir.path())
            .output();
        match out {
            // Another test thread's fork may briefly hold the copy open for writing.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                assert_eq!(out.status.code(), Some(32), "{err}");
                assert_eq!(err.trim().lines().count(), 1, "{err}");
                break err;
            }
        }
    };
    assert!(e.contains("cannot start the daemon"), "{e}");
    assert!(!is_mounted(dir.path()));

    // "cannot find my own executable": no /proc, in a private mount namespace.
    let script = format!(
        "umount -l /proc || exit 99; exec {DAXLINK} mount {} {}",
        img.path.display(),
        dir.path().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Root on Linux can always make a private mount namespace without /proc.
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not unmount /proc: {err}"
    );
    assert!(!err.starts_with("unshare:"), "{err}");
    assert_eq!(out.status.code(), Some(32), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot find my own executable"), "{err}");
    assert!(!is_mounted(dir.path()));
}

#[test]
fn read_only_mount_refuses_changes() {
    let img = Image::new("ro", 16 << 20);
    let m = Mounted::new(&img.path, "");
    fs::write(m.path("f"), b"before").unwrap();
    m.unmount();
    let m = Mounted::new(&img.path, "ro");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"before");
    assert_eq!(errno_of(fs::write(m.path("g"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(m.path("f"))), libc::EROFS);
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn sigterm_unmounts_cleanly() {
    let img = Image::new("sigterm", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(DAXLINK)
        .arg("mount")
        .arg(&img.path)
        .arg(dir.path())
        .arg("-f")
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !is_mounted(dir.path()) {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::write(dir.path().join("f"), b"data").unwrap();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
            let _ = child.kill();
            panic!("daemon did not exit on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}");
    assert!(!is_mounted(dir.path()));
    assert!(superblock_clean(&img.path));
    fsck_clean(&img.path);
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"data");
}

#[test]
fn mount_t_fuse_daxlink_and_fstab_tools() {
    // Needs the installed binaries; the README's test command installs them.
    // Missing, the test fails (a test that skips could pass with nothing tested).
    assert!(
        Path::new("/usr/local/sbin/daxlink").exists(),
        "daxlink is not installed in /usr/local/sbin: run scripts/install.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pm.img");
    fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    let st = Command::new("mkfs")
        .args(["-t", "daxlink", "-L", "lbl"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "fuse.daxlink", "-o", "allow_other"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    struct Guard<'a>(&'a Path);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if is_mounted(self.0) {
                let _ = Command::new("timeout")
                    .args(["20", "umount"])
                    .arg(self.0)
                    .status();
            }
        }
    }
    let g = Guard(&mnt);
    assert!(is_mounted(&mnt));
    let mut f = fs::File::create(mnt.join("x")).unwrap();
    f.write_all(b"hi").unwrap();
    drop(f);
    assert!(
        umount_retrying(&mnt),
        "umount {}: busy for 10 s",
        mnt.display()
    );
    drop(g);
    wait_daemon_gone(&img);
    let st = Command::new("fsck")
        .args(["-t", "daxlink", "-n"])
        .arg(&img)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn panicking_request_fails_with_eio_and_daemon_survives() {
    let img = Image::new("panic", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(DAXLINK)
        .arg("mount")
        .arg(&img.path)
        .arg(dir.path())
        .arg("-f")
        .env("DAXLINK_FAULT_INJECT", "panic-on-xattr")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child, std::path::PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            if is_mounted(&self.1) {
                let _ = Command::new("timeout")
                    .args(["20", "umount"])
                    .arg(&self.1)
                    .status();
            }
            let _ = self.0.wait();
        }
    }
    let t0 = Instant::now();
    while !is_mounted(dir.path()) {
        assert!(t0.elapsed() < Duration::from_secs(10));
        if child.try_wait().unwrap().is_some() {
            panic!("daemon exited");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let reap = Reap(child, dir.path().to_path_buf());
    let f = dir.path().join("f");
    fs::write(&f, b"x").unwrap();
    let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new("user.daxlink.inject-panic").unwrap();
    let mut buf = [0u8; 16];
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), 16) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EIO)
    );
    // The daemon is still serving.
    fs::write(dir.path().join("g"), b"still here").unwrap();
    assert_eq!(fs::read(dir.path().join("g")).unwrap(), b"still here");
    drop(reap);
}

/// A panic while mounting the image (none is known: every check of a hostile
/// image returns an error; DAXLINK_FAULT_INJECT=panic-in-mount stands in for
/// one) still gives mount's one line and exit 32, without Rust's panic
/// message; the panic is in the log at debug level.
#[test]
fn a_panic_while_mounting_is_one_line_and_exit_32() {
    let img = Image::new("mountpanic", 16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(DAXLINK);
    cmd.arg("mount")
        .arg(&img.path)
        .arg(dir.path())
        .env("DAXLINK_FAULT_INJECT", "panic-in-mount")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE");
    let e = fails_32(&mut cmd);
    assert!(e.contains("internal error reading the image"), "{e}");
    assert!(e.contains("injected panic"), "{e}");
    assert!(!is_mounted(dir.path()));
    // With the log at debug level, the panic is there.
    let out = cmd.env("RUST_LOG", "debug").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{err}");
    assert!(err.contains("panic while mounting the image"), "{err}");
    assert!(!is_mounted(dir.path()));
    // The image was not changed: it mounts.
    let m = Mounted::new(&img.path, "");
    m.unmount();
}

/// `mount -t daxlink` runs /sbin/mount.daxlink (scripts/install.sh links it
/// to daxlink) and mounts as `mount -t fuse.daxlink` does, with the same
/// kernel defaults (suid, dev, as ext4); `nosuid,nodev` still apply when
/// asked for; a failure is exit 32 with daxlink's one line.
#[test]
fn mount_t_daxlink_works_with_the_defaults_of_fuse_daxlink() {
    assert!(
        Path::new("/sbin/mount.daxlink").exists(),
        "/sbin/mount.daxlink is missing: run scripts/install.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pm.img");
    daxlink::tools::mkfs::mkfs_path(&img, Some(32 << 20), false, &Default::default()).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    struct Guard<'a>(&'a Path);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if is_mounted(self.0) {
                umount_retrying(self.0);
            }
        }
    }
    let _g = Guard(&mnt);
    let opts_of = |ty: &str, extra: &[&str]| -> String {
        let mut c = Command::new("mount");
        c.args(["-t", ty]).args(extra).arg(&img).arg(&mnt);
        let o = run_deadline(c, 30);
        assert_eq!(o.rc, 0, "mount -t {ty}: {o:?}");
        assert!(is_mounted(&mnt), "mount -t {ty}");
        fs::write(mnt.join("f"), ty).unwrap();
        let mut c = Command::new("findmnt");
        c.args(["-n", "-o", "FSTYPE,OPTIONS"]).arg(&mnt);
        let o = run_deadline(c, 10);
        assert!(umount_retrying(&mnt), "umount after mount -t {ty}");
        wait_daemon_gone(&img);
        o.stdout.trim().to_string()
    };
    let by_type = opts_of("daxlink", &[]);
    let by_fuse = opts_of("fuse.daxlink", &[]);
    assert_eq!(by_type, by_fuse);
    assert!(by_type.starts_with("fuse.daxlink "), "{by_type}");
    assert!(!by_type.contains("nosuid"), "{by_type}");
    let asked = opts_of("daxlink", &["-o", "nosuid,nodev"]);
    assert!(
        asked.contains("nosuid") && asked.contains("nodev"),
        "{asked}"
    );
    // Failure: exit 32 and daxlink's line.
    let junk = dir.path().join("junk.img");
    fs::write(&junk, vec![0x5au8; 4 << 20]).unwrap();
    let mut c = Command::new("mount");
    c.args(["-t", "daxlink"]).arg(&junk).arg(&mnt);
    let o = run_deadline(c, 30);
    assert_eq!(o.rc, 32, "{o:?}");
    assert!(o.stderr.contains("not a daxlink filesystem"), "{o:?}");
    assert!(!is_mounted(&mnt));
    fsck_clean(&img);
}
