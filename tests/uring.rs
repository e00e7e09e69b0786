//! `transport=uring`: FUSE requests over io_uring (src/fuse/uring/).
//!
//! These tests turn the kernel's switch (/sys/module/fuse/parameters/
//! enable_uring) on and off, so they hold one lock while they run and put
//! the switch back to on afterwards (scripts/test.sh runs the POSIX,
//! permission, reflink and fio suites again over this transport). A kernel
//! without FUSE over io_uring (before 6.14, or built without it) fails them.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::*;

const SWITCH: &str = "/sys/module/fuse/parameters/enable_uring";
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Set the kernel's switch; back to on when dropped.
struct Switch;

impl Switch {
    fn set(on: bool) -> Switch {
        // The module is loaded by the first FUSE mount; make sure it is.
        let _ = Command::new("modprobe").arg("fuse").status();
        fs::write(SWITCH, if on { "Y" } else { "N" }).unwrap_or_else(|e| {
            panic!("{SWITCH}: {e} (a kernel with FUSE over io_uring is needed)")
        });
        Switch
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = fs::write(SWITCH, "Y");
    }
}

/// Names of the daemon's threads.
fn threads(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    v.sort();
    v
}

fn possible_cpus() -> usize {
    daxlink::fuse::uring::possible_cpus()
}

/// Write, read back at odd offsets and sizes (some larger than one request),
/// append, truncate: what the ring threads serve themselves.
fn exercise_data(root: &Path) {
    let p = root.join("data");
    let big = pattern(7, (3 << 20) + 4321);
    fs::write(&p, &big).unwrap();
    assert_eq!(fs::read(&p).unwrap(), big);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let small = pattern(8, 5000);
    f.write_all_at(&small, 12345).unwrap();
    let mut want = big.clone();
    want[12345..12345 + 5000].copy_from_slice(&small);
    let mut got = vec![0u8; want.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, want);
    let mut a = fs::OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"tail").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), want.len() as u64 + 4);
    f.set_len(100).unwrap();
    assert_eq!(fs::read(&p).unwrap(), want[..100]);
}

