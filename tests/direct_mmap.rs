//! Direct mmap: a python3 process under `daxlink run`
//! maps a daxlink file with its `mmap` module (libc's mmap/munmap, which
//! the shim serves: the image's blocks themselves, under a pin for the
//! mapping's life), while other processes (python3 or coreutils without
//! the shim: the kernel path) truncate the file and write others. What the
//! page models decide, with real processes: upstream makes the truncate
//! wait for the munmap (EBUSY after layout_timeout_ms), proxy lets it go
//! ahead while the mapping keeps its blocks (freed at munmap), legacy frees
//! and reuses them under the mapping: the process's stores land in another
//! file. Every test asserts that the mapping was direct (the shim's debug
//! line), so none can pass on the kernel's FUSE mmap.
//!
//! Needs the shim built beside daxlink: `cargo build --release --workspace`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use daxlink::fuse::ioctl;
use daxlink::tools::client;
use daxlink_direct::wire;

/// Python prelude: `other(argv)` runs a command without the shim (another
/// process, on the kernel path); `check` fails the script with a message.
const PRELUDE: &str = r#"
import os, sys, subprocess, time, mmap
PLAIN = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', 'DAXLINK_DIRECT_DEBUG')}
def other(*argv):
    return subprocess.run([str(a) for a in argv], env=PLAIN, capture_output=True)
def kread(path):
    r = other(sys.executable, '-c', 'import sys; sys.stdout.buffer.write(open(sys.argv[1], "rb").read())', path)
    assert r.returncode == 0, r.stderr
    return r.stdout
def free(d):
    return os.statvfs(d).f_bfree
def check(cond, what):
    if not cond:
        print('FAILED:', what, flush=True); sys.exit(1)
def rw_map(path, n):
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, n, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)  # the mapping, not the descriptor, holds the pin
    return m
"#;

/// Run `script` under `daxlink run` (debug lines on) with `args`.
fn py_direct_rc(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    shim();
    need("python3");
    need("truncate");
    let mut c = Command::new(DAXLINK);
    c.args(["run", "--", "python3", "-c"])
        .arg(format!("{PRELUDE}\n{script}"))
        .args(args.iter().map(|a| a.as_ref()))
        .env("DAXLINK_DIRECT_DEBUG", "1");
    run_deadline(c, 180)
}

/// Run `script` under `daxlink run` (debug lines on) with `args`; it must
/// succeed, and the shim must have mapped `direct` files directly.
fn py_direct(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>], direct: usize) -> Out {
    shim();
    need("python3");
    need("truncate");
    let mut c = Command::new(DAXLINK);
    c.args(["run", "--", "python3", "-c"])
        .arg(format!("{PRELUDE}\n{script}"))
        .args(args.iter().map(|a| a.as_ref()))
        .env("DAXLINK_DIRECT_DEBUG", "1");
    let o = run_deadline(c, 120);
    assert_eq!(
        o.rc, 0,
        "python under daxlink run failed\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    let maps = o
        .stderr
        .lines()
        .filter(|l| l.contains("mmap of fd") && l.contains(": direct,"))
        .count();
    let ends = o
        .stderr
        .lines()
        .filter(|l| l.contains("munmap: direct mapping at"))
        .count();
    assert_eq!(
        (maps, ends),
        (direct, direct),
        "expected {direct} direct mappings made and ended\n{}",
        o.stderr
    );
    o
}

fn mount(model: &str) -> (Image, Mounted) {
    let img = Image::new("dmmap", 64 << 20);
    let m = Mounted::new(
        &img.path,
        &format!("page_model={model},layout_timeout_ms=300"),
    );
    (img, m)
}

#[test]
fn a_mapping_reads_the_file_and_its_stores_reach_kernel_readers() {
    let (img, m) = mount("proxy");
    let f = m.path("f");
    std::fs::write(&f, pattern(1, 20000)).unwrap();
    // A sparse file: a read pin maps its holes as zero pages.
    let s = m.path("sparse");
    let sf = std::fs::File::create(&s).unwrap();
    sf.set_len(3 * 4096).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sf, &[b'D'; 4096], 4096).unwrap();
    drop(sf);
    py_direct(
        r#"
f, s = sys.argv[1], sys.argv[2]
want = kread(f)
m = rw_map(f, 20000)
check(m[:20000] == want, 'the mapping reads the file')
m[100:200] = b'Q' * 100
m[19990:20000] = b'E' * 10
got = kread(f)
check(got[100:200] == b'Q' * 100 and got[19990:] == b'E' * 10, 'a kernel-path reader sees the stores')
check(got[:100] == want[:100] and got[200:19990] == want[200:19990], 'nothing else changed')
t0 = os.stat(f).st_mtime_ns
time.sleep(0.05)
m.close()
check(os.stat(f).st_mtime_ns > t0, 'munmap of a written mapping sets mtime')
fd = os.open(s, os.O_RDONLY)
r = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ)
os.close(fd)
check(r[:4096] == bytes(4096) and r[4096:8192] == b'D' * 4096 and r[8192:] == bytes(4096), 'holes read as zeros')
r.close()
check(len(kread(s)) == 3 * 4096, 'the read mapping allocated nothing and changed no size')
"#,
        &[&f, &s],
        2,
    );
    assert_eq!(&std::fs::read(&f).unwrap()[100..104], b"QQQQ");
    m.unmount();
    fsck_clean(&img.path);
}

