//! The image fuzzer. Base images made through the core API (many files,
//! directories, hard links, symlinks, xattrs and ACLs, reflinked clones,
//! sparse files, a file of many extents, orphans of each kind, a journal
//! transaction awaiting replay) are corrupted, one to four times per case
//! (`mutate.rs`: bit flips, scribbles, extreme field values with valid
//! checksums, zeroed blocks, truncation), and each case then runs, in process:
//!
//! 1. `fsck -n`, then a `norecovery` mount (read-only, nothing replayed or
//!    reclaimed), the same walk and writes as below, unmount: the image must
//!    not change by a byte;
//! 2. mount, a full walk (readdir of every directory, lookup and stat of every
//!    entry, read of every file, readlink, listxattr and getxattr), a few
//!    writes (create, write, truncate, clone, rename, unlink, xattr, mkdir,
//!    rmdir), unmount. Errors are allowed: the image is damaged;
//! 3. `fsck -y`, then `fsck -n`.
//!
//! A case fails on a panic (in fsck, mount or any operation), a hang (each
//! case runs in a thread with a deadline), a norecovery mount that writes,
//! `fsck -n` clean but mount refusing,
//! a clean filesystem left unclean by ordinary use, or a repair that does not
//! converge: after `fsck -y` exits 0 or 1, `fsck -n` must be clean and the
//! filesystem must mount and stay clean through use; `fsck -y` may instead
//! exit 8 with a plain reason. A `fsck -y` exit 4 (findings left) fails too.
//! All cases run; the failures are listed at the end with their seed and
//! case, and the outcomes are counted by class.
//!
//! `FUZZ_SEED` (default below) and `FUZZ_CASES` (default 300) choose the run,
//! `FUZZ_CASE=N` runs case N alone, `FUZZ_VERBOSE=1` prints every case.
//! The long run (docs/TESTING.md, "Image fuzzer"):
//! `FUZZ_CASES=10000 cargo test --release --test fuzz -- --nocapture`.

mod images;
mod mutate;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use daxlink::format::ROOT_INO;
use daxlink::fs::{Cred, Fs, FsOptions};
use daxlink::tools::fsck::{self, Report};

use images::{bytes_of, into_media, mem, Base, BS};
use mutate::Rng;

/// The seed CI runs (fixed, so every run checks the same cases).
const DEFAULT_SEED: u64 = 0xDA7_F022;
const DEFAULT_CASES: u64 = 300;
/// A case taking longer than this is a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// What happened in one case: outcome classes, or the reason it failed.
type CaseResult = Result<Vec<String>, String>;

fn internal(r: &Report) -> bool {
    r.error.as_deref().is_some_and(|e| e.contains("internal"))
}

fn fsck_class(step: &str, r: &Report) -> String {
    match r.exit_code() {
        8 => {
            let e = r.error.as_deref().unwrap_or("");
            let why = if e.contains("truncated") {
                "image truncated"
            } else if e.contains("read-only-compatible") {
                "unknown ro_compat features"
            } else if e.contains("not a daxlink filesystem") {
                "no superblock, no roots block, no journal header"
            } else if e.contains("cannot recover the geometry") {
                "no superblock, geometry not found"
            } else if e.contains("no valid superblock") {
                "no valid superblock, other"
            } else {
                "other"
            };
            format!("{step}: exit 8 ({why})")
        }
        c => format!("{step}: exit {c}"),
    }
}

