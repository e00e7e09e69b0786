//! Shared harness for tests that mount daxlink for real.
//!
//! Every mount is owned by a [`Mounted`] guard that unmounts (with a timeout,
//! lazily if needed) and reaps the daemon when dropped, even on test failure.
#![allow(dead_code)]

pub mod direct;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const DAXLINK: &str = env!("CARGO_BIN_EXE_daxlink");
pub const FSCK: &str = env!("CARGO_BIN_EXE_fsck-daxlink");

/// mkfs-daxlink, built beside daxlink (`cargo build --workspace`).
pub fn mkfs_bin() -> PathBuf {
    Path::new(DAXLINK).parent().unwrap().join("mkfs-daxlink")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A scratch image on /dev/shm, removed on drop.
pub struct Image {
    pub path: PathBuf,
}

impl Image {
    pub fn new(tag: &str, size: u64) -> Image {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(format!(
            "/dev/shm/daxlink-test-{}-{}-{}.img",
            tag,
            std::process::id(),
            n
        ));
        let _ = std::fs::remove_file(&path);
        daxlink::tools::mkfs::mkfs_path(&path, Some(size), false, &Default::default())
            .expect("mkfs");
        Image { path }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `dir` is a mount point in the calling thread's mount namespace
/// (thread-self: a test may have a namespace of its own, see
/// `private_mount_namespace`).
pub fn is_mounted(dir: &Path) -> bool {
    let m = std::fs::read("/proc/thread-self/mountinfo").unwrap_or_default();
    let needle = dir.as_os_str().as_bytes();
    m.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| mp == needle)
    })
}

/// Give the calling thread (a test's own) a private copy of the mount
/// namespace: what it mounts afterwards, and every process it starts, is
/// invisible to the rest of the machine, so nobody else's `df` or file
/// manager sends requests to its mounts. Mounted's guards unmount on the
/// same thread.
pub fn private_mount_namespace() {
    // SAFETY: unshare and mount take no pointers but the NUL-terminated
    // literal; CLONE_NEWNS affects only this thread (it unshares CLONE_FS).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNS): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above; "/" is a NUL-terminated literal.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "making / private: {}",
        std::io::Error::last_os_error()
    );
}

pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    child: Option<Child>,
}

impl Mounted {
    /// Mount in the foreground (a child process we can reap) and wait until live.
    pub fn new(image: &Path, opts: &str) -> Mounted {
        Self::try_new(image, opts).expect("mount")
    }

    pub fn try_new(image: &Path, opts: &str) -> Result<Mounted, String> {
        Self::spawn(image, opts, &[], None)
    }

    /// `new`, with variables set in the daemon's environment (test hooks).
    pub fn with_env(image: &Path, opts: &str, env: &[(&str, &str)]) -> Mounted {
        Self::spawn(image, opts, env, None).expect("mount")
    }

    /// As [`Mounted::try_new`], with the daemon's stderr written to `log`
    /// (for tests of what mount prints) instead of a pipe.
    pub fn try_new_logging(
        image: &Path,
        opts: &str,
        log: Option<&Path>,
    ) -> Result<Mounted, String> {
        Self::spawn(image, opts, &[], log)
    }

