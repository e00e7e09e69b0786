//! Direct access, from the client's side: programs run under
//! `daxlink run` (the libdaxlink_client.so shim preloaded) on real mounts.
//! The programs are fio and python3 (its `os.pread`, `os.dup2`, `os.fork`
//! are libc's, so the shim serves them); `DAXLINK_DIRECT_DEBUG=1` makes the
//! shim print its decisions and, at exit, how many reads and writes it
//! served directly, and `daxlink counters` shows how few READ and WRITE
//! requests reached the daemon. Every test asserts that the direct path was
//! taken, so none can pass on the kernel path alone.
//!
//! Needs the shim built beside daxlink: `cargo build --release --workspace`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::direct::*;
use common::*;

fn counters(m: &Mounted, reset: bool) -> serde_json::Value {
    let root = m.root().to_path_buf();
    let o = if reset {
        daxlink(&[&"counters", &"--json", &"--reset", &root])
    } else {
        daxlink(&[&"counters", &"--json", &root])
    };
    serde_json::from_str(&o.stdout).unwrap()
}

fn requests(c: &serde_json::Value, op: &str) -> u64 {
    c["total"][op].as_u64().unwrap_or(0)
}

fn fio(job: &str, dir: &Path, file: &Path, size: &str) -> Out {
    let mut c = Command::new(DAXLINK);
    c.args(["run", "fio", "--output-format=terse"])
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fio")
                .join(job),
        )
        .env("FIO_DIR", dir)
        .env("FIO_FILE", file)
        .env("FIO_SIZE", size)
        .env("FIO_RUNTIME", "3")
        .env("DAXLINK_DIRECT_DEBUG", "1");
    let o = run_deadline(c, 300);
    assert_eq!(
        o.rc, 0,
        "fio {job} under daxlink run failed\n{}\n{}",
        o.stdout, o.stderr
    );
    o
}

/// The fio jobs run unchanged under `daxlink run`, the written data checked
/// (crc32c in every block, the verify pass reading it back), and the I/O
/// does not reach the daemon: far fewer READ and WRITE requests than I/Os.
#[test]
fn fio_jobs_run_under_daxlink_run_verified_and_direct() {
    need("fio");
    let img = Image::new("dfio", 512 << 20);
    let m = Mounted::new(&img.path, "");
    let f = m.path("v.dat");
    let blocks = (32u64 << 20) / 4096;
    // Written by the kernel first (a sparse file: every write fills a
    // hole, which the kernel path does), so the verify pass and the reads
    // below find allocated blocks; then the random writes are overwrites.
    // Filling holes costs no MAP per write: the map of a file changed by
    // the kernel path is fetched again at most every 10 ms.
    counters(&m, true);
    let o = fio("verify-write.fio", m.root(), &f, "32M");
    let c = counters(&m, true);
    assert!(
        requests(&c, "WRITE") >= blocks && requests(&c, "IOCTL") < blocks / 4,
        "filling a sparse file: {} WRITE, {} IOCTL requests for {blocks} writes\n{}",
        requests(&c, "WRITE"),
        requests(&c, "IOCTL"),
        o.stderr
    );
    let o = fio("verify-write.fio", m.root(), &f, "32M");
    let c = counters(&m, true);
    let writes = requests(&c, "WRITE");
    assert!(
        writes < blocks / 10,
        "{writes} WRITE requests for {blocks} random 4 KiB overwrites: not direct\n{}",
        o.stderr
    );
    let o = fio("verify-only.fio", m.root(), &f, "32M");
    let c = counters(&m, true);
    let reads = requests(&c, "READ");
    assert!(
        reads < blocks / 10,
        "{reads} READ requests for {blocks} verified 4 KiB reads: not direct\n{}",
        o.stderr
    );
    // The jobs without a verify of their own, and a sequential verify job.
    for job in [
        "rand-read.fio",
        "rand-write.fio",
        "seq-write.fio",
        "seq-read.fio",
    ] {
        fio(job, m.root(), &f, "32M");
    }
    let sf = m.path("seq.dat");
    fio("verify-seq.fio", m.root(), &sf, "32M");
    counters(&m, true);
    let o = fio("verify-seq.fio", m.root(), &sf, "32M");
    let c = counters(&m, true);
    assert!(
        requests(&c, "WRITE") + requests(&c, "READ") < 32,
        "sequential 1 MiB overwrite and verify of 32 MiB reached the daemon: {c}\n{}",
        o.stderr
    );
    drop(m);
    fsck_clean(&img.path);
}