/// Walk everything and make a few changes. Errors are fine; the returned
/// list names the operations that failed.
fn exercise(fs: &Fs, tag: &str) -> Vec<String> {
    let c = Cred::ROOT;
    let failed = std::cell::RefCell::new(Vec::new());
    let ok = |r: Result<(), String>| {
        if let Err(e) = r {
            failed.borrow_mut().push(e)
        }
    };
    let mut todo = vec![ROOT_INO];
    let mut seen = 0usize;
    let mut regular = Vec::new();
    while let Some(d) = todo.pop() {
        let mut off = 0;
        loop {
            let batch = match fs.readdir(d, off, 64) {
                Ok(b) => b,
                Err(e) => {
                    ok(Err(format!("readdir {d}: {e}")));
                    break;
                }
            };
            let Some(last) = batch.last() else { break };
            if last.offset <= off && off != 0 {
                ok(Err(format!("readdir {d}: offset went back")));
                break;
            }
            off = last.offset;
            for e in &batch {
                seen += 1;
                if seen > 5000 || e.name == b"." || e.name == b".." {
                    continue;
                }
                ok(chk("lookup", fs.lookup(d, &e.name)));
                let a = match fs.getattr(e.ino) {
                    Ok(a) => a,
                    Err(err) => {
                        ok(Err(format!("getattr {}: {err}", e.ino)));
                        continue;
                    }
                };
                match a.mode & libc::S_IFMT {
                    libc::S_IFDIR => todo.push(e.ino),
                    libc::S_IFLNK => ok(chk("readlink", fs.readlink(e.ino))),
                    libc::S_IFREG => {
                        ok(chk(
                            "read",
                            fs.read(e.ino, 0, a.size.min(256 << 10) as usize),
                        ));
                        ok(chk("extents", fs.extents(e.ino)));
                        regular.push(e.ino);
                    }
                    _ => {}
                }
                match fs.listxattr(e.ino) {
                    Ok(names) => {
                        for n in names {
                            ok(chk("getxattr", fs.getxattr(e.ino, &n)));
                        }
                    }
                    Err(err) => ok(Err(format!("listxattr {}: {err}", e.ino))),
                }
            }
            if seen > 5000 {
                break;
            }
        }
    }
    let _ = fs.statfs();
    // Changes to what is there (these may fail on a sound filesystem too:
    // an immutable or append-only file).
    if let Some(&f) = regular.first() {
        let _ = fs.write(f, 5, b"overwritten", false);
        let _ = fs.truncate(f, 3 * BS + 1);
    }
    if let Some(&f) = regular.get(regular.len() / 2) {
        let _ = fs.write(f, 2 * BS, &[0x5a; 6000], false);
        let _ = fs.setxattr(f, b"user.fuzz", Some(b"x"), 0);
    }
    // New files (an immutable or append-only root refuses them, rightly).
    let root_locked = fs.get_flags(ROOT_INO).unwrap_or(0) != 0;
    let mark = failed.borrow().len();
    let name = format!("fuzz-{tag}");
    let n = |s: &str| format!("fuzz-{tag}-{s}").into_bytes();
    match fs.mknod(ROOT_INO, name.as_bytes(), libc::S_IFREG | 0o644, 0, c) {
        Err(e) => ok(Err(format!("create: {e}"))),
        Ok(a) => {
            ok(chk("write", fs.write(a.ino, 0, &[0xA5; 10_000], false)));
            ok(chk("truncate", fs.truncate(a.ino, 4000)));
            match fs.mknod(ROOT_INO, &n("clone"), libc::S_IFREG | 0o644, 0, c) {
                Ok(b) => {
                    ok(chk("clone", fs.clone_range(a.ino, 0, b.ino, 0, 0)));
                    ok(chk("write", fs.write(b.ino, 100, b"cow", false)));
                    ok(chk("unlink", fs.unlink(ROOT_INO, &n("clone"))));
                }
                Err(e) => ok(Err(format!("create: {e}"))),
            }
            ok(chk(
                "rename",
                fs.rename(ROOT_INO, name.as_bytes(), ROOT_INO, &n("renamed"), 0),
            ));
            ok(chk("unlink", fs.unlink(ROOT_INO, &n("renamed"))));
        }
    }
    match fs.mkdir(ROOT_INO, &n("dir"), 0o755, c) {
        Ok(_) => {
            ok(chk(
                "symlink",
                fs.symlink(ROOT_INO, &n("sym"), &n("dir"), c),
            ));
            ok(chk("rmdir", fs.rmdir(ROOT_INO, &n("dir"))));
            ok(chk("unlink", fs.unlink(ROOT_INO, &n("sym"))));
        }
        Err(e) => ok(Err(format!("mkdir: {e}"))),
    }
    let mut failed = failed.into_inner();
    if root_locked {
        failed.truncate(mark);
    }
    failed
}

fn chk<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| format!("{what}: {e}"))
}

