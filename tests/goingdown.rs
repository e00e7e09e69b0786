//! FS_IOC_SHUTDOWN (XFS_IOC_GOINGDOWN, `xfs_io -x -c shutdown`): the kernel
//! forwards it to FUSE; from then on every request fails with EIO and nothing
//! reaches the media, as if the power had gone. umount works, the next mount
//! recovers, fsck is clean and everything that completed before is there.
//! Unprivileged callers get EPERM and the filesystem goes on. A seeded random
//! workload is shut down at a random moment from another thread.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn superblock_clean(img: &Path) -> bool {
    let b = fs::read(img).unwrap();
    daxlink::format::Superblock::decode(&b[..512], b.len() as u64)
        .unwrap()
        .clean
}

/// FS_IOC_SHUTDOWN with `flags` on `path`, from this process.
fn goingdown(path: &Path, flags: u32) -> std::io::Result<()> {
    let f = fs::File::open(path)?;
    let mut b = flags.to_ne_bytes();
    daxlink::fuse::ioctl::call(&f, daxlink::fuse::ioctl::Cmd::GOINGDOWN, &mut b).map(|_| ())
}

fn xfs_io_shutdown(path: &Path, force: bool) -> (i32, String) {
    let cmd = if force { "shutdown -f" } else { "shutdown" };
    let out = Command::new("timeout")
        .args(["20", "xfs_io", "-r", "-x", "-c", cmd])
        .arg(path)
        .output()
        .expect("xfs_io (package xfsprogs)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

const EIO: i32 = libc::EIO;

#[test]
fn after_shutdown_everything_fails_with_eio_and_the_next_mount_recovers() {
    // 0 DEFAULT (direct ioctl), 1 LOGFLUSH (xfs_io shutdown -f), 2 NOLOGFLUSH (xfs_io shutdown).
    for mode in 0..3u32 {
        let img = Image::new("goingdown", 64 << 20);
        let m = Mounted::new(&img.path, "");
        let data = pattern(u64::from(mode), 200_000);
        fs::write(m.path("synced"), &data).unwrap();
        fs::File::open(m.path("synced"))
            .unwrap()
            .sync_all()
            .unwrap();
        fs::create_dir(m.path("dir")).unwrap();
        fs::write(m.path("dir/small"), b"small").unwrap();
        let mut held = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path("dir/small"))
            .unwrap();
        match mode {
            0 => goingdown(m.root(), 0).unwrap(),
            _ => {
                let (rc, out) = xfs_io_shutdown(&m.path("synced"), mode == 1);
                assert_eq!(rc, 0, "xfs_io: {out}");
                assert!(out.trim().is_empty(), "xfs_io: {out}");
            }
        }
        let mut buf = [0u8; 8];
        let results = [
            ("stat", errno_of(fs::metadata(m.path("synced")))),
            ("stat-dir", errno_of(fs::metadata(m.path("dir")))),
            ("open", errno_of(fs::File::open(m.path("synced")))),
            ("read-held", errno_of(held.read_at(&mut buf, 0))),
            ("write-held", errno_of(held.write_at(b"x", 0))),
            ("fsync-held", errno_of(held.sync_all())),
            ("create", errno_of(fs::File::create(m.path("new")))),
            ("readdir", errno_of(fs::read_dir(m.root()))),
            ("unlink", errno_of(fs::remove_file(m.path("dir/small")))),
            ("mkdir", errno_of(fs::create_dir(m.path("d2")))),
            (
                "rename",
                errno_of(fs::rename(m.path("synced"), m.path("s2"))),
            ),
            ("statfs", {
                let out = Command::new("stat")
                    .arg("-f")
                    .arg(m.root())
                    .output()
                    .unwrap();
                if out.status.success() {
                    0
                } else {
                    EIO
                }
            }),
        ];
        for (what, e) in results {
            assert_eq!(e, EIO, "mode {mode}: {what} after shutdown gave errno {e}");
        }
        // Read on the held descriptor again (page cache dropped).
        let mut s = String::new();
        assert_eq!(errno_of(held.read_to_string(&mut s)), EIO);
        let _ = held.flush();
        drop(held);
        m.unmount(); // umount works, and writes no clean flag
        assert!(
            !superblock_clean(&img.path),
            "mode {mode}: marked clean after shutdown"
        );
        fsck_clean(&img.path);
        let m = Mounted::new(&img.path, "");
        assert_eq!(fs::read(m.path("synced")).unwrap(), data, "mode {mode}");
        assert_eq!(fs::read(m.path("dir/small")).unwrap(), b"small");
        fs::write(m.path("later"), b"usable again").unwrap();
        m.unmount();
        fsck_clean(&img.path);
    }
}

#[test]
fn unprivileged_shutdown_is_refused() {
    let img = Image::new("goingdown-eperm", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::write(m.path("f"), b"data").unwrap();
    fs::set_permissions(
        m.path("f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    for cmd in ["shutdown", "shutdown -f"] {
        let (rc, err) = run_as(
            65534,
            65534,
            &format!("xfs_io -r -x -c '{cmd}' {}", m.path("f").display()),
        );
        // xfs_io prints the error and exits 1.
        let _ = rc;
        assert!(err.contains("Operation not permitted"), "{cmd}: {err}");
    }
    // The filesystem goes on.
    fs::write(m.path("g"), b"after").unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"data");
    m.unmount();
    assert!(superblock_clean(&img.path));
    fsck_clean(&img.path);
}

/// xorshift64*
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: usize = 6;

#[derive(Default)]
struct Model {
    /// Content of each name now (None: absent), after every operation that returned.
    now: BTreeMap<String, Vec<u8>>,
    /// Names whose last change was followed by an fsync that returned.
    synced: BTreeSet<String>,
    /// Names touched by an operation that failed (it may or may not have happened).
    uncertain: BTreeSet<String>,
    ops: usize,
}

/// One random operation; Err(errno) if it failed. `touched` gets the names it changes.
fn random_op(root: &Path, rng: &mut Rng, m: &Model, touched: &mut Vec<String>) -> Result<Op, i32> {
    let name = |i: u64| format!("f{i}");
    let a = name(rng.below(NAMES as u64));
    let exists = m.now.contains_key(&a);
    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    touched.push(a.clone());
    match rng.below(10) {
        0..=2 => {
            let off = rng.below(40_000);
            let len = 1 + rng.below(20_000) as usize;
            let data = pattern(rng.next(), len);
            let f = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(root.join(&a))
                .map_err(io)?;
            f.write_all_at(&data, off).map_err(io)?;
            Ok(Op::Write(a, off, data))
        }
        3..=5 => {
            if !exists {
                return Ok(Op::None);
            }
            let f = fs::File::open(root.join(&a)).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(Op::Fsync(a))
        }
        6 => {
            if !exists {
                return Ok(Op::None);
            }
            let size = rng.below(50_000);
            let f = fs::OpenOptions::new()
                .write(true)
                .open(root.join(&a))
                .map_err(io)?;
            f.set_len(size).map_err(io)?;
            Ok(Op::Truncate(a, size))
        }
        7..=8 => {
            let b = name(rng.below(NAMES as u64));
            if !exists || b == a {
                return Ok(Op::None);
            }
            touched.push(b.clone());
            fs::rename(root.join(&a), root.join(&b)).map_err(io)?;
            Ok(Op::Rename(a, b))
        }
        _ => {
            if !exists {
                return Ok(Op::None);
            }
            fs::remove_file(root.join(&a)).map_err(io)?;
            Ok(Op::Unlink(a))
        }
    }
}

enum Op {
    None,
    Write(String, u64, Vec<u8>),
    Fsync(String),
    Truncate(String, u64),
    Rename(String, String),
    Unlink(String),
}

fn apply(m: &mut Model, op: Op) {
    m.ops += 1;
    match op {
        Op::None => {}
        Op::Write(a, off, data) => {
            let v = m.now.entry(a.clone()).or_default();
            let end = off as usize + data.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[off as usize..end].copy_from_slice(&data);
            m.synced.remove(&a);
        }
        Op::Fsync(a) => {
            m.synced.insert(a);
        }
        Op::Truncate(a, size) => {
            m.now.get_mut(&a).unwrap().resize(size as usize, 0);
            m.synced.remove(&a);
        }
        Op::Rename(a, b) => {
            let v = m.now.remove(&a).unwrap();
            m.now.insert(b.clone(), v);
            m.synced.remove(&a);
            m.synced.remove(&b);
        }
        Op::Unlink(a) => {
            m.now.remove(&a);
            m.synced.remove(&a);
        }
    }
}

#[test]
fn random_workload_shut_down_at_a_random_moment() {
    let seed: u64 = std::env::var("DAXLINK_SHUTDOWN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds: u64 = std::env::var("DAXLINK_SHUTDOWN_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    println!("shutdown workload seed {seed} (DAXLINK_SHUTDOWN_SEED replays it), {rounds} rounds");
    for round in 0..rounds {
        let mut rng = Rng(seed.wrapping_add(round).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let img = Image::new("goingdown-rand", 128 << 20);
        let m = Mounted::new(&img.path, "");
        let root = m.root().to_path_buf();
        let model = Arc::new(Mutex::new(Model::default()));
        // A warm-up that always completes, then the racing part.
        let delay = Duration::from_millis(50 + rng.below(400));
        let mode = rng.below(3) as u32;
        let worker = {
            let model = model.clone();
            let root = root.clone();
            let mut wrng = Rng(rng.next() | 1);
            std::thread::spawn(move || {
                let t0 = Instant::now();
                loop {
                    let mut touched = Vec::new();
                    let snapshot = {
                        let g = model.lock().unwrap();
                        Model {
                            now: g.now.clone(),
                            ..Default::default()
                        }
                    };
                    let r = random_op(&root, &mut wrng, &snapshot, &mut touched);
                    let mut g = model.lock().unwrap();
                    match r {
                        Ok(op) => apply(&mut g, op),
                        Err(e) => {
                            assert_eq!(e, EIO, "an operation failed with errno {e} (not EIO)");
                            g.uncertain.extend(touched);
                            return;
                        }
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(60),
                        "the workload never saw the shutdown"
                    );
                }
            })
        };
        std::thread::sleep(delay);
        goingdown(&root, mode).unwrap();
        worker.join().expect("worker");
        let model = Arc::try_unwrap(model).ok().unwrap().into_inner().unwrap();
        m.unmount();
        assert!(!superblock_clean(&img.path));
        println!("round {round}: shut down in mode {mode} after {delay:?}");
        fsck_clean_but_pending_recovery(&img.path, mode);
        let m = Mounted::new(&img.path, "");
        let (mut exact, mut synced) = (0, 0);
        for i in 0..NAMES {
            let n = format!("f{i}");
            if model.uncertain.contains(&n) {
                continue;
            }
            let got = fs::read(m.path(&n)).ok();
            // Every operation is synchronous: what returned is durable, so a
            // file's content is exactly the model's, fsynced or not.
            assert_eq!(
                got.as_ref().map(Vec::len),
                model.now.get(&n).map(Vec::len),
                "seed {seed} round {round}: {n} length"
            );
            assert!(
                got.as_ref() == model.now.get(&n),
                "seed {seed} round {round}: {n} content differs"
            );
            exact += 1;
            synced += model.synced.contains(&n) as usize;
        }
        println!(
            "round {round}: mode {mode}, {} operations, {exact} files checked ({synced} fsynced last), {} uncertain",
            model.ops,
            model.uncertain.len()
        );
        m.unmount();
        fsck_clean(&img.path);
    }
}

/// Files open and unlinked when the filesystem is shut down (a crash): their
/// orphans are on the image, which is not clean.
fn crash_with_open_unlinked_files(img: &Path) {
    let m = Mounted::new(img, "");
    fs::write(m.path("kept"), b"kept").unwrap();
    let mut held = Vec::new();
    for i in 0..20u64 {
        let p = m.path(&format!("u{i}"));
        fs::write(&p, pattern(i, 10_000)).unwrap();
        held.push(fs::File::open(&p).unwrap());
        fs::remove_file(&p).unwrap();
    }
    goingdown(m.root(), 1).unwrap();
    drop(held);
    m.unmount();
    assert!(!superblock_clean(img), "marked clean after shutdown");
}

/// `daxlink mount IMAGE DIR -o remount,OPTS`.
fn remount(img: &Path, dir: &Path, opts: &str) -> Out {
    let mut c = Command::new(DAXLINK);
    c.arg("mount")
        .arg(img)
        .arg(dir)
        .arg("-o")
        .arg(format!("remount,{opts}"));
    run_deadline(c, 30)
}

/// As ext4 and XFS (fstests generic/417): after a crash with open-unlinked
/// files, a read-only mount recovers the image (journal and orphans) before
/// it serves read-only; then a ro mount, a ro mount remounted rw, and a rw
/// mount each end with fsck -n clean.
#[test]
fn ro_ro_to_rw_and_rw_mounts_after_a_crash_end_fsck_clean() {
    let img = Image::new("ro-recovery", 64 << 20);
    // ro
    crash_with_open_unlinked_files(&img.path);
    let m = Mounted::new(&img.path, "ro");
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"kept");
    assert_eq!(
        errno_of(fs::write(m.path("new"), b"x")),
        libc::EROFS,
        "a write on the ro mount"
    );
    assert!(!m.path("u0").exists());
    m.unmount();
    assert!(superblock_clean(&img.path), "ro mount left it unrecovered");
    fsck_clean(&img.path);
    // ro, then remount rw
    crash_with_open_unlinked_files(&img.path);
    let m = Mounted::new(&img.path, "ro");
    let o = remount(&img.path, m.root(), "rw");
    assert_eq!(o.rc, 0, "remount,rw: {}", o.stderr);
    fs::write(m.path("after-rw"), b"rw again").unwrap();
    m.unmount();
    fsck_clean(&img.path);
    // rw
    crash_with_open_unlinked_files(&img.path);
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("after-rw")).unwrap(), b"rw again");
    m.unmount();
    fsck_clean(&img.path);
}

/// fsck -n's findings (its lines that start with `[`) and exit code.
fn fsck_findings(image: &Path) -> (Option<i32>, Vec<String>) {
    let out = Command::new(FSCK).arg("-n").arg(image).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = text
        .lines()
        .filter(|l| l.starts_with('['))
        .map(String::from);
    (out.status.code(), lines.collect())
}

/// `-o ro,norecovery` (and ext4's `noload`), as on XFS: the image a crash
/// left is served as it is and nothing of it changes (its bytes, fsck -n's
/// findings); no write, fstrim or remount,rw gets through; without `ro`
/// the mount is refused in one line; the next ordinary mount recovers it.
#[test]
fn norecovery_mounts_look_without_changing_anything() {
    need("fstrim");
    let img = Image::new("norecovery", 64 << 20);
    crash_with_open_unlinked_files(&img.path);
    let bytes = fs::read(&img.path).unwrap();
    let (rc, findings) = fsck_findings(&img.path);
    assert_eq!(rc, Some(4), "{findings:?}");
    assert!(
        findings.iter().any(|l| l.starts_with("[orphan-reclaim]")),
        "the crash left no orphans: {findings:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(DAXLINK);
    c.arg("mount")
        .arg(&img.path)
        .arg(dir.path())
        .args(["-o", "norecovery"]);
    let o = run_deadline(c, 30);
    assert_eq!(o.rc, 32, "norecovery without ro: {o:?}");
    assert!(o.stderr.contains("norecovery needs ro"), "{}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    assert!(!is_mounted(dir.path()));
    for opts in ["ro,norecovery", "ro,noload"] {
        let m = Mounted::new(&img.path, opts);
        assert_eq!(fs::read(m.path("kept")).unwrap(), b"kept", "{opts}");
        assert!(!m.path("u0").exists(), "{opts}");
        assert_eq!(
            errno_of(fs::write(m.path("new"), b"x")),
            libc::EROFS,
            "{opts}: a write"
        );
        let mut c = Command::new("fstrim");
        c.arg(m.root());
        let o = run_deadline(c, 30);
        assert_ne!(o.rc, 0, "{opts}: fstrim: {o:?}");
        let o = remount(&img.path, m.root(), "rw");
        assert_eq!(o.rc, 32, "{opts}: remount,rw: {o:?}");
        assert_eq!(
            errno_of(fs::write(m.path("new"), b"x")),
            libc::EROFS,
            "{opts}: a write after remount,rw"
        );
        m.unmount();
        assert!(
            fs::read(&img.path).unwrap() == bytes,
            "{opts} changed the image"
        );
        assert_eq!(fsck_findings(&img.path), (rc, findings.clone()), "{opts}");
    }
    // An ordinary mount recovers it.
    let m = Mounted::new(&img.path, "ro");
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"kept");
    m.unmount();
    fsck_clean(&img.path);
}

/// `fsck -n` of an image a shutdown left: clean, or its only findings are
/// the recovery the next mount does, as after a crash:
/// - orphan records (a file the workload held open when its unlink was the
///   last name: its RELEASE came after the shutdown, so nothing could
///   reclaim it; seed 1796625799944903985 left one);
/// - after a shutdown that cuts where it stands (mode 2, NOLOGFLUSH), a
///   committed transaction not applied in place yet (the cut fell between
///   commit and apply; seed 1796645540217317683 left one). fsck checks the
///   rest of the image with it replayed in its view. Modes 0 and 1 wait for
///   the transaction in progress, so there it is a finding.
fn fsck_clean_but_pending_recovery(image: &std::path::Path, mode: u32) {
    let (rc, findings) = fsck_findings(image);
    let only_recovery = !findings.is_empty()
        && findings.iter().all(|l| {
            l.starts_with("[orphan-reclaim]") || (mode == 2 && l.starts_with("[journal-replay]"))
        });
    assert!(
        rc == Some(0) || (rc == Some(4) && only_recovery),
        "fsck -n of the shut-down image (exit {rc:?}, mode {mode}): {findings:#?}"
    );
}