/// A setup of two files with known bytes, written through the kernel.
fn two_files(m: &Mounted) -> (PathBuf, PathBuf) {
    let a = m.path("a");
    let b = m.path("b");
    std::fs::write(&a, pattern(1, 256 << 10)).unwrap();
    std::fs::write(&b, pattern(2, 256 << 10)).unwrap();
    (a, b)
}

#[test]
fn dup2_of_another_file_onto_a_direct_fd_reads_the_other_file() {
    let img = Image::new("ddup", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, b) = two_files(&m);
    let o = py_ok(
        r#"
fa = os.open(sys.argv[1], os.O_RDWR); fb = os.open(sys.argv[2], os.O_RDONLY)
check(os.pread(fa, 4096, 8192) == pat(1, 256 << 10)[8192:12288], 'a direct')
os.dup2(fb, fa)
check(os.pread(fa, 4096, 8192) == pat(2, 256 << 10)[8192:12288], 'dup2: the other file')
fc = os.dup(fb); os.close(fb)
check(os.pread(fc, 4096, 0) == pat(2, 256 << 10)[:4096], 'dup')
fd = os.open(sys.argv[1], os.O_RDONLY); fe = os.dup(fd); os.close(fe)
import fcntl
ff = fcntl.fcntl(fc, fcntl.F_DUPFD, fe)
check(ff == fe, 'F_DUPFD reuses the number')
check(os.pread(ff, 4096, 0) == pat(2, 256 << 10)[:4096], 'F_DUPFD onto a closed direct number')
# Duplicates share one file offset; closing one leaves the other direct.
g = os.open(sys.argv[1], os.O_RDONLY); h = os.dup(g)
check(os.read(g, 4096) == pat(1, 8192)[:4096], 'read through the first')
check(os.read(h, 4096) == pat(1, 8192)[4096:], 'read through the duplicate goes on from the shared offset')
check(os.lseek(g, 0, 1) == 8192, 'shared offset')
os.close(h)
check(os.pread(g, 4096, 0) == pat(1, 4096), 'the original after closing its duplicate')
d3 = os.dup2(fb if False else fc, g, inheritable=False)
check(os.pread(g, 4096, 0) == pat(2, 4096), 'dup3 (dup2 with O_CLOEXEC)')
"#,
        &[&a, &b],
    );
    let s = total(&o.stderr);
    assert!(s.reads >= 4, "no direct reads: {s:?}\n{}", o.stderr);
}

