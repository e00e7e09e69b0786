//! One user's long operations never hold every FUSE worker: clone, dedupe,
//! unshare, pin, fallocate, truncate and copy_file_range finish on threads
//! of their own, so another user's `stat` and `ls` answer meanwhile.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// With DAXLINK_FAULT_INJECT=slow-long every long operation takes 10 s.
/// nobody starts six of them (more than the workers, on two CPUs two);
/// root's stat, ls and read must each answer within 5 s meanwhile (behind
/// them they would wait 9 s or more).
#[test]
fn long_operations_of_one_user_leave_the_workers_to_everyone() {
    let img = Image::new("stall", 64 << 20);
    let m = Mounted::with_env(
        &img.path,
        "allow_other",
        &[("DAXLINK_FAULT_INJECT", "slow-long")],
    );
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(m.path("rootfile"), pattern(1, 8192)).unwrap();
    let root = m.root().display().to_string();
    let mut bg = Vec::new();
    for i in 0..6 {
        let op = match i % 3 {
            0 => format!("xfs_io -f -c 'falloc 0 1m' {root}/n{i}"),
            1 => format!("truncate -s 1m {root}/n{i}"),
            _ => format!("xfs_io -f -c 'fpunch 0 4096' {root}/n{i}"),
        };
        bg.push(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(["timeout", "120", "sh", "-c", &op])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("setpriv"),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        for cmd in [
            format!("stat {root}/rootfile"),
            format!("ls -l {root}"),
            format!("cat {root}/rootfile"),
        ] {
            let mut c = Command::new("sh");
            c.args(["-c", &cmd]);
            let t = Instant::now();
            let o = run_deadline(c, 30);
            assert_eq!(o.rc, 0, "{cmd}: {o:?}");
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{cmd} waited {:?} behind another user's long operations",
                t.elapsed()
            );
        }
    }
    let running = bg
        .iter_mut()
        .map(|c| c.try_wait().unwrap().is_none())
        .filter(|&r| r)
        .count();
    assert!(
        running > 2,
        "the long operations had ended already ({running} running)"
    );
    for mut c in bg {
        let st = c.wait().unwrap();
        assert!(st.success(), "a long operation failed: {st}");
    }
    m.cycle("");
}

/// Long operations wait their turn per user: nobody queues three times as
/// many slow long operations as the pool has threads, then root queues
/// one; root's must finish while most of nobody's are still waiting or
/// running (first in, first out it would finish after all of them).
#[test]
fn long_operations_take_turns_between_users() {
    const MS: u64 = 2000;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let img = Image::new("turns", 64 << 20);
    let m = Mounted::with_env(
        &img.path,
        "allow_other",
        &[("DAXLINK_FAULT_INJECT", &format!("slow-long:{MS}"))],
    );
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(m.path("rootfile"), pattern(1, 8192)).unwrap();
    let root = m.root().display().to_string();
    let n = 3 * threads;
    let mut bg = Vec::new();
    for i in 0..n {
        bg.push(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args([
                    "timeout",
                    "300",
                    "truncate",
                    "-s",
                    "1m",
                    &format!("{root}/n{i}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("setpriv"),
        );
    }
    std::thread::sleep(Duration::from_millis(MS / 4));
    let mut c = Command::new("truncate");
    c.args(["-s", "1m", &format!("{root}/rootfile")]);
    let o = run_deadline(c, 300);
    assert_eq!(o.rc, 0, "root's truncate: {o:?}");
    let left = bg
        .iter_mut()
        .map(|c| c.try_wait().unwrap().is_none())
        .filter(|&r| r)
        .count();
    eprintln!("{threads} long threads; {left} of nobody's {n} operations left when root's ended");
    assert!(
        left >= threads,
        "root's long operation waited behind nobody's: only {left} of {n} were left"
    );
    for mut c in bg {
        let st = c.wait().unwrap();
        assert!(st.success(), "a long operation failed: {st}");
    }
    m.cycle("");
}
