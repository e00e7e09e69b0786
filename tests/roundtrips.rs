//! Round trips: the FUSE requests common system call sequences cost,
//! read from the daemon's per-opcode counters (`daxlink counters`, the
//! COUNTERS ioctl), asserted exactly or as tight upper bounds, so a change
//! that adds a request fails here (docs/ROUNDTRIPS.md has the table).
//! And the caches those counts rely on never go stale: what changes behind
//! the kernel's back is seen at once.
//!
//! Each test mounts in a mount namespace of its own: a `df` or a disk
//! monitor elsewhere on the machine cannot see its mounts, so it cannot add
//! requests to the counts.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use daxlink::fuse::counters::{name, OPCODES};
use daxlink::fuse::ioctl;

type Counts = BTreeMap<String, u64>;

/// Reads a mount's counters through a descriptor of its root held open, so
/// each read costs exactly one request (its IOCTL), which `delta` takes off.
struct Counter {
    root: File,
    reads: u64,
}

impl Counter {
    fn new(m: &Mounted) -> Counter {
        Counter {
            root: File::open(m.root()).unwrap(),
            reads: 0,
        }
    }

    fn raw(&mut self) -> [[u64; OPCODES]; 2] {
        let mut buf = vec![0u8; ioctl::COUNTERS_SIZE];
        ioctl::call(&self.root, ioctl::Cmd::COUNTERS, &mut buf).expect("COUNTERS ioctl");
        self.reads += 1;
        let mut c = [[0u64; OPCODES]; 2];
        for (t, row) in c.iter_mut().enumerate() {
            for (op, v) in row.iter_mut().enumerate() {
                *v = ioctl::get_u64(&buf, 8 + (t * OPCODES + op) * 8).unwrap();
            }
        }
        c
    }

    /// The counters once nothing but our own reads comes in any more (the
    /// kernel sends RELEASE after close returns): two reads 100 ms apart
    /// that differ by their own IOCTL alone. Gives up after 5 s.
    fn settled(&mut self) -> [[u64; OPCODES]; 2] {
        let mut prev = self.raw();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let cur = self.raw();
            let quiet = (0..OPCODES).all(|op| {
                let d = cur[0][op] + cur[1][op] - prev[0][op] - prev[1][op];
                d == u64::from(op == 39)
            });
            if quiet {
                return cur;
            }
            prev = cur;
        }
        panic!("requests still coming after 5 s");
    }

    /// The requests `f` costs, by opcode name (both transports).
    fn delta(&mut self, f: impl FnOnce()) -> Counts {
        self.delta_split(f).0
    }

    /// `delta`, and of them the ones io_uring queue threads served.
    fn delta_split(&mut self, f: impl FnOnce()) -> (Counts, Counts) {
        let a = self.settled();
        let r0 = self.reads;
        f();
        let b = self.settled();
        let ours = self.reads - r0;
        let (mut all, mut ring) = (Counts::new(), Counts::new());
        for op in 0..OPCODES {
            let mut d = b[0][op] + b[1][op] - a[0][op] - a[1][op];
            if op == 39 {
                d -= ours;
            }
            if d > 0 {
                all.insert(name(op as u32), d);
            }
            if b[1][op] > a[1][op] {
                ring.insert(name(op as u32), b[1][op] - a[1][op]);
            }
        }
        (all, ring)
    }
}

