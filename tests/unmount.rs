//! The daemon unmounts nothing but its own mount: after `umount` the kernel
//! has already taken daxlink away, and whatever is mounted at the path now
//! (the tmpfs daxlink covered, another daxlink below) must stay. On SIGTERM
//! a daemon whose mount is covered by another ends its connection instead
//! of unmounting the path.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A directory with mounts stacked on it, all detached on drop, and the
/// daemons started for it killed.
struct Stack {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            dir: tempfile::Builder::new()
                .prefix("daxlink-stack")
                .tempdir()
                .unwrap(),
            daemons: Vec::new(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Mounts on the directory, bottom first: (fstype, source).
    fn mounts(&self) -> Vec<(String, String)> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let want = self.path().display().to_string();
        mi.lines()
            .filter_map(|l| {
                let (a, b) = l.split_once(" - ")?;
                let point = a.split(' ').nth(4)?;
                let mut t = b.split(' ');
                if point != want {
                    return None;
                }
                Some((t.next()?.to_string(), t.next()?.to_string()))
            })
            .collect()
    }

    fn tmpfs(&self) {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs-below"])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(self.path().join("below"), b"tmpfs file").unwrap();
    }

    /// A daxlink daemon in the foreground on the directory (the topmost).
    fn daxlink(&mut self, img: &Path) -> u32 {
        let n = self.mounts().len();
        let child = Command::new(DAXLINK)
            .arg("mount")
            .arg(img)
            .arg(self.path())
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.daemons.push(child);
        let t0 = Instant::now();
        while self.mounts().len() == n {
            assert!(t0.elapsed() < Duration::from_secs(20), "mount timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
        pid
    }

    fn umount(&self) {
        assert!(umount_retrying(&self.path()), "umount: busy for 10 s");
    }

    /// Wait (bounded) for daemon `pid` to exit.
    fn wait_exit(&mut self, pid: u32) {
        let c = self.daemons.iter_mut().find(|c| c.id() == pid).unwrap();
        let t0 = Instant::now();
        while c.try_wait().unwrap().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "daemon {pid} did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for _ in 0..8 {
            if self.mounts().is_empty() {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn umount_leaves_what_is_below_mounted() {
    let a = Image::new("below-a", 32 << 20);
    let b = Image::new("below-b", 32 << 20);
    let mut s = Stack::new();
    s.tmpfs();
    // daxlink over a tmpfs: after umount the tmpfs is still there.
    let pa = s.daxlink(&a.path);
    s.umount();
    s.wait_exit(pa);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.mounts().len(), 1, "{:?}", s.mounts());
    assert_eq!(
        std::fs::read(s.path().join("below")).unwrap(),
        b"tmpfs file"
    );
    fsck_clean(&a.path);
    // Two daxlink mounts: the upper one's end leaves the lower one serving.
    let pa = s.daxlink(&a.path);
    std::fs::write(s.path().join("in-a"), b"a").unwrap();
    let pb = s.daxlink(&b.path);
    s.umount();
    s.wait_exit(pb);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.mounts().len(), 2, "{:?}", s.mounts());
    assert_eq!(std::fs::read(s.path().join("in-a")).unwrap(), b"a");
    std::fs::write(s.path().join("still-a"), b"a2").unwrap();
    s.umount();
    s.wait_exit(pa);
    assert_eq!(s.mounts().len(), 1, "{:?}", s.mounts());
    assert_eq!(
        std::fs::read(s.path().join("below")).unwrap(),
        b"tmpfs file"
    );
    fsck_clean(&a.path);
    fsck_clean(&b.path);
}

#[test]
fn sigterm_under_another_mount_ends_only_its_own_connection() {
    let a = Image::new("sigterm-a", 32 << 20);
    let b = Image::new("sigterm-b", 32 << 20);
    let mut s = Stack::new();
    s.tmpfs();
    let pa = s.daxlink(&a.path);
    let pb = s.daxlink(&b.path);
    std::fs::write(s.path().join("in-b"), b"b").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pa as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    s.wait_exit(pa);
    // B, on top, was not touched and still serves.
    assert_eq!(s.mounts().len(), 3, "{:?}", s.mounts());
    assert_eq!(std::fs::read(s.path().join("in-b")).unwrap(), b"b");
    std::fs::write(s.path().join("in-b2"), b"b2").unwrap();
    fsck_clean(&a.path);
    // SIGTERM of the topmost daemon unmounts its own mount only.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pb as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    s.wait_exit(pb);
    assert_eq!(s.mounts().len(), 2, "{:?}", s.mounts());
    fsck_clean(&b.path);
}

/// The kernel drops RELEASE requests still queued when the connection
/// ends; at a clean unmount no file can be open, so the daemon frees every
/// unlinked file then: no orphan survives (fsck -n clean).
#[test]
fn open_unlinked_files_closed_right_before_umount_leave_no_orphan() {
    let img = Image::new("orphans", 256 << 20);
    let m = Mounted::new(&img.path, "");
    // A process opens and unlinks 10,000 files; its exit closes them all,
    // and umount follows at once (by hand this left thousands of orphans).
    let script = format!(
        "import os, resource\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))\n\
         fds = []\n\
         for i in range(10000):\n    \
             p = '{}/f%d' % i\n    \
             fd = os.open(p, os.O_CREAT | os.O_RDWR); os.write(fd, b'x')\n    \
             fds.append(fd); os.unlink(p)\n",
        m.root().display()
    );
    let st = Command::new("timeout")
        .args(["120", "python3", "-c", &script])
        .status()
        .unwrap();
    assert!(st.success(), "python: {st}");
    m.unmount();
    fsck_clean(&img.path);
}
