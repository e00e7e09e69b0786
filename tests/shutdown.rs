//! A wedged request never wedges shutdown: with a getxattr handler that never
//! returns (DAXLINK_FAULT_INJECT=hang-on-xattr), SIGTERM or `umount -l` still
//! ends the daemon within DAXLINK_SHUTDOWN_TIMEOUT_MS. It logs the stuck
//! request and exits without marking the image clean; the next mount recovers
//! and fsck is clean.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT_MS: u64 = 1500;

fn superblock_clean(img: &Path) -> bool {
    let b = fs::read(img).unwrap();
    daxlink::format::Superblock::decode(&b[..512], b.len() as u64)
        .unwrap()
        .clean
}

/// A foreground daemon with the hang hook; killed and detached on drop.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    fn start(img: &Path, log_dir: &Path) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("daxlink-mnt")
            .tempdir()
            .unwrap();
        let log = log_dir.join("daemon.log");
        let child = Command::new(DAXLINK)
            .arg("mount")
            .arg(img)
            .arg(dir.path())
            .arg("-f")
            .env("DAXLINK_FAULT_INJECT", "hang-on-xattr")
            .env("DAXLINK_SHUTDOWN_TIMEOUT_MS", LIMIT_MS.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, dir, log };
        let t0 = Instant::now();
        while !is_mounted(d.dir.path()) {
            assert!(d.child.try_wait().unwrap().is_none(), "daemon exited");
            assert!(t0.elapsed() < Duration::from_secs(20), "mount timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Start `getfattr` on the hanging xattr and wait until it is stuck.
    fn wedge(&self, file: &Path) -> Child {
        let mut g = Command::new("timeout")
            .args(["60", "getfattr", "-n", "user.daxlink.inject-hang"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("getfattr (package attr)");
        std::thread::sleep(Duration::from_millis(500));
        assert!(g.try_wait().unwrap().is_none(), "getfattr did not hang");
        g
    }

    /// Wait (bounded) for the daemon to exit; return its status and how long it took.
    fn wait_exit(&mut self, t0: Instant) -> (ExitStatus, Duration) {
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_millis(LIMIT_MS) + Duration::from_secs(15),
                "daemon still running {:?} after shutdown began",
                t0.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(self.dir.path()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn wait_child(c: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// Mount with the hang hook, wedge a getxattr, run `stop`, and check that the
/// daemon exits in bounded time as a crash that the next mount recovers.
fn wedged_shutdown(tag: &str, stop: impl FnOnce(&Daemon)) {
    let img = Image::new(tag, 16 << 20);
    let logs = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&img.path, logs.path());
    let f = d.dir.path().join("f");
    fs::write(&f, b"written before the wedge").unwrap();
    let mut g = d.wedge(&f);
    let t0 = Instant::now();
    stop(&d);
    let (st, took) = d.wait_exit(t0);
    assert!(!st.success(), "daemon exit status {st}");
    assert!(took >= Duration::from_millis(LIMIT_MS - 100), "{took:?}");
    let log = fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("stuck request: getxattr, running for"),
        "daemon log:\n{log}"
    );
    // The daemon is gone, so the kernel connection is aborted: the wedged caller returns.
    let gst = wait_child(&mut g, Duration::from_secs(10)).expect("getfattr still hangs");
    assert!(!gst.success());
    let t1 = Instant::now();
    while is_mounted(d.dir.path()) && t1.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!is_mounted(d.dir.path()), "mount left behind");
    assert!(!superblock_clean(&img.path), "marked clean after a wedge");
    drop(d);
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"written before the wedge");
    fs::write(m.path("g"), b"after recovery").unwrap();
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn sigterm_ends_a_daemon_with_a_wedged_request() {
    wedged_shutdown("wedge-term", |d| {
        let st = Command::new("kill")
            .args(["-TERM", &d.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    });
}

#[test]
fn lazy_umount_ends_a_daemon_with_a_wedged_request() {
    wedged_shutdown("wedge-umount", |d| {
        let st = Command::new("timeout")
            .args(["20", "umount", "-l"])
            .arg(d.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    });
}
