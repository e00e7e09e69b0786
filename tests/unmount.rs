//! The daemon unmounts nothing but its own mount: after `umount` the kernel
//! has already taken daxlink away, and whatever is mounted at the path now
//! (the tmpfs daxlink covered, another daxlink below) must stay. On SIGTERM
//! a daemon whose mount is covered by another ends its connection instead
//! of unmounting the path.

mod common;

use std::ffi::OsStr;
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

/// Detaches a directory's mount (if any) on drop.
struct Detach<'a>(&'a Path);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

/// `prog args...` as a Command (for `run_deadline`).
fn command(prog: impl AsRef<OsStr>, args: &[&dyn AsRef<OsStr>]) -> Command {
    let mut c = Command::new(prog);
    for a in args {
        c.arg(a.as_ref());
    }
    c
}

fn mount_bg(img: &Path, dir: &Path, env: &[(&str, &str)]) {
    let mut c = Command::new(DAXLINK);
    c.arg("mount").arg(img).arg(dir).envs(env.iter().copied());
    let o = run_deadline(c, 30);
    assert_eq!(o.rc, 0, "mount: {}", o.stderr);
}

/// After `umount` the daemon still writes its last blocks and exits; a tool
/// that finds the image locked by a daxlink daemon whose mount is gone waits
/// for it (bounded, one line) instead of failing, while an image that is
/// still mounted is refused at once.
#[test]
fn tools_wait_for_a_daemon_finishing_after_umount() {
    let img = Image::new("finishing", 32 << 20);
    let dir = tempfile::tempdir().unwrap();
    let _d = Detach(dir.path());
    let slow = [("DAXLINK_FAULT_INJECT", "slow-exit")];
    mount_bg(&img.path, dir.path(), &slow);
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    // Mounted: refused at once (no 10 s wait), naming the daemon.
    let t0 = Instant::now();
    let o = run_deadline(command(FSCK, &[&"-y", &img.path]), 30);
    assert_eq!(o.rc, 8, "fsck -y of a mounted image: {}", o.stderr);
    assert!(o.stderr.contains("(daxlink)"), "{}", o.stderr);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // umount && fsck -y: the daemon takes 3 s to finish; fsck waits for it.
    assert!(umount_retrying(dir.path()));
    let o = run_deadline(command(FSCK, &[&"-y", &img.path]), 30);
    assert_eq!(o.rc, 0, "fsck -y after umount: {}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("waiting for") && o.stderr.contains("(daxlink) to finish with"),
        "{}",
        o.stderr
    );
    // umount && mount, and umount && mkfs.
    mount_bg(&img.path, dir.path(), &slow);
    assert!(umount_retrying(dir.path()));
    mount_bg(&img.path, dir.path(), &slow);
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"data");
    assert!(umount_retrying(dir.path()));
    let o = run_deadline(command(mkfs_bin(), &[&"-f", &"-q", &img.path]), 30);
    assert_eq!(o.rc, 0, "mkfs after umount: {}", o.stderr);
    fsck_clean(&img.path);
}

/// `umount && fsck`, `umount && mount` and `umount && mkfs`, 50 times in a
/// row, each right after files were written, unlinked and closed: umount is
/// never refused as busy and the image is free for the next tool.
#[test]
fn umount_then_fsck_mount_or_mkfs_50_times() {
    let img = Image::new("cycle50", 32 << 20);
    let dir = tempfile::tempdir().unwrap();
    let _d = Detach(dir.path());
    let work = format!(
        "import os\n\
         d = '{}'\n\
         fs = [open(os.path.join(d, 'f%d' % i), 'w') for i in range(20)]\n\
         for f in fs: f.write('x' * 5000)\n\
         for i in range(0, 20, 2): os.unlink(os.path.join(d, 'f%d' % i))\n\
         for f in fs: f.close()\n",
        dir.path().display()
    );
    let mut busy = Vec::new();
    for i in 0..50 {
        mount_bg(&img.path, dir.path(), &[]);
        let o = run_deadline(command("python3", &[&"-c", &work]), 60);
        assert_eq!(o.rc, 0, "{}", o.stderr);
        let o = run_deadline(command("umount", &[&dir.path()]), 30);
        if o.rc != 0 {
            busy.push(format!("round {i}: {}", o.stderr.trim()));
            assert!(umount_retrying(dir.path()), "round {i}: busy for 10 s");
        }
        let o = match i % 3 {
            0 => run_deadline(command(FSCK, &[&"-y", &img.path]), 60),
            1 => continue, // the next round mounts at once
            _ => run_deadline(command(mkfs_bin(), &[&"-f", &"-q", &img.path]), 60),
        };
        assert_eq!(o.rc, 0, "round {i}: {}{}", o.stdout, o.stderr);
    }
    assert!(busy.is_empty(), "umount refused as busy: {busy:?}");
    fsck_clean(&img.path);
}