/// Mount, use, unmount: Ok(the image afterwards) or Err(why mount refused).
fn mount_and_use(bytes: &[u8], tag: &str) -> Result<(Vec<u8>, Vec<String>), String> {
    let fs = Fs::mount(mem(bytes), FsOptions::default()).map_err(|e| e.to_string())?;
    let failed = exercise(&fs, tag);
    let _ = fs.unmount();
    Ok((bytes_of(&into_media(fs)), failed))
}

/// Steps 1-3 of the module comment on one corrupted image.
fn run_case(img: Vec<u8>) -> CaseResult {
    let mut cls = Vec::new();
    let r1 = fsck::check(&mem(&img), false);
    if internal(&r1) {
        return Err(format!("fsck -n failed internally: {r1:#?}"));
    }
    cls.push(fsck_class("fsck -n", &r1));
    // A norecovery mount (read-only, no journal replay, no orphan
    // reclaim) of the damaged image may refuse it, but must not change a
    // byte of it, even on writable media and through every operation.
    let ro = FsOptions {
        read_only: true,
        norecovery: true,
        ..Default::default()
    };
    match Fs::mount(mem(&img), ro) {
        Ok(fs) => {
            let _ = exercise(&fs, "n");
            let _ = fs.unmount();
            if bytes_of(&into_media(fs)) != img {
                return Err("a norecovery mount changed the image".into());
            }
            cls.push("norecovery: mounted, image unchanged".into());
        }
        Err(_) => cls.push("norecovery: refused".into()),
    }
    // `unchanged`: mount refused the image, so fsck -y sees the one fsck -n saw.
    let (after_use, unchanged) = match mount_and_use(&img, "a") {
        Ok((b, failed)) => {
            if std::env::var("FUZZ_VERBOSE").is_ok_and(|v| v != "0") {
                println!("    mount of the damaged image: failed operations {failed:?}");
            }
            cls.push(if failed.is_empty() {
                "mount: ok, every operation succeeded".into()
            } else {
                "mount: ok, some operations failed".into()
            });
            if r1.is_clean() {
                if !failed.is_empty() {
                    return Err(format!("fsck -n clean but operations failed: {failed:?}"));
                }
                let r = fsck::check(&mem(&b), false);
                if !r.is_clean() {
                    return Err(format!("clean image unclean after use: {r:#?}"));
                }
            }
            (b, false)
        }
        Err(e) if e.contains("read-only-compatible") => {
            // Unknown ro_compat features: by design a read-write mount is
            // refused, fsck -n and -y refuse with the same line (exit 8),
            // and a read-only mount must work.
            if r1.exit_code() != 8 || r1.error.as_deref() != Some(e.as_str()) {
                return Err(format!(
                    "mount refuses for ro_compat ({e}), fsck -n says otherwise: {r1:#?}"
                ));
            }
            let ro = FsOptions {
                read_only: true,
                ..Default::default()
            };
            match Fs::mount(mem(&img), ro) {
                Ok(fs) => {
                    exercise(&fs, "ro");
                    let _ = fs.unmount();
                }
                Err(e) => {
                    if r1.is_clean() {
                        return Err(format!("fsck -n clean but mount -o ro refuses: {e}"));
                    }
                }
            }
            cls.push("mount: refused read-write (unknown ro_compat), -o ro used".into());
            (img, true)
        }
        Err(e) => {
            if r1.is_clean() {
                return Err(format!("fsck -n clean but mount refuses: {e}"));
            }
            cls.push("mount: refused".into());
            (img, true)
        }
    };
    let m = mem(&after_use);
    let r2 = fsck::check(&m, true);
    if internal(&r2) {
        return Err(format!("fsck -y failed internally: {r2:#?}"));
    }
    cls.push(fsck_class("fsck -y", &r2));
    // On the image fsck -n saw, -n's verdict predicts -y's: both refuse,
    // or neither does.
    if unchanged && (r1.exit_code() == 8) != (r2.exit_code() == 8) {
        return Err(format!(
            "fsck -n exit {} but fsck -y exit {}: -n: {r1:#?}\n-y: {r2:#?}",
            r1.exit_code(),
            r2.exit_code()
        ));
    }
    match r2.exit_code() {
        8 => {
            if r2.error.as_deref().unwrap_or("").trim().is_empty() {
                return Err("fsck -y exit 8 without a reason".into());
            }
            // A refusal writes nothing.
            if bytes_of(&m) != after_use {
                return Err(format!("fsck -y refused but changed the image: {r2:#?}"));
            }
            return Ok(cls);
        }
        4 => {
            let left: Vec<String> = r2
                .findings
                .iter()
                .filter(|f| !f.fixed)
                .map(|f| format!("{}: {}", f.code, f.message))
                .collect();
            return Err(format!("fsck -y left findings: {left:#?}"));
        }
        _ => {}
    }
    let r3 = fsck::check(&m, false);
    if !r3.is_clean() {
        return Err(format!(
            "not clean after fsck -y: {r3:#?}\nfsck -y said: {r2:#?}"
        ));
    }
    let repaired = bytes_of(&m);
    match mount_and_use(&repaired, "b") {
        Err(e) => Err(format!("mount after a clean fsck refused: {e}")),
        Ok((b, failed)) => {
            if !failed.is_empty() {
                return Err(format!("operations failed after a clean fsck: {failed:?}"));
            }
            let r4 = fsck::check(&mem(&b), false);
            if !r4.is_clean() {
                return Err(format!("unclean after use of the repaired image: {r4:#?}"));
            }
            cls.push("repaired image mounts and stays clean".into());
            Ok(cls)
        }
    }
}