/// A forked child inherits the mapping; its munmap (and exit) leaves the
/// parent's pin alone, and so does the parent's closing every descriptor
/// (closerange, close): the truncate still waits until the parent's munmap.
#[test]
fn upstream_a_forked_childs_munmap_leaves_the_parents_pin() {
    let (img, m) = mount("upstream");
    let f = m.path("f");
    std::fs::write(&f, vec![b'A'; 8192]).unwrap();
    py_direct(
        r#"
f = sys.argv[1]
m = rw_map(f, 8192)
pid = os.fork()
if pid == 0:
    m[0:5] = b'CHILD'
    m.close()
    os._exit(0)
_, st = os.waitpid(pid, 0)
check(st == 0, 'child')
# A program closing every descriptor it did not open spares the pin's.
os.closerange(3, 1 << 16)
for fd in range(3, 64):
    try:
        os.close(fd)
    except OSError:
        pass
check(m[0:5] == b'CHILD', 'the child stored through the shared mapping')
r = other('truncate', '-s', '0', f)
check(r.returncode != 0 and b'busy' in r.stderr.lower(), 'the parent still pins: %r' % (r,))
m.close()
r = other('truncate', '-s', '0', f)
check(r.returncode == 0, 'after the parent\'s munmap: %r' % (r,))
"#,
        &[&f],
        1,
    );
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn upstream_a_truncate_or_punch_of_a_mapped_file_waits_for_the_munmap() {
    need("fallocate");
    let (img, m) = mount("upstream");
    let f = m.path("f");
    std::fs::write(&f, vec![b'A'; 16384]).unwrap();
    py_direct(
        r#"
f = sys.argv[1]
m = rw_map(f, 16384)
m[0:4] = b'WXYZ'
t = time.monotonic()
r = other('truncate', '-s', '0', f)
took = time.monotonic() - t
check(r.returncode != 0 and b'busy' in r.stderr.lower(), 'truncate under the mapping: EBUSY, got %r' % (r,))
check(took >= 0.25, 'EBUSY after layout_timeout_ms (took %.3f s)' % took)
check(os.stat(f).st_size == 16384 and kread(f)[:4] == b'WXYZ', 'the file is untouched')
r = other('fallocate', '-p', '-o', '4096', '-l', '4096', f)
check(r.returncode != 0 and b'busy' in r.stderr.lower(), 'a punch under the mapping: EBUSY, got %r' % (r,))
m.close()
r = other('truncate', '-s', '0', f)
check(r.returncode == 0, 'after munmap the truncate goes through: %r' % (r,))
check(os.stat(f).st_size == 0, 'truncated')
"#,
        &[&f],
        1,
    );
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn proxy_a_truncate_goes_ahead_and_the_mapping_keeps_its_blocks_until_munmap() {
    let (img, m) = mount("proxy");
    let f = m.path("f");
    let c = m.path("c");
    std::fs::write(&f, vec![b'A'; 16384]).unwrap();
    std::fs::write(&c, vec![b'C'; 16384]).unwrap();
    py_direct(
        r#"
f, c, g, d = sys.argv[1:5]
m = rw_map(f, 16384)
before = free(d)
r = other('truncate', '-s', '0', f)
check(r.returncode == 0, 'truncate under the mapping goes ahead: %r' % (r,))
check(os.stat(f).st_size == 0, 'truncated')
check(free(d) <= before, 'the mapped blocks are not freed yet (%d, was %d)' % (free(d), before))
r = other('sh', '-c', 'head -c 16384 /dev/zero | tr "\\0" G > "$0"', g)
check(r.returncode == 0, r)
for p in range(4):
    m[p * 4096:p * 4096 + 8] = b'MAPPED%02d' % p
check(m[4096:4104] == b'MAPPED01', 'the mapping keeps its blocks')
check(kread(g) == b'G' * 16384, 'no other file changed (new file)')
check(kread(c) == b'C' * 16384, 'no other file changed (old file)')
check(kread(f) == b'', 'the truncated file stays empty')
held = free(d)
m.close()
check(free(d) >= held + 4, 'munmap frees the 4 blocks (%d, was %d)' % (free(d), held))
"#,
        &[&f, &c, &m.path("g"), &m.root()],
        1,
    );
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn legacy_the_mapping_writes_into_the_file_that_reuses_its_blocks() {
    // The bug the project demonstrates: expected to break isolation.
    let (img, m) = mount("legacy");
    let f = m.path("f");
    std::fs::write(&f, vec![b'A'; 16384]).unwrap();
    py_direct(
        r#"
f, g = sys.argv[1:3]
m = rw_map(f, 16384)
r = other('truncate', '-s', '0', f)
check(r.returncode == 0, 'truncate under the mapping goes ahead: %r' % (r,))
r = other('sh', '-c', 'head -c 16384 /dev/zero | tr "\\0" G > "$0"', g)
check(r.returncode == 0, r)
for p in range(4):
    m[p * 4096:p * 4096 + 8] = b'MAPPED%02d' % p
got = kread(g)
hits = [p for p in range(4) if b'MAPPED%02d' % p in got]
check(hits, 'the freed blocks went to the new file and the stores landed there: %r' % got[:64])
print('corrupted pages of the new file:', hits, flush=True)
m.close()
"#,
        &[&f, &m.path("g")],
        1,
    );
    let g = std::fs::read(m.path("g")).unwrap();
    assert!(
        g.windows(6).any(|w| w == b"MAPPED"),
        "another process's stores are in g"
    );
    m.unmount();
    drop(img);
}

/// A clone *from* a mapped file: the mapping's block must not become
/// shared with the clone (its stores would show in the other file). Proxy
/// gives the clone a copy of the pinned block (PAGES.md), upstream waits
/// (EBUSY), legacy shares it and the stores show through the clone.
#[test]
fn a_clone_from_a_mapped_file_shares_its_block_under_legacy_only() {
    for model in ["proxy", "upstream", "legacy"] {
        let (img, m) = mount(model);
        let f = m.path("f");
        std::fs::write(&f, vec![b'A'; 8192]).unwrap();
        let o = py_direct(
            r#"
f, g, daxlink, model = sys.argv[1:5]
m = rw_map(f, 8192)
r = other(daxlink, 'reflink', f, g)
if model == 'upstream':
    check(r.returncode != 0 and b'busy' in (r.stderr + r.stdout).lower(), 'clone from a mapped file: EBUSY, got %r' % (r,))
    m.close()
    sys.exit(0)
check(r.returncode == 0, 'clone: %r' % (r,))
m[0:8] = b'MAPPED00'
got = kread(g)
print('clone reads:', got[:8], flush=True)
check(kread(f)[:8] == b'MAPPED00', 'the mapped file has the stores')
if model == 'proxy':
    check(got == b'A' * 8192, 'the clone does not see the mapping\'s stores')
else:
    check(got[:8] == b'MAPPED00', 'legacy: the clone shares the pinned block and sees the stores')
m.close()
"#,
            &[&f, &m.path("g"), &DAXLINK, &model],
            1,
        );
        assert!(o.rc == 0, "{model}: {}", o.stdout);
        m.unmount();
        if model != "legacy" {
            fsck_clean(&img.path);
        }
    }
}

fn pinmap(f: &std::fs::File, pin: u64, from: u64) -> std::io::Result<wire::PinMapReply> {
    let mut b = vec![0u8; wire::PINMAP_SIZE];
    wire::pinmap_request((&mut b[..]).try_into().unwrap(), pin, from);
    ioctl::call(f, ioctl::Cmd::PINMAP, &mut b)?;
    Ok(wire::PinMapReply::decode(&b).unwrap())
}

/// PINMAP (what the client maps): a pin's blocks are the file's blocks as
/// EXTENTS shows them, in runs; a read pin's hole is the zero page; only
/// the open file holding the pin may ask, for pages the pin has.
#[test]
fn pinmap_gives_the_pins_blocks_to_its_holder_only() {
    let (img, m) = mount("proxy");
    let f = m.path("f");
    std::fs::write(&f, pattern(3, 3 * 4096)).unwrap();
    let rw = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&f)
            .unwrap()
    };
    let (a, b) = (rw(), rw());
    let h = client::pin(&a, 0, 3 * 4096, true, true).unwrap();
    let r = pinmap(&a, h, 0).unwrap();
    assert_eq!((r.index, r.pages, r.next), (0, 3, u64::MAX));
    assert_eq!(r.flags, wire::PINMAP_WRITE);
    let ext = client::extents(&f).unwrap();
    let mut want = Vec::new();
    for e in &ext {
        want.extend((0..e.length / 4096).map(|i| e.physical + i));
    }
    let mut got = Vec::new();
    for run in &r.runs {
        got.extend((0..run.count).map(|i| run.pblock + i));
    }
    assert_eq!(got, want, "the pin's blocks are the file's");
    let tail = pinmap(&a, h, 2).unwrap();
    assert_eq!(tail.runs.iter().map(|r| r.count).sum::<u64>(), 1);
    assert_eq!(errno_of(pinmap(&b, h, 0)), libc::EPERM, "another open file");
    assert_eq!(errno_of(pinmap(&a, h, 4)), libc::EINVAL, "past the pin");
    assert_eq!(
        errno_of(pinmap(&a, h + 100, 0)),
        libc::EINVAL,
        "no such pin"
    );
    // A read pin over a hole: the zero page, nothing allocated.
    let s = m.path("sparse");
    std::fs::File::create(&s)
        .unwrap()
        .set_len(2 * 4096)
        .unwrap();
    let sf = std::fs::File::open(&s).unwrap();
    let hs = client::pin(&sf, 0, 2 * 4096, false, true).unwrap();
    let r = pinmap(&sf, hs, 0).unwrap();
    assert_eq!(r.flags, 0);
    assert_eq!(
        r.runs,
        vec![wire::PinRun {
            pblock: wire::PIN_ZERO,
            count: 2
        }]
    );
    drop((a, b, sf));
    m.unmount();
    fsck_clean(&img.path);
}

/// A mapping's pin lives in its process: kill -9 of the process (no
/// munmap) ends it, as the kernel closes the process's files (RELEASE).
#[test]
fn upstream_the_pin_of_a_killed_process_goes_with_it() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    shim();
    need("python3");
    let (img, m) = mount("upstream");
    let f = m.path("f");
    std::fs::write(&f, vec![b'A'; 8192]).unwrap();
    let mut c = Command::new(DAXLINK);
    c.args(["run", "--", "python3", "-c"])
        .arg(format!(
            "{PRELUDE}\nm = rw_map(sys.argv[1], 8192)\nprint('mapped', flush=True)\ntime.sleep(120)"
        ))
        .arg(&f)
        .env("DAXLINK_DIRECT_DEBUG", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "mapped");
    let t = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    let busy = t.set_len(0);
    child.kill().unwrap();
    let _ = child.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(": direct, 2 pages"),
        "not mapped directly:\n{err}"
    );
    assert_eq!(
        errno_of(busy),
        libc::EBUSY,
        "the mapping's pin holds the truncate"
    );
    // The kernel closes the dead process's files; the daemon's RELEASE unpins.
    let t0 = std::time::Instant::now();
    loop {
        match t.set_len(0) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && t0.elapsed().as_secs() < 10 => {}
            Err(e) => panic!("truncate after the holder died: {e}"),
        }
    }
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 0);
    drop(t);
    m.unmount();
    fsck_clean(&img.path);
}

