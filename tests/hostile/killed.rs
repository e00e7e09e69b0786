//! SIGKILL ends a long operation: between its steps, an operation whose
//! caller has a fatal signal pending stops (EINTR) with what it did so far
//! committed, so a killed process is gone at once and the worker and the
//! locks it held are free again, instead of running on for the whole call.
//! A truncate cannot stop halfway (its new size is committed first): its
//! killed caller is answered at once and the freeing runs on to its end.

use std::fs::{self, File};
use std::os::unix::fs::{chown, FileExt, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const NOBODY: u32 = 65534;
/// Each step boundary sleeps this long (DAXLINK_FAULT_INJECT=slow-step).
const STEP_MS: u64 = 400;
/// Source extents: every other block written, so none merge. A clone
/// remaps 256 extents a step: 32 steps, about 13 s with the hook.
const EXTENTS: u64 = 8192;
/// A punch or a truncate frees up to 1,024 extents a step: 16 steps,
/// about 6.4 s with the hook.
const FREE_EXTENTS: u64 = 16384;

/// A mount with slow steps whose root anyone may write.
fn slow_mount(img: &Image) -> Mounted {
    let m = Mounted::with_env(
        &img.path,
        "allow_other",
        &[("DAXLINK_FAULT_INJECT", &format!("slow-step:{STEP_MS}"))],
    );
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    m
}

/// The byte of extent `i` of a fragmented file.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8 + 1
}