/// The corrupted image of case `case` and what was done to it.
fn make_case(bases: &[Base], seed: u64, case: u64) -> (Vec<u8>, String) {
    let mut rng = Rng::new(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let base = &bases[rng.below(bases.len() as u64) as usize];
    let mut b = base.bytes.clone();
    let mut what = vec![format!("base {}", base.name)];
    let n = 1 + rng.below(4);
    for _ in 0..n {
        what.push(mutate::corrupt(&mut b, &mut rng, base));
    }
    if rng.below(16) == 0 {
        what.push(mutate::truncate(&mut b, &mut rng, &base.sb));
    }
    (b, what.join("; "))
}

/// Run one case in its own thread: Ok/Err as `run_case`, or a panic or hang.
fn guarded(img: Vec<u8>) -> CaseResult {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| run_case(img)));
        let r = r.unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("panic: {what}"))
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(CASE_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(format!("hang: no result after {CASE_TIMEOUT:?}")),
    }
}

#[test]
fn fuzz_images() {
    let seed = env_u64("FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let only = env_u64("FUZZ_CASE");
    let verbose = std::env::var("FUZZ_VERBOSE").is_ok_and(|v| v != "0");
    println!(
        "fuzz_images: seed = {seed:#x}, {cases} cases (FUZZ_SEED={seed:#x} FUZZ_CASES={cases})"
    );
    let t0 = Instant::now();
    let populated = images::populated();
    let crashed = images::crashed(&populated);
    let bases = [
        Base::new("populated", populated),
        Base::new("crashed", crashed),
    ];
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut hangs = 0;
    let range = match only {
        Some(c) => c..c + 1,
        None => 0..cases,
    };
    let mut ran = 0u64;
    for case in range {
        let (img, what) = make_case(&bases, seed, case);
        let r = guarded(img);
        ran += 1;
        if verbose {
            println!("case {case}: {what}\n    -> {r:?}");
        }
        match r {
            Ok(cls) => {
                for c in cls {
                    *classes.entry(c).or_default() += 1;
                }
            }
            Err(e) => {
                let kind = if e.starts_with("panic") {
                    "FAIL panic"
                } else if e.starts_with("hang") {
                    hangs += 1;
                    "FAIL hang"
                } else {
                    "FAIL other"
                };
                *classes.entry(kind.into()).or_default() += 1;
                println!("FAILED: FUZZ_SEED={seed:#x} FUZZ_CASE={case}: {what}\n    {e}");
                failures.push(case);
                if hangs >= 3 {
                    println!("three hangs: stopping");
                    break;
                }
            }
        }
    }
    println!(
        "fuzz_images: {ran} cases in {:.1} s, {} failed; outcomes by class:",
        t0.elapsed().as_secs_f64(),
        failures.len()
    );
    for (c, n) in &classes {
        println!("  {n:6}  {c}");
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed (seed {seed:#x}): cases {failures:?}",
        failures.len()
    );
}