    /// `with_env` and `try_new_logging` at once (a test hook that logs).
    pub fn with_env_logging(
        image: &Path,
        opts: &str,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Mounted, String> {
        Self::spawn(image, opts, env, Some(log))
    }

    fn spawn(
        image: &Path,
        opts: &str,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Result<Mounted, String> {
        let dir = tempfile::Builder::new()
            .prefix("daxlink-mnt")
            .tempdir()
            .unwrap();
        let mut cmd = Command::new(DAXLINK);
        cmd.arg("mount").arg(image).arg(dir.path()).arg("-f");
        cmd.envs(env.iter().copied());
        // DAXLINK_TEST_OPTS: options added to every mount, so that a suite
        // can run again over another transport (scripts/test.sh does so
        // with transport=uring).
        let extra = std::env::var("DAXLINK_TEST_OPTS").unwrap_or_default();
        let opts = [opts, extra.as_str()]
            .iter()
            .filter(|o| !o.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(",");
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts);
        }
        cmd.stdout(Stdio::null());
        match log {
            Some(l) => cmd.stderr(std::fs::File::create(l).map_err(|e| e.to_string())?),
            None => cmd.stderr(Stdio::piped()),
        };
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        while !is_mounted(dir.path()) {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                if let Some(l) = log {
                    err = std::fs::read_to_string(l).unwrap_or_default();
                }
                return Err(format!("daemon exited ({st}) before mounting: {err}"));
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err("mount timed out".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Mounted {
            dir,
            image: image.to_path_buf(),
            child: Some(child),
        })
    }

    /// The daemon's process id (None once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Unmount, wait for the daemon to finish (clean flag written).
    pub fn unmount(mut self) {
        self.do_unmount();
    }

    fn do_unmount(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if is_mounted(self.dir.path()) {
            let ok = umount_retrying(self.dir.path());
            if !ok {
                eprintln!(
                    "{}: still busy after 10 s of umount; detaching it (umount -l)",
                    self.dir.path().display()
                );
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status();
            }
        }
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if t0.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }

    /// Kill the daemon (a crash), detach the mount, reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        let t0 = Instant::now();
        while is_mounted(self.dir.path()) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Unmount, require fsck clean, mount again.
    pub fn cycle(self, opts: &str) -> Mounted {
        let image = self.image.clone();
        self.unmount();
        fsck_clean(&image);
        Mounted::new(&image, opts)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.do_unmount();
    }
}

/// Run `fsck-daxlink -n` and require exit 0.
pub fn fsck_clean(image: &Path) {
    let out = Command::new(FSCK).arg("-n").arg(image).output().unwrap();
    assert!(
        out.status.code() == Some(0),
        "fsck -n not clean ({:?}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Run a shell command as another user (util-linux setpriv), returning its status code.
pub fn run_as(uid: u32, gid: u32, script: &str) -> (i32, String) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .output()
        .expect("setpriv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tmpfs mounted for comparison (what daxlink should do is what tmpfs
/// does); unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new() -> Tmpfs {
        Tmpfs::with("size=1g")
    }

    /// With mount options (`noatime`, `strictatime`, ...).
    pub fn with(opts: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("tmpfs-ref")
            .tempdir()
            .unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs -o {opts}");
        Tmpfs { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A deterministic byte pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a command did.
#[derive(Debug)]
pub struct Out {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` to its end, failing the test if it takes more than `secs`
/// (the child is killed first, so a hang fails the test, not CI).
pub fn run_deadline(mut cmd: Command, secs: u64) -> Out {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command hung for {secs} s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        rc: status.code().unwrap_or(-1),
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    }
}

/// Run `daxlink ARGS...` (within 300 s, `run_deadline`) and assert that it
/// succeeded, showing its stderr (and stdout) when it did not. Arguments
/// mix strings and paths: `daxlink(&[&"reflink", &src, &dst])`.
pub fn daxlink(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    let mut c = Command::new(DAXLINK);
    c.args(args.iter().map(|a| a.as_ref()));
    let o = run_deadline(c, 300);
    assert_eq!(
        o.rc,
        0,
        "daxlink {:?} failed\nstderr: {}\nstdout: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        o.stderr,
        o.stdout
    );
    o
}

/// `umount DIR`, again every 50 ms for up to 10 s while it fails: right
/// after files on a FUSE mount are closed, the kernel's asynchronous RELEASE
/// may still hold the mount for a moment (umount says "target is busy").
pub fn umount_retrying(dir: &Path) -> bool {
    let t0 = Instant::now();
    loop {
        let ok = Command::new("timeout")
            .args(["20", "umount"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok || !is_mounted(dir) {
            return true;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fail (never skip) when a tool a test needs is not installed; the
/// suite's scripts/test.sh installs every one with apt-get.
pub fn need(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{tool} is needed by this test (scripts/test.sh installs it with apt-get)"
    );
}

/// The direct-access client library `daxlink run` preloads, next to the
/// daxlink binary under test.
pub fn shim() -> PathBuf {
    let p = Path::new(DAXLINK)
        .parent()
        .unwrap()
        .join("libdaxlink_client.so");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --release --workspace`",
        p.display()
    );
    p
}