/// `name` with `extents` one-block extents (every other block), owned by nobody.
fn fragmented(m: &Mounted, name: &str, extents: u64) {
    let f = File::create(m.path(name)).unwrap();
    for i in 0..extents {
        f.write_all_at(&[pattern(i); 4096], 2 * i * 4096).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    chown(m.path(name), Some(NOBODY), Some(NOBODY)).unwrap();
}

/// `args` run as nobody, killed after 1.5 s (it must still be running
/// then); returns how long the killed process took to be gone.
fn kill_after_1500ms(args: &[&str], what: &str) -> Duration {
    let mut c: Child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv");
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(st) = c.try_wait().unwrap() {
        panic!("the {what} ended within 1.5 s ({st}): nothing to interrupt");
    }
    c.kill().unwrap();
    let t = Instant::now();
    c.wait().unwrap();
    t.elapsed()
}

/// `cmd` run by nobody through a shell, and how long it took.
fn nobody_timed(cmd: &str) -> (Out, Duration) {
    let t = Instant::now();
    let o = crate::nobody(cmd);
    (o, t.elapsed())
}

/// nobody clones a file of 8,192 extents (32 steps of 400 ms) and is
/// killed 1.5 s in. The killed process must be gone within 3 s (run to
/// its end, the clone would hold it about 11 s more), nobody's next
/// clone into the same file (which needs the lock the first one held)
/// must be done within 3 s more, and the image must be clean.
#[test]
fn sigkill_ends_a_long_clone_between_steps() {
    let img = Image::new("killed", 128 << 20);
    let m = slow_mount(&img);
    fragmented(&m, "src", EXTENTS);
    fs::write(m.path("dst"), b"").unwrap();
    fs::write(m.path("small"), [7u8; 4096]).unwrap();
    for f in ["dst", "small"] {
        chown(m.path(f), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let root = m.root().display().to_string();
    let (src, dst) = (format!("{root}/src"), format!("{root}/dst"));
    let gone = kill_after_1500ms(&[DAXLINK, "reflink", &src, &dst], "clone");
    let (o, next) = nobody_timed(&format!("{DAXLINK} reflink {root}/small {root}/dst"));
    eprintln!("killed clone gone after {gone:?}; the next clone took {next:?}");
    assert_eq!(o.rc, 0, "nobody's next clone: {o:?}");
    assert!(
        gone < Duration::from_secs(3),
        "the killed clone's process lived on {gone:?}: its clone ran on"
    );
    assert!(
        next < Duration::from_secs(3),
        "nobody's next clone waited {next:?} behind the killed one"
    );
    assert_eq!(fs::read(m.path("dst")).unwrap()[..4096], [7u8; 4096]);
    m.unmount();
    fsck_clean(&img.path);
}

/// nobody punches the whole of a file of 16,384 extents (16 steps of
/// 400 ms) and is killed 1.5 s in: the process is gone within 3 s, the
/// punch stopped where it was (the blocks it reached read zeros, the rest
/// keep their bytes: a prefix, as a killed remap leaves a prefix shared),
/// nobody's next write to the file is not held up, and the image is clean
/// (no intent record is left to finish the punch at the next mount).
#[test]
fn sigkill_stops_a_long_punch_between_steps() {
    let img = Image::new("killed-punch", 256 << 20);
    let m = slow_mount(&img);
    fragmented(&m, "f", FREE_EXTENTS);
    let f = m.path("f").display().to_string();
    let len = (2 * FREE_EXTENTS * 4096).to_string();
    let punch = format!("fpunch 0 {len}");
    let gone = kill_after_1500ms(&["xfs_io", "-c", &punch, &f], "punch");
    let data = fs::read(&f).unwrap();
    let punched = (0..FREE_EXTENTS)
        .take_while(|&i| data[(2 * i * 4096) as usize] == 0)
        .count() as u64;
    for i in 0..FREE_EXTENTS {
        let b = &data[(2 * i * 4096) as usize..(2 * i * 4096 + 4096) as usize];
        let want = if i < punched { 0 } else { pattern(i) };
        assert!(
            b.iter().all(|&x| x == want),
            "extent {i}: not {want:#x} (the first {punched} are punched)"
        );
    }
    let (o, next) = nobody_timed(&format!("xfs_io -c 'pwrite -S 0x5a 0 4096' {f}"));
    eprintln!("killed punch gone after {gone:?}, {punched} of {FREE_EXTENTS} extents punched; the next write took {next:?}");
    assert_eq!(o.rc, 0, "nobody's next write: {o:?}");
    assert!(
        gone < Duration::from_secs(3),
        "the killed punch's process lived on {gone:?}: its punch ran on"
    );
    assert!(punched < FREE_EXTENTS, "the punch ran to its end");
    assert!(
        next < Duration::from_secs(3),
        "the next write waited {next:?}"
    );
    m.unmount();
    fsck_clean(&img.path);
}

/// nobody truncates a file of 16,384 extents to nothing (16 steps of
/// 400 ms) and is killed 1.5 s in: the process is gone within 3 s, and
/// the truncate still ends whole: each of its blocks free again
/// (statfs), and a write at the old end through a descriptor opened
/// before reads back zeros before it, not the kernel's cached old bytes.
#[test]
fn sigkill_answers_a_long_truncate_which_still_ends_whole() {
    let img = Image::new("killed-trunc", 256 << 20);
    let m = slow_mount(&img);
    let free = |m: &Mounted| nix::sys::statvfs::statvfs(m.root()).unwrap().blocks_free();
    let before = free(&m);
    fragmented(&m, "f", FREE_EXTENTS);
    let with_file = free(&m);
    assert!(
        with_file + FREE_EXTENTS <= before,
        "the file took too few blocks"
    );
    let f = m.path("f").display().to_string();
    // The file's pages in the kernel's cache: the killed caller's early
    // answer must still make the kernel drop those past the new size.
    let len = (2 * FREE_EXTENTS - 1) * 4096;
    assert_eq!(fs::read(&f).unwrap().len() as u64, len);
    // A descriptor opened before, which needs no fresh attributes later.
    let w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    let gone = kill_after_1500ms(&["truncate", "-s", "0", &f], "truncate");
    assert!(
        gone < Duration::from_secs(3),
        "the killed truncate's process lived on {gone:?}"
    );
    // Written at the old end again at once (the write waits for the
    // truncate), the file reads zeros before it, not the old bytes from
    // the kernel's cache.
    let t = Instant::now();
    w.write_all_at(b"!", len - 1).unwrap();
    let after = t.elapsed();
    eprintln!("killed truncate gone after {gone:?}; a write after it took {after:?}");
    let mut data = vec![0xeeu8; len as usize];
    w.read_exact_at(&mut data, 0).unwrap();
    drop(w);
    let stale = data[..data.len() - 1].iter().filter(|&&b| b != 0).count();
    assert_eq!(stale, 0, "{stale} old bytes read back after the truncate");
    assert_eq!(data[data.len() - 1], b'!');
    // All but the block written again (record blocks the extents needed
    // may stay allocated).
    let freed = free(&m) - with_file;
    assert!(
        freed + 1 >= FREE_EXTENTS,
        "{freed} blocks freed of the file's {FREE_EXTENTS}"
    );
    m.unmount();
    fsck_clean(&img.path);
}