fn counts(v: &[(&str, u64)]) -> Counts {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

fn total(c: &Counts) -> u64 {
    c.values().sum()
}

fn sh(script: &str) {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    let o = run_deadline(c, 60);
    assert_eq!(o.rc, 0, "{script}: {}", o.stderr);
}

/// Note a count that is off, with the line that expected it, and go on
/// (so that a failing run still prints the whole table).
#[track_caller]
fn soft(errs: &mut Vec<String>, ok: bool, d: &Counts) {
    if !ok {
        let at = std::panic::Location::caller().line();
        errs.push(format!("line {at}: {d:?}"));
    }
}

/// Print a sequence's counts (`cargo test -- --nocapture` shows the table).
fn show(what: &str, c: &Counts) {
    let v: Vec<String> = c.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("| {what} | {} | {} |", total(c), v.join(", "));
}

/// A small tree for cp -a: 3 directories, 12 files of 0-9000 bytes, a
/// symlink, on tmpfs so that the source costs the mount nothing.
fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir_all(root.join("c")).unwrap();
    for i in 0..12u64 {
        let dir = ["", "a", "a/b", "c"][i as usize % 4];
        fs::write(
            root.join(dir).join(format!("f{i}")),
            pattern(i, (i as usize) * 750),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("a/f1", root.join("link")).unwrap();
}

#[test]
fn request_counts_of_common_sequences() {
    private_mount_namespace();
    for t in ["python3", "ls", "cp", "rm"] {
        need(t);
    }
    let img = Image::new("rt", 256 << 20);
    let mut m = Mounted::new(&img.path, "");
    // Files for the uncached sequences, then a fresh mount (a fresh cache).
    fs::write(m.path("old"), b"twelve bytes").unwrap();
    fs::create_dir(m.path("big")).unwrap();
    for i in 0..1000 {
        File::create(m.path(&format!("big/f{i:04}"))).unwrap();
    }
    m = m.cycle("");
    let mut c = Counter::new(&m);
    let mut errs = Vec::new();
    println!("| sequence | requests | by opcode |");

    // stat of a name the kernel has not seen: one LOOKUP, which carries
    // the attributes; then nothing.
    let d = c.delta(|| assert!(fs::metadata(m.path("old")).unwrap().is_file()));
    show("stat uncached", &d);
    soft(&mut errs, d == counts(&[("LOOKUP", 1)]), &d);
    let d = c.delta(|| assert!(fs::metadata(m.path("old")).unwrap().is_file()));
    show("stat cached", &d);
    soft(&mut errs, d == Counts::new(), &d);

    // open + read + close of a cached file: OPEN and RELEASE (no FLUSH);
    // the read is served from the page cache kept since the first one.
    let read = || assert_eq!(fs::read(m.path("old")).unwrap(), b"twelve bytes");
    let d = c.delta(read);
    show("open+read+close, first", &d);
    soft(&mut errs, d.get("READ").is_some_and(|&n| n >= 1), &d);
    soft(&mut errs, !d.contains_key("FLUSH"), &d);
    let d = c.delta(read);
    show("open+read+close, cached", &d);
    // The first read invalidated the cached atime (the kernel does so after
    // every read it sends): std's read asks statx for the size once.
    soft(
        &mut errs,
        d == counts(&[("GETATTR", 1), ("OPEN", 1), ("RELEASE", 1)]),
        &d,
    );
    let d = c.delta(read);
    show("open+read+close, cached again", &d);
    soft(&mut errs, d == counts(&[("OPEN", 1), ("RELEASE", 1)]), &d);

    // A negative LOOKUP is cached: the second stat of a missing name is free.
    let d = c.delta(|| assert!(fs::metadata(m.path("none")).is_err()));
    show("stat of a missing name", &d);
    soft(&mut errs, d == counts(&[("LOOKUP", 1)]), &d);
    let d = c.delta(|| assert!(fs::metadata(m.path("none")).is_err()));
    show("stat of a missing name, again", &d);
    soft(&mut errs, d == Counts::new(), &d);

    // create + write + close, as std::fs::write does it: CREATE (which
    // carries the attributes: no GETATTR), the first write's check for
    // security.capability (GETXATTR), WRITE, RELEASE; no FLUSH. The LOOKUP
    // of the new name is answered by the cached negative entry.
    let d = c.delta(|| fs::write(m.path("none"), b"hello").unwrap());
    show(
        "create+write+close (std::fs::write), negative entry cached",
        &d,
    );
    let want = counts(&[("CREATE", 1), ("GETXATTR", 1), ("WRITE", 1), ("RELEASE", 1)]);
    soft(&mut errs, d == want, &d);
    // The same on a name never looked up, and the parent directory changed
    // by the create before (its attributes were invalidated by the kernel).
    let d = c.delta(|| fs::write(m.path("new"), b"hello").unwrap());
    show("create+write+close (std::fs::write)", &d);
    let want = counts(&[
        ("LOOKUP", 1),
        ("GETATTR", 1),
        ("CREATE", 1),
        ("GETXATTR", 1),
        ("WRITE", 1),
        ("RELEASE", 1),
    ]);
    soft(&mut errs, d == want, &d);
    // Python adds isatty's TCGETS (an IOCTL) and one LOOKUP: at most 6.
    let py = m.path("py").display().to_string();
    let d = c.delta(|| sh(&format!("python3 -c \"open('{py}','wb').write(b'hello')\"")));
    show("create+write+close (python3)", &d);
    soft(&mut errs, total(&d) <= 7, &d);
    soft(&mut errs, d.get("IOCTL") == Some(&1), &d);
    soft(&mut errs, d.get("CREATE") == Some(&1), &d);
    soft(&mut errs, !d.contains_key("FLUSH"), &d);

    let d = c.delta(|| fs::create_dir(m.path("dir")).unwrap());
    show("mkdir", &d);
    soft(&mut errs, d.get("MKDIR") == Some(&1) && total(&d) <= 3, &d);
    let d = c.delta(|| fs::remove_file(m.path("new")).unwrap());
    show("unlink", &d);
    soft(&mut errs, d.get("UNLINK") == Some(&1) && total(&d) <= 2, &d);
    let d = c.delta(|| fs::rename(m.path("py"), m.path("dir/py2")).unwrap());
    show("rename", &d);
    soft(&mut errs, d.get("RENAME") == Some(&1) && total(&d) <= 4, &d);

    // readdir of 1,000 entries.
    let big = m.path("big").display().to_string();
    let d = c.delta(|| sh(&format!("ls {big} >/dev/null")));
    show("ls, 1,000 entries, cold", &d);
    // READDIRPLUS replies of about 200 entries (32 KiB each), the last
    // one empty: every entry comes with its attributes, so the ls -l
    // below needs no LOOKUP.
    soft(&mut errs, total(&d) <= 10, &d);
    soft(&mut errs, !d.contains_key("READDIR"), &d);
    soft(&mut errs, d.get("READDIRPLUS").is_some_and(|&n| n <= 6), &d);
    let d = c.delta(|| sh(&format!("ls {big} >/dev/null")));
    show("ls, 1,000 entries, warm", &d);
    // The listing stays in the kernel's cache (FOPEN_CACHE_DIR): only
    // OPENDIR and RELEASEDIR, and the directory's atime once.
    soft(&mut errs, !d.contains_key("READDIR"), &d);
    soft(&mut errs, total(&d) <= 3, &d);
    let d = c.delta(|| sh(&format!("ls -l {big} >/dev/null")));
    show("ls -l, 1,000 entries, after ls", &d);
    // The listing and every entry's attributes are cached: ls -l reads
    // the access ACL of each file, which the kernel forgot when READDIRPLUS
    // refreshed the inode, and security.selinux once: the first answer
    // (not supported) tells ls to ask no more on this device.
    soft(&mut errs, !d.contains_key("LOOKUP"), &d);
    soft(&mut errs, !d.contains_key("GETATTR"), &d);
    soft(&mut errs, total(&d) <= 1000 + 5, &d);
    let d = c.delta(|| sh(&format!("ls -l {big} >/dev/null")));
    show("ls -l, 1,000 entries, warm", &d);
    // Warm: the access ACLs are cached too; one security.selinux is left.
    soft(&mut errs, !d.contains_key("LOOKUP"), &d);
    soft(&mut errs, total(&d) <= 6, &d);
    // getfattr of the label of a file without one says so too; one that is
    // set is kept and read back, as on ext4 (a copy that carries labels).
    let label = |args: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("{args} {big}/f0000"))
            .output()
            .expect("sh");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            err,
        )
    };
    let (ok, _, err) = label("getfattr -n security.selinux");
    assert!(!ok && err.contains("Operation not supported"), "{err}");
    let (ok, _, err) = label("setfattr -n security.selinux -v system_u:object_r:x_t:s0");
    assert!(ok, "{err}");
    let (ok, out, err) = label("getfattr --only-values -n security.selinux");
    assert!(ok && out == "system_u:object_r:x_t:s0", "{out} {err}");

    // cp -a of a small tree (16 names) and rm -rf of it.
    let src = Tmpfs::new();
    small_tree(src.root());
    let tree = m.path("tree").display().to_string();
    let from = src.root().display().to_string();
    let d = c.delta(|| sh(&format!("cp -a {from} {tree}")));
    show("cp -a, 4 directories, 12 files, 1 symlink", &d);
    soft(&mut errs, !d.contains_key("FLUSH"), &d);
    // Mostly what cp -a asks for: per file CREATE, WRITE, RELEASE, two
    // SETATTRs (owner, times) and the access ACL (SETXATTR), and the
    // first write's security.capability check; per directory MKDIR and
    // its default ACL removed (REMOVEXATTR).
    soft(&mut errs, total(&d) <= 128, &d);
    let d = c.delta(|| sh(&format!("rm -rf {tree}")));
    show("rm -rf of it", &d);
    // Per directory OPENDIR, READDIRPLUS (and a READDIR or plus for the
    // empty end), RELEASEDIR, RMDIR, a GETATTR; per file UNLINK.
    soft(&mut errs, total(&d) <= 63, &d);
    assert!(!m.path("tree").exists());
    drop(c);
    m.unmount();
    assert!(errs.is_empty(), "counts off:\n{}", errs.join("\n"));
}