/// The per-opcode counters of the mount on `root` (`daxlink counters --json`).
fn counters(root: &Path) -> serde_json::Value {
    let out = daxlink(&[&"counters", &root, &"--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Requests of `op` that `side` ("ring": a queue thread answered it itself;
/// "dev": fuser's session, which over io_uring is the bridge) served.
fn served(c: &serde_json::Value, side: &str, op: &str) -> u64 {
    c[side][op].as_u64().unwrap_or(0)
}

/// The common requests (READ, WRITE, CREATE, LOOKUP, ...) are answered by
/// the ring threads themselves, the rest (names, xattrs) goes over the
/// bridge to fuser: read from the daemon's per-opcode counters, so a mount
/// that silently serves everything through the bridge, or through
/// /dev/fuse, fails. One ring thread per possible CPU.
#[test]
fn common_requests_are_served_on_the_rings_and_the_rest_bridged() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    let img = Image::new("uring", 256 << 20);
    let m = Mounted::new(&img.path, "transport=uring");
    let pid = m.pid().unwrap();
    daxlink(&[&"counters", &m.root(), &"--reset"]);
    exercise_data(m.root());
    // A name that is not there: a LOOKUP (ENOENT), served on the ring.
    assert_eq!(errno_of(fs::metadata(m.path("nosuch"))), libc::ENOENT);
    // Everything else goes through the bridge: names, xattrs, copy_file_range.
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/x"), b"x").unwrap();
    fs::rename(m.path("d/x"), m.path("d/y")).unwrap();
    let st = Command::new("setfattr")
        .args(["-n", "user.k", "-v", "v"])
        .arg(m.path("d/y"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.k"])
        .arg(m.path("d/y"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"v");
    // cp goes through copy_file_range, which daxlink answers with a reflink.
    let st = Command::new("cp")
        .arg(m.path("data"))
        .arg(m.path("clone"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::read(m.path("clone")).unwrap().len(), 100);
    let c = counters(m.root());
    for op in [
        "READ", "WRITE", "CREATE", "LOOKUP", "OPEN", "RELEASE", "GETXATTR",
    ] {
        assert!(served(&c, "ring", op) > 0, "{op} not served on a ring: {c}");
    }
    // 3 MiB written and read back: more than one request each way.
    assert!(served(&c, "ring", "WRITE") >= 2, "{c}");
    assert!(served(&c, "ring", "READ") >= 2, "{c}");
    for op in ["MKDIR", "RENAME", "SETXATTR", "COPY_FILE_RANGE"] {
        assert_eq!(served(&c, "ring", op), 0, "{op} served on a ring: {c}");
        assert!(served(&c, "dev", op) > 0, "{op} not bridged: {c}");
    }
    let names = threads(pid);
    let rings = names
        .iter()
        .filter(|n| n.starts_with("daxlink-ring-"))
        .count();
    assert_eq!(rings, possible_cpus(), "threads: {names:?}");
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn falls_back_to_dev_fuse_with_one_line_when_the_kernel_refuses() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _off = Switch::set(false);
    let img = Image::new("uring-off", 64 << 20);
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new(DAXLINK)
        .arg("mount")
        .arg(&img.path)
        .arg(dir.path())
        .args(["-o", "transport=uring"])
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let unmount = || {
        let _ = Command::new("umount").arg(dir.path()).status();
    };
    exercise_data(dir.path());
    let text = fs::read_to_string(log.path()).unwrap();
    unmount();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("using /dev/fuse"), "{text}");
    assert!(lines[0].contains("enable_uring"), "{text}");
}

#[test]
fn other_users_meet_the_same_permissions_over_the_ring() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    let img = Image::new("uring-perm", 64 << 20);
    let m = Mounted::new(&img.path, "transport=uring,allow_other");
    fs::write(m.path("mine"), b"secret").unwrap();
    fs::set_permissions(
        m.path("mine"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::write(m.path("shared"), b"").unwrap();
    fs::set_permissions(
        m.path("shared"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let mine = m.path("mine");
    let shared = m.path("shared");
    let (rc, _) = run_as(1234, 1234, &format!("cat {}", mine.display()));
    assert_ne!(rc, 0, "another user read a 0600 file");
    let (rc, err) = run_as(1234, 1234, &format!("echo hello >> {}", shared.display()));
    assert_eq!(rc, 0, "{err}");
    assert_eq!(fs::read(&shared).unwrap(), b"hello\n");
    m.unmount();
    fsck_clean(&img.path);
}

/// `allow_root`: the kernel lets everyone in (allow_other) and fuser turns
/// away users other than root and the owner; both transports end the same
/// for another user's stat, cat, touch and rm. (Here the kernel's ACL
/// lookup on the directory, a GETXATTR that the rings pass to fuser for a
/// user the mount turns away, already turns them away; `a_user_the_mount_turns_away_is_bridged_not_served_on_a_ring`
/// checks the ring side's own rule.)
#[test]
fn allow_root_turns_other_users_away_on_both_transports() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    let mut seen = Vec::new();
    for transport in ["dev", "uring"] {
        let img = Image::new("uring-allow-root", 64 << 20);
        let m = Mounted::new(&img.path, &format!("transport={transport},allow_root"));
        fs::write(m.path("f"), b"data").unwrap();
        fs::set_permissions(
            m.path("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        fs::set_permissions(
            m.root(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let f = m.path("f");
        let g = m.path("g");
        let outcomes: Vec<i32> = [
            format!("stat {}", f.display()),
            format!("cat {}", f.display()),
            format!("touch {}", g.display()),
            format!("rm -f {}", f.display()),
        ]
        .iter()
        .map(|c| run_as(1234, 1234, c).0)
        .collect();
        assert!(
            outcomes.iter().all(|&rc| rc != 0),
            "{transport}: {outcomes:?}"
        );
        assert_eq!(fs::read(&f).unwrap(), b"data", "{transport}");
        assert!(!g.exists(), "{transport}");
        seen.push(outcomes);
        m.unmount();
    }
    assert_eq!(seen[0], seen[1]);
}

/// A request from a user the mount turns away (`allow_root`: anyone but
/// root and the owner) is passed to fuser over the bridge, which refuses it
/// (EACCES), instead of being answered on a ring. User 1234 looks up a name
/// that is not there: answered on a ring it would get ENOENT and count as
/// ring-served. The root directory is mode 0707: with no group bits the
/// kernel's permission check does not read its ACL (a GETXATTR, which for
/// this user would be bridged and refused before any LOOKUP), so the user's
/// LOOKUP reaches the daemon. The same steps on an `allow_other` mount show
/// that it does reach a ring there (ENOENT, counted), so the refusal is the
/// mount's rule.
#[test]
fn a_user_the_mount_turns_away_is_bridged_not_served_on_a_ring() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    for acl in ["allow_other", "allow_root"] {
        let img = Image::new("uring-outsider", 64 << 20);
        let m = Mounted::new(&img.path, &format!("transport=uring,{acl}"));
        fs::set_permissions(
            m.root(),
            std::os::unix::fs::PermissionsExt::from_mode(0o707),
        )
        .unwrap();
        daxlink(&[&"counters", &m.root(), &"--reset"]);
        // Root's LOOKUP of a missing name: a ring serves it.
        assert_eq!(errno_of(fs::metadata(m.path("by-root"))), libc::ENOENT);
        let before = counters(m.root());
        assert_eq!(served(&before, "ring", "LOOKUP"), 1, "{acl}: {before}");
        let (rc, err) = run_as(1234, 1234, &format!("stat {}", m.path("by-user").display()));
        assert_ne!(rc, 0, "{acl}: {err}");
        let after = counters(m.root());
        let ring = served(&after, "ring", "LOOKUP") - served(&before, "ring", "LOOKUP");
        if acl == "allow_other" {
            assert!(err.contains("No such file"), "{acl}: {err}");
            assert_eq!(ring, 1, "{acl}: the user's LOOKUP: {after}");
        } else {
            assert!(err.contains("Permission denied"), "{acl}: {err}");
            assert_eq!(ring, 0, "{acl}: a ring served the user's LOOKUP: {after}");
        }
        m.unmount();
        fsck_clean(&img.path);
    }
}

/// A child process killed when dropped (a `daxlink pin --hold` that must
/// not outlive a failed test).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `path` opened for O_DIRECT reads (the page cache cannot answer them:
/// each reaches the daemon as one READ).
fn open_direct(path: &Path) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// One O_DIRECT read of 4 KiB at `off` of `f` (from `open_direct`).
fn read_direct(f: &fs::File, off: u64) -> Vec<u8> {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let mut buf = Box::new(Page([0; 4096]));
    let n = f.read_at(&mut buf.0, off).unwrap();
    buf.0[..n].to_vec()
}

/// Make `f` busy for about `secs` s: a pin of its block 0, held by
/// another process, then a punch of that block under `page_model=upstream`,
/// which waits (inode locked) until the pin ends, as Linux's break_layouts
/// does. `between` runs after the pin and before the punch. Returns the
/// pin's process, `between`'s value and the punch's thread.
fn busy_inode<T>(
    f: &Path,
    secs: u32,
    between: impl FnOnce(&Path) -> T,
) -> (KillOnDrop, T, std::thread::JoinHandle<Out>) {
    let mut pin = KillOnDrop(
        Command::new(DAXLINK)
            .arg("pin")
            .arg(f)
            .args(["--offset", "0", "--length", "4096", "--hold"])
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(pin.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("pin "), "daxlink pin: {line}");
    let t = between(f);
    let punch = {
        let f = f.to_path_buf();
        std::thread::spawn(move || {
            let mut c = Command::new("fallocate");
            c.args(["-p", "-o", "0", "-l", "4096"]).arg(&f);
            run_deadline(c, 30)
        })
    };
    (pin, t, punch)
}

/// A READ of an inode that a long operation holds locked goes over the
/// bridge, so it does not hold up its CPU's ring; once the inode is free
/// again, the same READ is served on a ring. The long operation: a punch
/// of a pinned block under `page_model=upstream`, which waits (inode
/// locked) until the pin ends, as Linux's break_layouts does.
#[test]
fn a_read_of_a_busy_inode_is_bridged_and_of_a_free_one_served_on_a_ring() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    let img = Image::new("uring-busy", 64 << 20);
    let m = Mounted::new(&img.path, "transport=uring,page_model=upstream");
    let f = m.path("f");
    let data = pattern(11, 8192);
    fs::write(&f, &data).unwrap();
    let (pin, direct, punch) = busy_inode(&f, 2, |f| {
        // Opened now: an OPEN of the busy inode would wait on the bridge too.
        let direct = open_direct(f);
        daxlink(&[&"counters", &m.root(), &"--reset"]);
        direct
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    let t = std::time::Instant::now();
    assert_eq!(read_direct(&direct, 4096), data[4096..]);
    let waited = t.elapsed();
    let out = punch.join().unwrap();
    assert_eq!(out.rc, 0, "fallocate -p: {out:?}");
    let busy = counters(m.root());
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "the READ did not wait for the punch ({waited:?}): was the inode busy?"
    );
    assert_eq!(served(&busy, "ring", "READ"), 0, "busy inode: {busy}");
    assert_eq!(served(&busy, "dev", "READ"), 1, "busy inode: {busy}");
    // The inode is free again: the same READ is served on a ring.
    assert_eq!(read_direct(&direct, 4096), data[4096..]);
    let free = counters(m.root());
    assert_eq!(served(&free, "ring", "READ"), 1, "free inode: {free}");
    assert_eq!(served(&free, "dev", "READ"), 1, "free inode: {free}");
    drop((direct, pin));
    m.unmount();
    fsck_clean(&img.path);
}

/// `dd` of one 4 KiB O_DIRECT block at `skip` of `path` (one OPEN, READ,
/// RELEASE), pinned to `cpu` with taskset, so its requests go to that
/// CPU's ring.
fn dd_on_cpu(cpu: usize, path: &Path, skip: u64) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", &cpu.to_string(), "dd"])
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "bs=4096", "count=1", "iflag=direct"])
        .arg(format!("skip={skip}"));
    c
}

/// A ring thread never waits for a busy inode: while a long operation holds
/// file f, a process on CPU 0 reads f (its OPEN and READ meet the lock, fail
/// on the ring before changing anything and are served, waiting, by the
/// bridge), and another process on the same CPU reads file g: g's requests
/// go to the same ring, which serves them at once (counted on the ring)
/// while the read of f still waits. A ring thread that waited for f's lock
/// would hold g's requests until the punch ends.
#[test]
fn a_ring_serves_other_files_while_a_request_on_a_busy_inode_waits() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    let img = Image::new("uring-nowait", 64 << 20);
    let m = Mounted::new(&img.path, "transport=uring,page_model=upstream");
    let (f, g) = (m.path("f"), m.path("g"));
    fs::write(&f, pattern(12, 8192)).unwrap();
    fs::write(&g, pattern(13, 8192)).unwrap();
    // Looked up now: the reads below send no LOOKUP of their own.
    fs::metadata(&f).unwrap();
    fs::metadata(&g).unwrap();
    // The punch waits at most 2 s (the layout timeout) for the pin: it
    // starts a little after the pin, so the pin ends first.
    let (pin, (), punch) = busy_inode(&f, 2, |_| {
        std::thread::sleep(std::time::Duration::from_millis(300))
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    daxlink(&[&"counters", &m.root(), &"--reset"]);
    let t = std::time::Instant::now();
    let of_f = {
        let c = dd_on_cpu(0, &f, 1);
        std::thread::spawn(move || run_deadline(c, 30))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = run_deadline(dd_on_cpu(0, &g, 1), 30);
    let g_done = t.elapsed();
    assert_eq!(out.rc, 0, "dd of g: {out:?}");
    let f_waiting = !of_f.is_finished();
    let c = counters(m.root());
    let of_f = of_f.join().unwrap();
    let f_done = t.elapsed();
    let punch = punch.join().unwrap();
    // (A blocked ring also holds up the RELEASE that ends the pin: the
    // punch then gives up after its layout timeout, EBUSY.)
    assert!(
        g_done < std::time::Duration::from_millis(1000),
        "the read of g waited {g_done:?} (f's read ended after {f_done:?}, the punch: \
         {punch:?}): its ring was blocked"
    );
    assert!(
        f_waiting && f_done >= std::time::Duration::from_millis(1200),
        "f was not busy: its read took {f_done:?}"
    );
    assert_eq!(of_f.rc, 0, "dd of f: {of_f:?}");
    assert_eq!(punch.rc, 0, "fallocate -p: {punch:?}");
    // While f's OPEN waited on the bridge, g's OPEN and READ were served
    // on the ring.
    assert_eq!(served(&c, "dev", "OPEN"), 1, "{c}");
    assert_eq!(served(&c, "ring", "OPEN"), 1, "{c}");
    assert_eq!(served(&c, "ring", "READ"), 1, "{c}");
    assert_eq!(served(&c, "dev", "READ"), 0, "{c}");
    drop(pin);
    m.unmount();
    fsck_clean(&img.path);
}

/// A ring queue thread that fails (DAXLINK_FAULT_INJECT=uring-queue-exit
/// makes each queue fail on its first request) leaves its CPU's requests
/// without a server: the daemon aborts the connection, so the request that
/// met the dead queue and every later one fail with an error instead of
/// hanging.
#[test]
fn a_queue_that_dies_stops_the_mount_instead_of_hanging() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _on = Switch::set(true);
    let img = Image::new("uring-exit", 64 << 20);
    let m = Mounted::with_env(
        &img.path,
        "transport=uring",
        &[("DAXLINK_FAULT_INJECT", "uring-queue-exit")],
    );
    for name in ["a", "b", "c"] {
        let mut c = Command::new("stat");
        c.arg(m.path(name));
        let out = run_deadline(c, 20);
        assert_ne!(out.rc, 0, "{out:?}");
        assert!(
            out.stderr.contains("not connected") || out.stderr.contains("connection abort"),
            "{name}: the connection should be aborted: {out:?}"
        );
    }
}