#[test]
fn close_and_reopen_of_another_file_on_the_same_fd_number() {
    let img = Image::new("dreopen", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, b) = two_files(&m);
    let o = py_ok(
        r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.fopen.restype = ctypes.c_void_p
libc.fileno.argtypes = [ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
for i in range(20):
    fa = os.open(sys.argv[1], os.O_RDONLY)
    check(os.pread(fa, 4096, 4096) == pat(1, 256 << 10)[4096:8192], 'a')
    os.close(fa)
    fb = os.open(sys.argv[2], os.O_RDWR)
    check(fb == fa, 'same number')
    check(os.pread(fb, 4096, 4096) == pat(2, 256 << 10)[4096:8192], 'b on the same number')
    os.close(fb)
    # stdio closes behind the shim's back: fclose is seen too
    fp = libc.fopen(sys.argv[1].encode(), b'r'); n = libc.fileno(fp)
    check(os.pread(n, 100, 0) == pat(1, 100), 'stdio a'); libc.fclose(fp)
    fb = os.open(sys.argv[2], os.O_RDONLY); check(fb == n, 'same number after close')
    check(os.pread(fb, 100, 0) == pat(2, 100), 'b after a buffered close'); os.close(fb)
    # A number reused by a call the shim does not interpose (pipe2): the
    # close (or fclose) must have forgotten the file.
    for how in ('close', 'fclose'):
        if how == 'close':
            fa = os.open(sys.argv[1], os.O_RDONLY); os.pread(fa, 100, 0); os.close(fa)
        else:
            # stdio's fclose closes through libc's internal close
            fp = libc.fopen(sys.argv[1].encode(), b'r'); fa = libc.fileno(fp)
            os.pread(fa, 100, 0); libc.fclose(fp)
        r, w = os.pipe()
        check(r == fa, 'the pipe has the number')
        try:
            os.pread(r, 100, 0); check(False, 'pread of a pipe after ' + how + ' gave bytes')
        except OSError as e:
            check(e.errno == 29, 'ESPIPE after ' + how)
        os.close(r); os.close(w)
    # close_range (os.closerange) over a direct descriptor
    fa = os.open(sys.argv[1], os.O_RDONLY); os.pread(fa, 100, 0)
    os.closerange(fa, fa + 1)
    r, w = os.pipe(); check(r == fa, 'the pipe has the number after close_range')
    try:
        os.pread(r, 100, 0); check(False, 'pread of a pipe after close_range gave bytes')
    except OSError as e:
        check(e.errno == 29, 'ESPIPE after close_range')
    os.close(r); os.close(w)
"#,
        &[&a, &b],
    );
    let s = total(&o.stderr);
    assert!(s.reads >= 60, "reads were not direct: {s:?}\n{}", o.stderr);
}

#[test]
fn a_forked_child_reads_and_writes_correctly() {
    let img = Image::new("dfork", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, _) = two_files(&m);
    let o = py_ok(
        r#"
fa = os.open(sys.argv[1], os.O_RDWR)
check(os.pread(fa, 4096, 0) == pat(1, 4096), 'parent before fork')
pid = os.fork()
if pid == 0:
    ok = os.pread(fa, 4096, 4096) == pat(1, 8192)[4096:]
    os.pwrite(fa, pat(7, 4096), 16384)
    ok = ok and os.pread(fa, 4096, 16384) == pat(7, 4096)
    print('child', os.getpid(), flush=True)
    sys.stdout.flush(); sys.exit(0 if ok else 3)
_, st = os.waitpid(pid, 0)
check(os.WEXITSTATUS(st) == 0, 'child saw the right bytes')
check(os.pread(fa, 4096, 16384) == pat(7, 4096), "parent sees the child's write")
os.pwrite(fa, pat(8, 4096), 20480)
check(kernel('print(open(sys.argv[1],"rb").read()[20480:24576].hex())', sys.argv[1]).strip() == pat(8, 4096).hex().encode(), 'kernel reader')
"#,
        &[&a],
    );
    let child: u32 = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("child "))
        .expect("child pid")
        .trim()
        .parse()
        .unwrap();
    // The child said Hello again (its own registration) and used it.
    let hello = format!("daxlink-direct[{child}]:");
    assert!(
        o.stderr
            .lines()
            .any(|l| l.starts_with(&hello) && l.contains("direct access to mount")),
        "the child did not register: {}",
        o.stderr
    );
    let s = served(&o.stderr);
    assert!(s.iter().any(|(_, x)| x.writes >= 1), "{s:?}\n{}", o.stderr);
}

