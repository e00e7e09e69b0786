//! Images and locks that no other user can touch: mkfs makes images 0600 and
//! refuses links and other users' files; as root the single-writer lock is a
//! lock file no other user can open, so nobody's `flock` on an image blocks
//! no mount, `fsck -y` or mkfs of root's; mount refuses an image others can
//! write and warns when they can read it. "nobody" is uid/gid 65534 through
//! setpriv; a missing tool fails the test.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const NOBODY: u32 = 65534;

fn setpriv_as(uid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups");
    c
}

fn setpriv_nobody() -> Command {
    setpriv_as(NOBODY)
}

/// The mkfs-daxlink binary of this build (the workspace's other package).
fn mkfs_bin() -> PathBuf {
    let p = Path::new(DAXLINK).parent().unwrap().join("mkfs-daxlink");
    assert!(
        p.exists(),
        "mkfs-daxlink is not built next to daxlink: run cargo build --workspace"
    );
    p
}

/// `timeout 60 PROG ARGS...`.
fn run(prog: &Path, args: &[&str], path: &Path) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(prog)
        .args(args)
        .arg(path)
        .output()
        .expect("timeout (coreutils)")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// A path in /dev/shm (world-writable, sticky) for this test, removed on drop.
struct ShmPath(PathBuf);

