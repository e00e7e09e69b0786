//! kill -9 of the daemon while a recall waits for a direct client inside an
//! access. The client's stall is the client's test hook
//! `DAXLINK_CLIENT_FAULT=stall-in-access:MS` (client/src/fault.rs); the
//! daemon says at debug level when a recall has to wait for a slot.
//!
//! Needs the shim built beside daxlink: `cargo build --release --workspace`.

mod common;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use daxlink::tools::client;

const BS: usize = 4096;

/// What the clients add to the shared prelude (`direct::PRELUDE`: the
/// pattern, `check`, `kernel`): one line out at a time, and an errno report.
const SAY: &str = r#"
import errno
def say(*a):
    print(*a, flush=True)
def fails(what, f):
    try:
        f()
    except OSError as e:
        say(what, 'errno', e.errno)
        return
    say(what, 'succeeded')
"#;

/// A python client under `daxlink run`: stdin and stdout piped (stdout's
/// lines arrive on the channel), stderr (the shim's debug lines) in `err`.
struct Py {
    child: Child,
    lines: mpsc::Receiver<String>,
    err: tempfile::NamedTempFile,
}

impl Py {
    fn start(script: &str, args: &[&Path], env: &[(&str, &str)]) -> Py {
        shim();
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut c = Command::new(DAXLINK);
        c.args(["run", "--", "python3", "-c"])
            .arg(format!("{}\n{SAY}\n{script}", direct::PRELUDE))
            .args(args)
            .envs(env.iter().copied())
            .env("DAXLINK_DIRECT_DEBUG", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err.reopen().unwrap());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Py { child, lines, err }
    }