#[test]
fn exec_without_the_shim_sees_direct_writes_through_inherited_fds() {
    let img = Image::new("dexec", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, _) = two_files(&m);
    let o = py_ok(
        r#"
fa = os.open(sys.argv[1], os.O_RDWR)
os.set_inheritable(fa, True)
os.pwrite(fa, pat(9, 8192), 4096)
r = subprocess.run([sys.executable, '-c', 'import os,sys; sys.stdout.write(os.pread(int(sys.argv[1]), 8192, 4096).hex())', str(fa)],
                   env=PLAIN, capture_output=True, close_fds=False)
check(r.stdout == pat(9, 8192).hex().encode(), 'exec without the shim reads the direct write')
check(os.pread(fa, 8192, 4096) == pat(9, 8192), 'and so does the shim')
# Spawned children (vfork: they run in this process's memory until exec)
# close their copies of our descriptors: ours stay known.
for i in range(5):
    subprocess.run(['true'], env=PLAIN)
    check(os.pread(fa, 8192, 4096) == pat(9, 8192), 'after a spawn')
print('pid', os.getpid())
"#,
        &[&a],
    );
    assert!(total(&o.stderr).writes >= 1, "{}", o.stderr);
    let pid = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .unwrap()
        .trim();
    let probes = o
        .stderr
        .lines()
        .filter(|l| {
            l.starts_with(&format!("daxlink-direct[{pid}]:")) && l.contains(": direct (ino")
        })
        .count();
    assert_eq!(
        probes, 1,
        "the descriptor was forgotten by a spawn: {}",
        o.stderr
    );
}

#[test]
fn o_append_writes_through_the_kernel_and_reads_stay_direct() {
    let img = Image::new("dappend", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, _) = two_files(&m);
    let o = py_ok(
        r#"
fa = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND)
for i in range(5):
    os.write(fa, pat(20 + i, 1000))
check(os.fstat(fa).st_size == (256 << 10) + 5000, 'appended size')
want = pat(1, 256 << 10) + b''.join(pat(20 + i, 1000) for i in range(5))
check(os.pread(fa, 5000, 256 << 10) == want[256 << 10:], 'the appended bytes')
check(os.pread(fa, 4096, 0) == want[:4096], 'the old bytes')
import fcntl
fcntl.fcntl(fa, fcntl.F_SETFL, 0)
os.lseek(fa, 0, 0); os.write(fa, b'Z' * 10)
check(os.pread(fa, 10, 0) == b'Z' * 10 and os.fstat(fa).st_size == (256 << 10) + 5000, 'O_APPEND cleared: an overwrite')
check(kernel('print(open(sys.argv[1],"rb").read() == sys.stdin.buffer.read())', sys.argv[1], data=b'Z' * 10 + want[10:]).strip() == b'True', 'kernel view')
"#,
        &[&a],
    );
    let s = total(&o.stderr);
    assert!(s.reads >= 2 && s.writes >= 1, "{s:?}\n{}", o.stderr);
    assert!(
        o.stderr.contains("O_APPEND: writes by the kernel"),
        "{}",
        o.stderr
    );
}

/// A user who may not open the image read-write reads as before, through
/// the kernel, and is told why only in the debug line.
#[test]
fn nobody_reads_unchanged_and_gets_no_direct_access() {
    need("setpriv");
    let img = Image::new("dnobody", 256 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    let a = m.path("pub");
    std::fs::write(&a, pattern(3, 100_000)).unwrap();
    let sh = format!(
        "DAXLINK_DIRECT_DEBUG=1 {} run python3 -c \"import os,sys; fd=os.open('{}', os.O_RDONLY); sys.stdout.write(os.pread(fd, 100000, 0).hex()); sys.stdout.write(' ' + os.read(fd, 100000).hex())\"",
        DAXLINK,
        a.display()
    );
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        &sh,
    ]);
    let o = run_deadline(c, 120);
    assert_eq!(o.rc, 0, "{}", o.stderr);
    let want = hex(&pattern(3, 100_000));
    assert_eq!(o.stdout, format!("{want} {want}"));
    assert!(
        o.stderr.contains("may not open the image read-write"),
        "no debug line says why: {}",
        o.stderr
    );
    assert_eq!(total(&o.stderr).reads, 0, "{}", o.stderr);
    // The same read as root is direct (so the test above is not vacuous).
    let o = py_ok("fd=os.open(sys.argv[1], os.O_RDONLY); check(os.pread(fd, 100000, 0) == pat(3, 100000), 'root')", &[&a]);
    assert!(total(&o.stderr).reads >= 1, "{}", o.stderr);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A kernel-path writer and a direct client take turns on one file: each