impl ShmPath {
    fn new(tag: &str) -> ShmPath {
        let p = PathBuf::from(format!(
            "/dev/shm/daxlink-hostile-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_file(&p);
        ShmPath(p)
    }
}

impl Drop for ShmPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `flock` on a file, run as nobody (or another user): `flock OPTS FILE -c 'read x'`, so that
/// it holds the lock until we close its stdin (or kill it).
struct NobodyFlock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl NobodyFlock {
    fn start(path: &Path, opts: &[&str]) -> NobodyFlock {
        Self::start_as(NOBODY, path, opts)
    }

    fn start_as(uid: u32, path: &Path, opts: &[&str]) -> NobodyFlock {
        let mut child = setpriv_as(uid)
            .arg("flock")
            .args(opts)
            .arg(path)
            .args(["-c", "read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv and flock (util-linux)");
        let stdin = child.stdin.take();
        NobodyFlock { child, stdin }
    }

    /// Does nobody's flock hold a lock on `path` now (per /proc/locks)?
    fn holds(&self, path: &Path) -> bool {
        let md = fs::metadata(path).unwrap();
        let key = format!(
            "{:02x}:{:02x}:{}",
            libc::major(md.dev()),
            libc::minor(md.dev()),
            md.ino()
        );
        let pid = self.child.id().to_string();
        fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .any(|f| f.len() >= 6 && f[1] == "FLOCK" && f[4] == pid && f[5] == key)
    }

    /// Wait up to `limit` for nobody's flock to hold the lock on `path`.
    fn wait_holding(&mut self, path: &Path, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.holds(path) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Its exit status and stderr, if it has ended within `limit`.
    fn ended(&mut self, limit: Duration) -> Option<(i32, String)> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Some((st.code().unwrap_or(-1), err));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NobodyFlock {
    fn drop(&mut self) {
        // EOF ends `read`, the shell and flock; kill in case it waits for the lock.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file with a secret written through a mount, then unmounted.
fn image_with_secret(tag: &str) -> Image {
    let img = Image::new(tag, 16 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::write(m.path("secret"), b"SECRET-hostile-images-1234567890").unwrap();
    chmod(&m.path("secret"), 0o600);
    m.unmount();
    img
}

/// Root's read-write mount, `fsck -y` and `mkfs --force` all go through.
fn root_tools_not_blocked(img: &Path, what: &str) {
    let m = Mounted::try_new(img, "")
        .unwrap_or_else(|e| panic!("{what}: root's rw mount was blocked: {e}"));
    fs::write(m.path("root-was-here"), b"ok").unwrap();
    m.unmount();
    let out = run(Path::new(FSCK), &["-y"], img);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: fsck -y: {}",
        stderr(&out)
    );
    let out = run(&mkfs_bin(), &["-q", "--force"], img);
    assert_eq!(out.status.code(), Some(0), "{what}: mkfs: {}", stderr(&out));
}

#[test]
fn mkfs_makes_images_only_their_owner_can_open() {
    // Through the library (as the tests' images) and the binary.
    let img = Image::new("mode", 16 << 20);
    assert_eq!(mode(&img.path), 0o600);
    let p = ShmPath::new("mkfs-bin");
    let out = run(&mkfs_bin(), &["-q", "--size", "16M"], &p.0);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode(&p.0), 0o600);
    assert_eq!(stderr(&out), "", "no warning for a new image in /dev/shm");
}

#[test]
fn nobody_cannot_read_the_image() {
    let img = image_with_secret("read");
    let bytes = fs::read(&img.path).unwrap();
    assert!(
        bytes.windows(6).any(|w| w == b"SECRET"),
        "the secret is in the image (root reads it)"
    );
    let (rc, err) = run_as(
        NOBODY,
        NOBODY,
        &format!("grep -c SECRET {}", img.path.display()),
    );
    assert_eq!(rc, 2, "nobody read the image: grep exit {rc} {err}");
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn nobodys_flock_cannot_block_root() {
    let img = image_with_secret("flock");
    // The 0600 image: nobody cannot even open it.
    let mut f = NobodyFlock::start(&img.path, &["-n"]);
    let (rc, err) = f
        .ended(Duration::from_secs(10))
        .expect("nobody's flock of a 0600 image should fail at once");
    assert_ne!(rc, 0, "nobody took a flock on a 0600 image");
    assert!(err.contains("Permission denied"), "{err}");
    root_tools_not_blocked(&img.path, "0600 image");

    // An image made readable by hand: nobody gets a flock on it, and it
    // still blocks nothing of root's.
    chmod(&img.path, 0o644);
    let mut f = NobodyFlock::start(&img.path, &["-n"]);
    assert!(
        f.wait_holding(&img.path, Duration::from_secs(10)),
        "nobody could not flock a 0644 image: {:?}",
        f.ended(Duration::ZERO)
    );
    root_tools_not_blocked(&img.path, "0644 image flocked by nobody");
    let out = run(Path::new(FSCK), &["-n"], &img.path);
    assert_eq!(out.status.code(), Some(0), "fsck -n: {}", stderr(&out));
    let r = Mounted::new(&img.path, "ro");
    r.unmount();
    assert!(f.holds(&img.path), "nobody's flock is still there");
    drop(f);

    // Nobody waiting for the lock gets it the moment root unmounts, and
    // still blocks root's next mount nothing.
    let m = Mounted::new(&img.path, "");
    let mut f = NobodyFlock::start(&img.path, &["-w", "60"]);
    std::thread::sleep(Duration::from_millis(300));
    m.unmount();
    assert!(
        f.wait_holding(&img.path, Duration::from_secs(10)),
        "nobody's waiting flock did not get the lock after unmount: {:?}",
        f.ended(Duration::ZERO)
    );
    let m = Mounted::try_new(&img.path, "")
        .unwrap_or_else(|e| panic!("root's mount after nobody grabbed the lock: {e}"));
    assert_eq!(fs::read(m.path("root-was-here")).ok(), None, "mkfs ran");
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn mkfs_refuses_a_symlink_and_a_file_of_nobody() {
    let mkfs = mkfs_bin();
    // A link someone put where root will make an image, pointing at a file
    // of root's.
    let victim = ShmPath::new("victim");
    fs::write(&victim.0, b"precious").unwrap();
    let link = ShmPath::new("link");
    std::os::unix::fs::symlink(&victim.0, &link.0).unwrap();
    for args in [
        &["-q", "--size", "16M"][..],
        &["-q", "--force", "--size", "16M"],
    ] {
        let out = run(&mkfs, args, &link.0);
        assert_eq!(out.status.code(), Some(1), "mkfs {args:?} of a symlink");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&link.0.display().to_string()), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim.0).unwrap(), b"precious");
    }
    // A dangling link: its target is not created.
    let target = ShmPath::new("nowhere");
    let dangling = ShmPath::new("dangling");
    std::os::unix::fs::symlink(&target.0, &dangling.0).unwrap();
    let out = run(&mkfs, &["-q", "--size", "16M"], &dangling.0);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!target.0.exists());

    // A file nobody made first, where root will make an image.
    let theirs = ShmPath::new("theirs");
    let st = setpriv_nobody()
        .arg("touch")
        .arg(&theirs.0)
        .status()
        .expect("setpriv");
    assert!(st.success());
    let out = run(&mkfs, &["-q", "--size", "16M"], &theirs.0);
    assert_eq!(out.status.code(), Some(1), "mkfs of nobody's file");
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&theirs.0.display().to_string()), "{err}");
    let md = fs::metadata(&theirs.0).unwrap();
    assert_eq!((md.uid(), md.len()), (NOBODY, 0), "nobody's file untouched");
}

/// The foreground mount (under the `Mounted` guard) must fail with exit 32
/// and exactly one line naming `img` and containing `want`.
fn mount_refused(img: &Path, opts: &str, want: &str) {
    match Mounted::try_new(img, opts) {
        Ok(m) => {
            m.unmount();
            panic!("mount -o '{opts}' of {} succeeded", img.display());
        }
        Err(e) => {
            assert!(e.contains("exit status: 32"), "{e}");
            let err = e.split_once("before mounting: ").unwrap().1;
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert!(err.contains(&img.display().to_string()), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }
}

#[test]
fn mount_and_fsck_refuse_an_image_others_can_write() {
    let img = Image::new("writable", 16 << 20);
    let chmod_line = format!("chmod go-w {}", img.path.display());
    for m in [0o666, 0o620, 0o602] {
        chmod(&img.path, m);
        mount_refused(&img.path, "", &chmod_line);
        mount_refused(&img.path, "ro", &chmod_line);
        let out = run(Path::new(FSCK), &["-y"], &img.path);
        assert_eq!(out.status.code(), Some(8), "fsck -y of a {m:o} image");
        let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&chmod_line), "{err}");
    }
    // Read-only checking is still allowed; after the chmod all is well.
    let out = run(Path::new(FSCK), &["-n"], &img.path);
    assert_eq!(out.status.code(), Some(0), "fsck -n: {}", stderr(&out));
    chmod(&img.path, 0o600);
    Mounted::new(&img.path, "").unmount();
    fsck_clean(&img.path);
}

#[test]
fn mount_warns_about_an_image_others_can_read() {
    let img = Image::new("readable", 16 << 20);
    let log = ShmPath::new("mount-log");
    for (m, warned) in [(0o644, true), (0o640, true), (0o600, false)] {
        chmod(&img.path, m);
        let mnt = Mounted::try_new_logging(&img.path, "", Some(&log.0))
            .unwrap_or_else(|e| panic!("mount of a {m:o} image: {e}"));
        // The warning comes once the mount is live, maybe after it shows
        // in mountinfo: read the log when the daemon has ended.
        mnt.unmount();
        let err = fs::read_to_string(&log.0).unwrap();
        if warned {
            assert_eq!(err.trim().lines().count(), 1, "{m:o}: {err}");
            assert!(err.contains(&img.path.display().to_string()), "{err}");
            assert!(err.contains("warning"), "{err}");
        } else {
            assert_eq!(err.trim(), "", "{m:o}");
        }
    }
}

#[test]
fn nobody_cannot_reach_roots_lock_files() {
    let img = Image::new("lockdir", 16 << 20);
    let m = Mounted::new(&img.path, "");
    let dir = Path::new("/run/daxlink");
    let dmd = fs::symlink_metadata(dir).expect("root's lock directory");
    assert!(dmd.is_dir());
    assert_eq!((dmd.uid(), dmd.mode() & 0o7777), (0, 0o700));
    let md = fs::metadata(&img.path).unwrap();
    let name = format!(
        "image-{}:{}-{}",
        libc::major(md.dev()),
        libc::minor(md.dev()),
        md.ino()
    );
    let lock = dir.join(&name);
    let lmd = fs::symlink_metadata(&lock).expect("the image's lock file");
    assert_eq!((lmd.uid(), lmd.mode() & 0o7777), (0, 0o600));
    let (rc, err) = run_as(NOBODY, NOBODY, &format!("flock -n {} true", lock.display()));
    assert_ne!(rc, 0, "nobody flocked root's lock file");
    assert!(err.contains("Permission denied"), "{err}");
    // The holder is the daemon, named as before.
    let out = run(Path::new(FSCK), &["-y"], &img.path);
    assert_eq!(out.status.code(), Some(8));
    let pid = m.pid().unwrap();
    assert!(
        stderr(&out).contains(&format!("in use by pid {pid} (daxlink)")),
        "{}",
        stderr(&out)
    );
    m.unmount();
    fsck_clean(&img.path);
}