    /// The next line of stdout, within `secs`.
    fn line(&self, secs: u64) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("no line from the client in {secs} s:\n{}", self.stderr()))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.err.path()).unwrap_or_default()
    }

    fn send(&mut self, l: &str) {
        let i = self.child.stdin.as_mut().unwrap();
        writeln!(i, "{l}").unwrap();
        i.flush().unwrap();
    }

    /// Wait for the end (within `secs`; a hang kills it and fails).
    fn finish(mut self, secs: u64) -> (i32, String) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), self.stderr());
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the client hung for {secs} s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait up to `secs` for `f`.
fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn direct_writes(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split_once("]: exit: ").map(|(_, r)| r))
        .filter_map(|r| r.split(" direct reads, ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A client stalls inside a direct write; a punch by another process makes
/// the daemon recall the file's maps and wait for it; the daemon is killed
/// (-9) while it waits. Then: the punch ends (ENOTCONN, not a hang), both
/// clients end on their own, their next accesses fail as the kernel's
/// do for a dead FUSE daemon (ENOTCONN: the heartbeat is stale or the map
/// recalled, so the kernel path), the mount goes with `umount -l`, the
/// image mounts again with no lease, and the writes fsynced before the kill
/// (and the stalled write, stored before the kill was noticed) are there.
#[test]
fn kill9_of_the_daemon_inside_a_recall() {
    let img = Image::new("dkillrecall", 128 << 20);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut m = Mounted::with_env_logging(
        &img.path,
        // Long enough that only the kill ends the recall.
        "recall_timeout_ms=120000",
        &[("RUST_LOG", "daxlink::fuse::direct=debug")],
        log.path(),
    )
    .expect("mount");
    let f = m.path("f");
    let old = pattern(1, 64 * BS);
    std::fs::write(&f, &old).unwrap();
    std::fs::File::open(&f).unwrap().sync_all().unwrap();

    // Client A: direct writes of blocks 0..8, fsynced; then, after the
    // kill, one more write and a read.
    let mut a = Py::start(
        r#"
fd = os.open(sys.argv[1], os.O_RDWR)
for i in range(8):
    os.pwrite(fd, pat(10 + i, 4096), i * 4096)
os.fsync(fd)
say('synced')
sys.stdin.readline()
fails('write', lambda: os.pwrite(fd, pat(99, 4096), 12 * 4096))
fails('read', lambda: os.pread(fd, 4096, 0))
"#,
        &[&f],
        &[],
    );
    assert_eq!(a.line(120), "synced", "{}", a.stderr());
    // Client B: its first direct access stalls inside (after enter).
    let b = Py::start(
        r#"
fd = os.open(sys.argv[1], os.O_RDWR)
n = os.pwrite(fd, pat(20, 4096), 30 * 4096)
say('wrote', n)
fails('write', lambda: os.pwrite(fd, pat(21, 4096), 31 * 4096))
"#,
        &[&f],
        &[("DAXLINK_CLIENT_FAULT", "stall-in-access:8000")],
    );
    until(120, "client B never stalled inside an access", || {
        b.stderr().contains("fault: stalling")
    });
    assert!(!b.stderr().contains("stall over"), "{}", b.stderr());
    // The punch (block 40) recalls the file's maps and waits for B.
    let mut punch = Command::new("fallocate")
        .args(["-p", "-o", &(40 * BS).to_string(), "-l", &BS.to_string()])
        .arg(&f)
        .stderr(Stdio::piped())
        .spawn()
        .expect("fallocate(1)");
    until(60, "the daemon never said it waits for a slot", || {
        std::fs::read_to_string(log.path())
            .unwrap()
            .contains("waits for slot")
    });
    assert!(
        punch.try_wait().unwrap().is_none(),
        "the punch ended while a client was inside an access"
    );
    assert!(
        !b.stderr().contains("stall over"),
        "B's stall ended before the kill: the machine is too slow for 8 s\n{}",
        b.stderr()
    );
    let pid = m.pid().unwrap() as libc::pid_t;
    // SAFETY: kill(2) of the daemon we started (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The punch ends with the connection's error, not a hang.
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = punch.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the punch hung after the daemon died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut perr = String::new();
    std::io::Read::read_to_string(&mut punch.stderr.take().unwrap(), &mut perr).unwrap();
    assert!(!st.success(), "the punch succeeded on a dead daemon");
    // The request in flight when the connection died: ECONNABORTED.
    assert!(perr.contains("connection abort"), "punch: {perr}");
    // B leaves its stall: the store was made, the write returns all of
    // it; its next write goes to the kernel and fails like the kernel's.
    assert_eq!(b.line(60), "wrote 4096", "{}", b.stderr());
    assert_eq!(
        b.line(60),
        format!("write errno {}", libc::ENOTCONN),
        "{}",
        b.stderr()
    );
    let (rc, err) = b.finish(60);
    assert_eq!(rc, 0, "client B: {err}");
    assert!(direct_writes(&err) >= 1, "B's write was not direct: {err}");
    a.send("go");
    for what in ["write", "read"] {
        assert_eq!(
            a.line(60),
            format!("{what} errno {}", libc::ENOTCONN),
            "{}",
            a.stderr()
        );
    }
    let (rc, err) = a.finish(60);
    assert_eq!(rc, 0, "client A: {err}");
    assert!(
        direct_writes(&err) >= 8,
        "A's writes were not direct: {err}"
    );

    // Reap the daemon, detach the mount (`umount -l`: nothing holds it now,
    // but a dead FUSE mount may still be busy for a moment).
    let dir = m.root().to_path_buf();
    m.kill();
    assert!(!is_mounted(&dir), "the dead mount stayed");
    drop(m);
    // What a crash leaves: an image not unmounted cleanly, which fsck -n
    // notes and finds consistent (exit 0): the daemon died before the
    // punch began (no transaction open), and direct stores are overwrites
    // in place, which need no journal.
    let o = Command::new(FSCK)
        .arg("-n")
        .arg(&img.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "fsck -n after the kill:\n{text}");
    assert!(text.contains("not cleanly unmounted"), "{text}");

    // Mount again: recovery; no lease; the fsynced writes are there.
    let m = Mounted::new(&img.path, "");
    let f = m.path("f");
    assert!(
        client::owners(&f, 0).unwrap()["leases"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "a lease outlived the daemon"
    );
    assert!(
        client::snapshot(m.root(), &[]).unwrap()["leases"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "SNAPSHOT shows a lease after the crash"
    );
    let got = std::fs::read(&f).unwrap();
    assert_eq!(got.len(), old.len());
    for i in 0..64 {
        let want = match i {
            0..8 => pattern(10 + i as u64, BS),
            // Stored before B's write returned (no fsync: the store is in
            // the image itself, which the daemon's death does not undo).
            30 => pattern(20, BS),
            // The rest, and block 40: the punch never ran (the daemon died
            // inside the recall that comes before it).
            _ => old[i * BS..(i + 1) * BS].to_vec(),
        };
        assert!(
            got[i * BS..(i + 1) * BS] == want[..],
            "block {i} after the crash"
        );
    }
    m.unmount();
    fsck_clean(&img.path);
}