/// sees what the other wrote the moment the other's call returned.
#[test]
fn kernel_and_direct_writers_interleave_without_stale_reads() {
    let img = Image::new("dinter", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, b) = two_files(&m);
    let o = py_ok(
        r#"
fa = os.open(sys.argv[1], os.O_RDWR)
check(os.pread(fa, 4096, 0) == pat(1, 4096), 'start')
for i in range(15):
    off = (i * 5 % 60) * 4096
    kernel('fd=os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, bytes.fromhex(sys.argv[2]), int(sys.argv[3]))', sys.argv[1], pat(100 + i, 4096).hex(), off)
    check(os.pread(fa, 4096, off) == pat(100 + i, 4096), 'direct read after a kernel write %d' % i)
    os.pwrite(fa, pat(200 + i, 4096), off)
    got = kernel('fd=os.open(sys.argv[1], os.O_RDONLY); sys.stdout.write(os.pread(fd, 4096, int(sys.argv[2])).hex())', sys.argv[1], off)
    check(got == pat(200 + i, 4096).hex().encode(), 'kernel read after a direct write %d' % i)
    # and a reader that kept its descriptor open through it all
    os.lseek(fa, off, 0)
    check(os.read(fa, 4096) == pat(200 + i, 4096), 'read at the offset %d' % i)
    check(os.lseek(fa, 0, 1) == off + 4096, 'offset moved')
# Writes the shim never sees: stdio (libc's internal write), a raw system
# call, copy_file_range. Reads after them are right.
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.fopen.restype = ctypes.c_void_p
libc.fwrite.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
libc.fseek.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(sys.argv[1].encode(), b'r+')
libc.fseek(fp, 4096, 0); libc.fwrite(pat(300, 4096), 1, 4096, fp)
libc.fseek(fp, 0, 2); libc.fwrite(pat(301, 8192), 1, 8192, fp)
libc.fclose(fp)
check(os.pread(fa, 4096, 4096) == pat(300, 4096), 'after an stdio overwrite')
check(os.pread(fa, 8192, 256 << 10) == pat(301, 8192), 'after an stdio append')
buf = pat(302, 4096)
n = libc.syscall(18, fa, ctypes.c_char_p(buf), ctypes.c_size_t(4096), ctypes.c_long(12288))  # SYS_pwrite64
check(n == 4096, 'raw pwrite64')
check(os.pread(fa, 4096, 12288) == buf, 'after a raw pwrite64')
src = os.open(sys.argv[2], os.O_RDONLY)
check(os.copy_file_range(src, fa, 8192, 0, 16384) == 8192, 'copy_file_range')
check(os.pread(fa, 8192, 16384) == pat(2, 8192), 'after copy_file_range')
os.pwrite(fa, pat(303, 4096), 16384)
check(os.pread(src, 4096, 0) == pat(2, 4096), 'the copy source unchanged by a write to the copy')
check(os.pread(fa, 4096, 16384) == pat(303, 4096), 'the copy written')
"#,
        &[&a, &b],
    );
    let s = total(&o.stderr);
    assert!(s.writes >= 15 && s.reads >= 15, "{s:?}\n{}", o.stderr);
}