/// What changes behind the kernel's back is seen at once despite the long
/// timeouts: a name another process creates after a negative lookup, a
/// clone destination's size and bytes, set-ID bits the daemon clears.
#[test]
fn nothing_goes_stale() {
    private_mount_namespace();
    let img = Image::new("rt-stale", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    // A negative entry, then the name made by another process.
    assert!(fs::metadata(m.path("later")).is_err());
    sh(&format!("echo hi > {}", m.path("later").display()));
    assert_eq!(fs::read(m.path("later")).unwrap(), b"hi\n");
    // A hard link and a rename make a name too.
    assert!(fs::metadata(m.path("linked")).is_err());
    assert!(fs::metadata(m.path("moved")).is_err());
    sh(&format!(
        "ln {0}/later {0}/linked && mv {0}/linked {0}/moved",
        m.root().display()
    ));
    assert_eq!(fs::metadata(m.path("later")).unwrap().nlink(), 2);
    assert!(fs::metadata(m.path("linked")).is_err());
    assert_eq!(fs::read(m.path("moved")).unwrap(), b"hi\n");

    // A cached listing (FOPEN_CACHE_DIR) follows every change of names.
    fs::create_dir(m.path("d")).unwrap();
    let names = || {
        let mut v: Vec<String> = fs::read_dir(m.path("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert!(names().is_empty() && names().is_empty());
    let d = m.path("d").display().to_string();
    sh(&format!("touch {d}/x"));
    assert_eq!(names(), ["x"]);
    sh(&format!("mv {d}/x {d}/y && ln {d}/y {d}/z"));
    assert_eq!(names(), ["y", "z"]);
    sh(&format!("rm {d}/y"));
    assert_eq!(names(), ["z"]);

    // Clone: the destination's cached size and pages are dropped.
    fs::write(m.path("src"), pattern(1, 3 * 4096)).unwrap();
    fs::write(m.path("dst"), b"old").unwrap();
    assert_eq!(fs::metadata(m.path("dst")).unwrap().len(), 3);
    assert_eq!(fs::read(m.path("dst")).unwrap(), b"old");
    daxlink::tools::client::reflink(&m.path("src"), &m.path("dst"), 0, 0, 0).unwrap();
    assert_eq!(fs::metadata(m.path("dst")).unwrap().len(), 3 * 4096);
    assert_eq!(fs::read(m.path("dst")).unwrap(), pattern(1, 3 * 4096));

    // A write by another user clears set-user-ID: stat shows it at once.
    fs::set_permissions(m.path("src"), fs::Permissions::from_mode(0o4777)).unwrap();
    assert_eq!(fs::metadata(m.path("src")).unwrap().mode() & 0o7777, 0o4777);
    let src = m.path("src").display().to_string();
    let (rc, err) = run_as(65534, 65534, &format!("echo x >> {src}"));
    assert_eq!(rc, 0, "{err}");
    assert_eq!(fs::metadata(m.path("src")).unwrap().mode() & 0o7777, 0o777);
    m.unmount();
}

/// The kernel keeps a directory's listing only while a listing would not
/// update its access time: under strictatime every `ls` reaches the daemon.
#[test]
fn cached_listings_keep_the_atime_rules() {
    private_mount_namespace();
    for (opts, moves) in [("strictatime", true), ("", false)] {
        let img = Image::new("rt-atime", 64 << 20);
        let m = Mounted::new(&img.path, opts);
        fs::create_dir(m.path("d")).unwrap();
        File::create(m.path("d/f")).unwrap();
        let atime = || {
            let md = fs::metadata(m.path("d")).unwrap();
            (md.atime(), md.atime_nsec())
        };
        assert_eq!(fs::read_dir(m.path("d")).unwrap().count(), 1);
        let a1 = atime();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fs::read_dir(m.path("d")).unwrap().count(), 1);
        let a2 = atime();
        assert_eq!(a2 > a1, moves, "-o {opts}: atime {a1:?} then {a2:?}");
        m.unmount();
    }
}

#[test]
fn negative_entries_are_cached_and_replaced() {
    private_mount_namespace();
    let img = Image::new("rt-neg", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let mut c = Counter::new(&m);
    let d = c.delta(|| {
        for _ in 0..10 {
            assert!(fs::metadata(m.path("ghost")).is_err());
        }
    });
    assert_eq!(d, counts(&[("LOOKUP", 1)]), "10 stats of a missing name");
    File::create(m.path("ghost")).unwrap();
    assert!(fs::metadata(m.path("ghost")).is_ok());
    fs::remove_file(m.path("ghost")).unwrap();
    // After an unlink the kernel asks once more (it drops the entry's
    // timeout itself, and the directory's attributes), and caches the
    // answer again.
    let d = c.delta(|| assert!(fs::metadata(m.path("ghost")).is_err()));
    assert_eq!(d, counts(&[("GETATTR", 1), ("LOOKUP", 1)]));
    let d = c.delta(|| assert!(fs::metadata(m.path("ghost")).is_err()));
    assert_eq!(d, Counts::new(), "the negative entry is cached again");
    drop(c);
    m.unmount();
}

#[test]
fn counters_are_for_the_administrator_or_the_roots_owner() {
    private_mount_namespace();
    let img = Image::new("rt-perm", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    let root = m.root().display().to_string();
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let (rc, err) = run_as(65534, 65534, &format!("{DAXLINK} counters {root}"));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // The owner of the mount's root may.
    std::os::unix::fs::chown(m.root(), Some(65534), Some(65534)).unwrap();
    let (rc, err) = run_as(65534, 65534, &format!("{DAXLINK} counters {root}"));
    assert_eq!(rc, 0, "{err}");
    // Not on another file of the mount: only on its root.
    fs::write(m.path("f"), b"x").unwrap();
    let mut c = Command::new(DAXLINK);
    c.arg("counters").arg(m.path("f"));
    let o = run_deadline(c, 30);
    assert_eq!(o.rc, 1);
    assert!(o.stderr.contains("not the root"), "{}", o.stderr);
    // --json and --reset: a reset zeroes, the next read shows only itself
    // (OPENDIR, IOCTL; RELEASEDIR of the reset's own open may follow).
    daxlink(&[&"counters", &"--reset", &root]);
    let mut c = Command::new(DAXLINK);
    c.args(["counters", "--json", &root]);
    let o = run_deadline(c, 30);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["total"]["IOCTL"], 1, "{v}");
    assert!(v["requests"].as_u64().unwrap() <= 4, "{v}");
    m.unmount();
}

/// With transport=uring, the requests the queue threads serve count as
/// `ring`: a cached open+read+close is served there entirely.
#[test]
fn ring_served_requests_are_counted_as_ring() {
    private_mount_namespace();
    let _ = Command::new("modprobe").arg("fuse").status();
    let sw = "/sys/module/fuse/parameters/enable_uring";
    let on = fs::read_to_string(sw).unwrap_or_else(|e| panic!("{sw}: {e}"));
    assert_eq!(on.trim(), "Y", "FUSE over io_uring is off ({sw})");
    let img = Image::new("rt-ring", 64 << 20);
    let m = Mounted::new(&img.path, "transport=uring");
    fs::write(m.path("f"), pattern(3, 10_000)).unwrap();
    let mut c = Counter::new(&m);
    let (all, ring) = c.delta_split(|| {
        // Read on every CPU's queue by moving this thread; the read goes to
        // the daemon (O_DIRECT would bypass the cache but not the counts).
        let d = fs::read(m.path("f")).unwrap();
        assert_eq!(d, pattern(3, 10_000));
    });
    assert!(ring.contains_key("OPEN"), "all {all:?} ring {ring:?}");
    assert_eq!(ring.get("RELEASE"), all.get("RELEASE"), "{all:?} {ring:?}");
    let (_, ring) = c.delta_split(|| {
        let _ = fs::metadata(m.path("missing"));
    });
    assert_eq!(ring, counts(&[("LOOKUP", 1)]));
    // An xattr read on the ring: a size query, the value, a buffer too small.
    let f = std::ffi::CString::new(m.path("f").into_os_string().into_encoded_bytes()).unwrap();
    let k = c"user.k";
    let v: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    // SAFETY: valid C strings and a buffer of v.len() bytes.
    let r = unsafe { libc::setxattr(f.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    let get = |len: usize| {
        let mut b = vec![0u8; len];
        // SAFETY: valid C strings and a buffer of `len` bytes.
        let n = unsafe { libc::getxattr(f.as_ptr(), k.as_ptr(), b.as_mut_ptr().cast(), len) };
        let e = std::io::Error::last_os_error().raw_os_error();
        (n, b, e)
    };
    let (all, ring) = c.delta_split(|| {
        assert_eq!(get(0).0, 300);
        let (n, b, _) = get(400);
        assert_eq!((n, &b[..300]), (300, &v[..]));
        let (n, _, e) = get(10);
        assert_eq!((n, e), (-1, Some(libc::ERANGE)));
    });
    assert_eq!(ring.get("GETXATTR"), Some(&3), "all {all:?} ring {ring:?}");
    drop(c);
    m.unmount();
}