/// `daxlink demo --real`: the scenarios' write pins are daxlink-holder
/// processes' direct mappings and the device's writes their stores; legacy
/// still corrupts another file (S1: C reads the holder's bytes), upstream
/// blocks, proxy stays safe, and the steps name the holder process.
#[test]
fn demo_real_a_holder_process_corrupts_under_legacy_only() {
    shim();
    let holder = Path::new(DAXLINK).parent().unwrap().join("daxlink-holder");
    assert!(holder.is_file(), "{} is missing", holder.display());
    let mut c = Command::new(DAXLINK);
    c.args(["demo", "--real", "--page-model", "all", "--json"]);
    let out = run_deadline(c, 300);
    assert_eq!(out.rc, 0, "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let res = v["results"].as_array().unwrap();
    let get = |s: &str, m: &str| {
        res.iter()
            .find(|r| r["scenario"] == s && r["model"] == m)
            .unwrap()
            .clone()
    };
    let held = |r: &serde_json::Value| {
        r["steps"].as_array().unwrap().iter().any(|s| {
            s.as_str()
                .unwrap()
                .contains("(daxlink-holder) stores through its mapping")
        })
    };
    for s in ["S1", "S2", "S4", "S5", "S8"] {
        for m in ["legacy", "proxy"] {
            assert!(
                held(&get(s, m)),
                "{s} under {m}: no holder process stored\n{}",
                get(s, m)
            );
        }
    }
    let s1 = get("S1", "legacy");
    assert_eq!(s1["outcome"], "corrupted");
    assert!(
        s1["steps"].as_array().unwrap().iter().any(|s| s
            .as_str()
            .unwrap()
            .contains("C reads X (the block was reused) [pid")),
        "{s1}"
    );
    for s in ["S1", "S2", "S8"] {
        assert_eq!(get(s, "upstream")["outcome"], "blocked", "{s}");
    }
    assert!(res
        .iter()
        .filter(|r| r["model"] == "proxy")
        .all(|r| r["outcome"] == "safe"));
    assert!(res
        .iter()
        .filter(|r| r["model"] == "upstream")
        .all(|r| r["outcome"] != "corrupted"));
    assert_eq!(v["ok"], true);
}

/// A small coherence run with direct mmap holds: one
/// client maps files and stores through its mappings while other
/// processes overwrite, truncate and rewrite them; after every step every
/// file must read as a model says (a store through an attached mapping
/// lands in its file; once the file's layout changed under it, the
/// mapping's stores must land nowhere a reader sees). Proxy and upstream
/// never fail; legacy is expected to fail its isolation check (the freed
/// blocks are reused and the mapping writes into them).
#[test]
fn coherence_with_mmap_holds_fails_isolation_under_legacy_only() {
    for (model, expect) in [("proxy", 0), ("upstream", 0), ("legacy", 3)] {
        let (img, m) = mount(model);
        let o = py_direct_rc(
            r#"
import random
d, model = sys.argv[1], sys.argv[2]
rnd = random.Random(1)
N, SZ = 3, 16384
files = [os.path.join(d, 'f%d' % i) for i in range(N)]
model_ = []
for i, f in enumerate(files):
    b = bytes([65 + i]) * SZ
    other(sys.executable, '-c', 'import sys; open(sys.argv[1], "wb").write(bytes.fromhex(sys.argv[2]))', f, b.hex())
    model_.append(bytearray(b))
maps = {}  # i -> [mmap, attached]
def kwrite(i, off, data):
    return other(sys.executable, '-c', 'import sys; f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))', files[i], off, data.hex())
for step in range(60):
    i = rnd.randrange(N)
    op = rnd.choice(['map', 'store', 'store', 'store', 'kwrite', 'renew', 'unmap'])
    what = '%d %s f%d' % (step, op, i)
    if op == 'map' and i not in maps:
        maps[i] = [rw_map(files[i], SZ), True]
    elif op == 'unmap' and i in maps:
        maps.pop(i)[0].close()
    elif op == 'store' and i in maps:
        off = rnd.randrange(SZ - 64)
        data = bytes(rnd.randrange(256) for _ in range(64))
        mm, attached = maps[i]
        mm[off:off + 64] = data
        if attached:
            model_[i][off:off + 64] = data
    elif op == 'kwrite':
        off = rnd.randrange(SZ - 64)
        data = bytes(rnd.randrange(256) for _ in range(64))
        check(kwrite(i, off, data).returncode == 0, what)
        model_[i][off:off + 64] = data
        if i in maps and maps[i][1]:
            check(maps[i][0][off:off + 64] == data, what + ': the mapping sees a kernel write')
    elif op == 'renew':
        # Another process truncates the file and writes it anew.
        r = other('truncate', '-s', '0', files[i])
        if r.returncode != 0:
            check(model == 'upstream' and i in maps and b'busy' in r.stderr.lower(), what + ': %r' % (r,))
            continue
        check(not (model == 'upstream' and i in maps), what + ': upstream truncated under a mapping')
        b = bytes(rnd.randrange(256) for _ in range(SZ))
        check(kwrite(i, 0, b).returncode == 0, what)
        model_[i][:] = b
        if i in maps:
            maps[i][1] = False
    for j in range(N):
        if kread(files[j]) != bytes(model_[j]):
            print('ISOLATION BROKEN at step', what, ': f%d differs from the model' % j, flush=True)
            sys.exit(3)
for mm, _ in maps.values():
    mm.close()
print('coherent', flush=True)
"#,
            &[&m.root(), &model],
        );
        assert_eq!(
            o.rc, expect,
            "{model}\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        assert!(
            o.stderr.contains(": direct,"),
            "{model}: no direct mapping\n{}",
            o.stderr
        );
        m.unmount();
        if model != "legacy" {
            fsck_clean(&img.path);
        }
        drop(img);
    }
}