/// Another process truncates the file down and back up while the client
/// reads it, and fills the freed blocks with another file: the client's
/// reads past the new end give 0 or short counts, and never the old bytes
/// nor the other file's.
#[test]
fn truncate_by_another_process_never_shows_old_data() {
    let img = Image::new("dtrunc", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (a, _) = two_files(&m);
    let other = m.path("other");
    let o = py_ok(
        r#"
import threading
path, other = sys.argv[1], sys.argv[2]
fa = os.open(path, os.O_RDONLY)
old = pat(1, 256 << 10)
check(os.pread(fa, 8192, 8192) == old[8192:16384], 'start')
# Sequential: after truncate returned.
for i in range(10):
    kernel('os.truncate(sys.argv[1], 4096)', path)
    check(os.pread(fa, 8192, 8192) == b'', 'past the new end: 0 (%d)' % i)
    check(os.pread(fa, 8192, 0) == old[:4096], 'short read at the end (%d)' % i)
    kernel('fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT); os.pwrite(fd, b"\\xee" * (256 << 10), 0); os.fsync(fd)', other)
    kernel('os.truncate(sys.argv[1], 256 << 10)', path)
    check(os.pread(fa, 8192, 8192) == bytes(8192), 'zeros after extending, not old bytes (%d)' % i)
    kernel('os.unlink(sys.argv[1])', other)
    kernel('fd=os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, sys.stdin.buffer.read(), 0)', path, data=old)
# Concurrent: every byte read is the file's pattern or zero (a block read
# while the kernel path rewrites it may hold both, as a read beside a write
# may on any Linux filesystem), or the read is short; never another
# offset's or another file's bytes.
stop = False; bad = []; n = [0]
def reader():
    while not stop:
        for off in range(4096, 256 << 10, 4096):
            b = os.pread(fa, 4096, off)
            n[0] += 1
            want = old[off:off + len(b)]
            if b and b != want and b != bytes(len(b)):
                if any(x != y and x != 0 for x, y in zip(b, want)):
                    bad.append((off, b[:8].hex()))
t = threading.Thread(target=reader); t.start()
for i in range(10):
    kernel('os.truncate(sys.argv[1], 4096); fd=os.open(sys.argv[2], os.O_RDWR|os.O_CREAT); os.pwrite(fd, b"\\xee" * (256 << 10), 0); os.truncate(sys.argv[1], 256 << 10); os.unlink(sys.argv[2])', path, other)
    kernel('fd=os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, sys.stdin.buffer.read(), 0)', path, data=old)
stop = True; t.join()
check(not bad, 'reads saw old or foreign bytes: %r' % bad[:5])
print('reads', n[0])
"#,
        &[&a, &other],
    );
    let s = total(&o.stderr);
    assert!(s.reads >= 20, "reads were not direct: {s:?}\n{}", o.stderr);
}

/// kill -9 of clients in the middle of direct writes: the mount keeps
/// working, the killed client's leases go with it, it unmounts, fsck finds
/// the image clean, and each client's direct write fsynced before the kill
/// is there after a remount.
#[test]
fn kill9_of_a_writing_client_then_umount_and_fsck_clean() {
    let img = Image::new("dkill", 256 << 20);
    let mut m = Mounted::new(&img.path, "");
    let a = m.path("k");
    std::fs::write(&a, pattern(4, 1 << 20)).unwrap();
    for round in 0..5 {
        let mut c = Command::new(DAXLINK);
        c.args(["run", "python3", "-c"])
            .arg(format!(
                "{PRELUDE}\nfa=os.open(sys.argv[1], os.O_RDWR)\nos.pwrite(fa, pat({}, 4096), {} * 4096)\nos.fsync(fa)\nb=pat({round}, 4096)\nprint('go', flush=True)\ni=0\nwhile True:\n    os.pwrite(fa, b, (i % 128) * 4096); i += 1\n",
                1000 + round,
                128 + round
            ))
            .arg(&a)
            .env("DAXLINK_DIRECT_DEBUG", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "go");
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id();
        let leased = || {
            daxlink::tools::client::owners(&a, 0).unwrap()["leases"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["pid"] == pid))
        };
        assert!(leased(), "round {round}: the client holds no lease");
        child.kill().unwrap();
        child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("direct access to mount"),
            "round {round}: not direct: {err}"
        );
        // Its lease goes with its last descriptor (RELEASE is asynchronous).
        let t0 = std::time::Instant::now();
        while leased() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "round {round}: the killed client's lease stayed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The file is still served, and a later client writes directly again.
    let o = py_ok(
        "fa=os.open(sys.argv[1], os.O_RDWR); os.pwrite(fa, pat(99, 4096), 0); check(os.pread(fa, 4096, 0) == pat(99, 4096), 'after kills'); os.fsync(fa)",
        &[&a],
    );
    assert!(total(&o.stderr).writes >= 1, "{}", o.stderr);
    let dir = m.root().to_path_buf();
    m = m.cycle("");
    assert!(!is_mounted(&dir));
    let got = std::fs::read(m.path("k")).unwrap();
    for round in 0..5 {
        let b = (128 + round) * 4096;
        assert!(
            got[b..b + 4096] == pattern(1000 + round as u64, 4096)[..],
            "round {round}: the write fsynced before the kill is lost"
        );
    }
}

/// Threads reading one descriptor share its offset as the kernel's f_pos:
/// every block is read exactly once.
#[test]
fn threads_reading_one_fd_share_its_offset() {
    let img = Image::new("dthreads", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let a = m.path("t");
    // Every 4 KiB block starts with its own number.
    let mut data = Vec::new();
    for i in 0..1024u32 {
        let mut blk = vec![0u8; 4096];
        blk[..4].copy_from_slice(&i.to_le_bytes());
        data.extend_from_slice(&blk);
    }
    std::fs::write(&a, &data).unwrap();
    let o = py_ok(
        r#"
import threading
fa = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fa, 4096, 0)
seen = [[] for _ in range(4)]
def worker(k):
    while True:
        b = os.read(fa, 4096)
        if not b: return
        seen[k].append(int.from_bytes(b[:4], 'little'))
ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in ts: t.start()
for t in ts: t.join()
allb = sorted(x for s in seen for x in s)
check(allb == list(range(1024)), 'each block once: %d reads, %d distinct' % (len(allb), len(set(allb))))
"#,
        &[&a],
    );
    assert!(total(&o.stderr).reads >= 1000, "{}", o.stderr);
}

/// A direct write sets mtime and ctime at once (TOUCH at the first write),
/// and fsync reports the writes made since (at most 10 ms apart otherwise).
#[test]
fn direct_writes_set_mtime_and_fsync_reports_them() {
    let img = Image::new("dmtime", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let a = m.path("m");
    std::fs::write(&a, pattern(5, 64 << 10)).unwrap();
    let o = py_ok(
        r#"
import time
path = sys.argv[1]
fa = os.open(path, os.O_RDWR)
def mtime():  # as another process sees it
    return float(kernel('print(os.stat(sys.argv[1]).st_mtime)', path))
os.utime(path, (1e9, 1e9))
t0 = time.time()
os.pwrite(fa, b'a' * 4096, 0)
check(mtime() >= t0 - 1, 'the first direct write set mtime')
for i in range(20):
    # The first write reports itself; the second, within 10 ms of it and
    # after the times were set back, is reported by fsync.
    os.pwrite(fa, b'b' * 4096, 4096)
    os.utime(path, (1e9, 1e9))
    os.pwrite(fa, b'c' * 4096, 8192)
    os.fsync(fa)
    check(mtime() >= t0 - 1, 'fsync after a direct write: mtime set (%d)' % i)
"#,
        &[&a],
    );
    assert!(total(&o.stderr).writes >= 41, "{}", o.stderr);
}

/// `daxlink run` says in one line why it cannot run a command: the shim
/// missing (a daxlink copied alone elsewhere), or the command missing;
/// an LD_PRELOAD already set is kept after the shim.
#[test]
fn daxlink_run_errors_and_preload_order() {
    let lib = shim();
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("daxlink");
    std::fs::copy(DAXLINK, &alone).unwrap();
    let mut c = Command::new(&alone);
    c.args(["run", "true"]);
    let o = run_deadline(c, 60);
    assert_eq!(o.rc, 127, "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("libdaxlink_client.so not found"),
        "{}",
        o.stderr
    );
    let mut c = Command::new(DAXLINK);
    c.args(["run", "--", "no-such-command-daxlink"]);
    let o = run_deadline(c, 60);
    assert_eq!(o.rc, 127, "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    let mut c = Command::new(DAXLINK);
    c.args(["run", "sh", "-c", "echo $LD_PRELOAD"])
        .env("LD_PRELOAD", "/nonexistent-other.so");
    let o = run_deadline(c, 60);
    assert_eq!(o.rc, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        format!(
            "{}:/nonexistent-other.so",
            lib.canonicalize().unwrap().display()
        )
    );
}
