//! The kernel's page cache beside direct writers: no read through the
//! kernel returns data older than a direct write that has returned, whether
//! the reader's open came before the writer's lease, is the writer's own,
//! or comes after the writer closed.
//!
//! Needs root, /dev/fuse and python3; builds with
//! `cargo build --release --workspace` (the shim beside the binaries).

mod common;

use common::direct::*;
use common::*;

fn file(m: &Mounted) -> std::path::PathBuf {
    let f = m.path("f");
    std::fs::write(&f, pattern(1, 64 << 10)).unwrap();
    f
}

/// A reader without the shim opens the file and reads it (its pages are
/// cached) before a client under `daxlink run` opens it for writing; then
/// they alternate: one write, one read, 300 times. Every read sees the
/// write before it. (The daemon gives no writable map while another open
/// of the file reads through the page cache; the writes take the kernel
/// path, which keeps the cache right.)
#[test]
fn a_reader_opened_before_the_writer_never_reads_stale_bytes() {
    let img = Image::new("dcbefore", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    let o = py(
        r#"
READER = '''
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fd, 65536, 0)
print('ready', flush=True)
for line in sys.stdin:
    print(os.pread(fd, 4, 0).hex(), flush=True)
'''
rd = subprocess.Popen([sys.executable, '-c', READER, sys.argv[1]], env=PLAIN,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
check(rd.stdout.readline() == b'ready\n', 'reader started')
fd = os.open(sys.argv[1], os.O_RDWR)
stale = 0
for i in range(300):
    v = (i + 1).to_bytes(4, 'little')
    os.pwrite(fd, v, 0)
    rd.stdin.write(b'r\n'); rd.stdin.flush()
    if rd.stdout.readline().strip() != v.hex().encode():
        stale += 1
rd.stdin.close(); rd.wait()
check(stale == 0, '%d of 300 reads were stale' % stale)
"#,
        &[&f],
    );
    assert_eq!(o.rc, 0, "{}\n{}", o.stdout, o.stderr);
}

/// The writer's own open reads through the kernel (a range past EOF, which
/// the library leaves to the kernel) between its direct writes: the kernel
/// path never answers from pages cached before the last direct write.
#[test]
fn the_writers_own_kernel_path_reads_follow_its_direct_writes() {
    let img = Image::new("dcown", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    let o = py(
        r#"
fd = os.open(sys.argv[1], os.O_RDWR)
stale = 0
for i in range(20):
    whole = os.pread(fd, 65536 + 4096, 0)   # past EOF: the kernel path
    check(len(whole) == 65536, 'short read %d' % len(whole))
    if i > 0 and whole[:4096] != pat(100 + i - 1, 4096):
        stale += 1
    os.pwrite(fd, pat(100 + i, 4096), 0)      # direct
check(stale == 0, '%d of 19 kernel-path reads were stale' % stale)
"#,
        &[&f],
    );
    let s = served_ok(&o);
    assert!(
        s.writes >= 20 && s.kernel >= 20,
        "writes not direct or reads not through the kernel: {s:?}\n{}",
        o.stderr
    );
}

/// A direct writer whose own open cached pages writes and closes; an open
/// made afterwards by another process reads the new bytes, not the pages
/// the writer's open had cached. (With noatime, the later open is one the
/// kernel may let keep the file's cached pages.)
#[test]
fn an_open_after_the_writer_closed_reads_its_writes() {
    let img = Image::new("dcafter", 128 << 20);
    let m = Mounted::new(&img.path, "noatime");
    let f = file(&m);
    let o = py(
        r#"
for i in range(10):
    fd = os.open(sys.argv[1], os.O_RDWR)
    os.pread(fd, 65536 + 4096, 0)             # the kernel path caches the file
    os.pwrite(fd, pat(200 + i, 4096), 0)      # direct
    os.close(fd)
    got = kernel('fd = os.open(sys.argv[1], os.O_RDONLY); sys.stdout.write(os.pread(fd, 4096, 0).hex())', sys.argv[1])
    check(got == pat(200 + i, 4096).hex().encode(), 'round %d: a later open read stale bytes' % i)
"#,
        &[&f],
    );
    let s = served_ok(&o);
    assert!(s.writes >= 10, "writes not direct: {s:?}\n{}", o.stderr);
}

/// Two direct clients opened the file before either mapped it: one writes
/// directly, the other reads through the kernel (a range past EOF) after
/// each write and sees it (its map says another open writes the file, so
/// it drops the cached pages first).
#[test]
fn a_direct_reader_beside_a_direct_writer_reads_its_writes_through_the_kernel() {
    let img = Image::new("dctwo", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    let o = py(
        r#"
READER = '''
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fd, 4096, 0)                       # direct: its lease
print('ready', flush=True)
for line in sys.stdin:
    whole = os.pread(fd, 65536 + 4096, 0)   # past EOF: the kernel path
    print(whole[:4].hex(), flush=True)
'''
fd = os.open(sys.argv[1], os.O_RDWR)
rd = subprocess.Popen([sys.executable, '-c', READER, sys.argv[1]],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
check(rd.stdout.readline() == b'ready\n', 'reader started')
stale = 0
for i in range(30):
    v = (i + 1).to_bytes(4, 'little')
    os.pwrite(fd, v, 0)
    rd.stdin.write(b'r\n'); rd.stdin.flush()
    if rd.stdout.readline().strip() != v.hex().encode():
        stale += 1
rd.stdin.close(); rd.wait()
check(stale == 0, '%d of 30 reads were stale' % stale)
"#,
        &[&f],
    );
    let s = served_ok(&o);
    assert!(
        s.writes >= 25,
        "the writes were not direct: {s:?}\n{}",
        o.stderr
    );
}

/// A client that opened the file read-write but only reads it takes a
/// read-only lease, so other processes' opens keep the page cache (a second
/// pass of reads sends no READ); its first write takes a writable one, and
/// from then on new opens bypass the cache.
#[test]
fn a_read_write_descriptor_that_only_reads_leaves_the_page_cache_on() {
    let img = Image::new("dcreadonly", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    let o = py(
        r#"
import json
def reads():
    r = subprocess.run([sys.argv[2], 'counters', '--json', sys.argv[3]], env=PLAIN, capture_output=True)
    return json.loads(r.stdout)['total'].get('READ', 0)
PASS = 'fd = os.open(sys.argv[1], os.O_RDONLY)\nfor i in range(16): os.pread(fd, 4096, i * 4096)'
fd = os.open(sys.argv[1], os.O_RDWR)
check(os.pread(fd, 4096, 0) == pat(1, 4096), 'a direct read')
kernel(PASS, sys.argv[1])
before = reads()
kernel(PASS, sys.argv[1])
n = reads() - before
check(n == 0, 'a second pass beside a reading client sent %d READs' % n)
os.pwrite(fd, pat(9, 4096), 0)
before = reads()
kernel(PASS, sys.argv[1])
n = reads() - before
check(n >= 16, 'beside a writing client a pass sent only %d READs' % n)
"#,
        &[&f, &DAXLINK, &m.root()],
    );
    let s = served_ok(&o);
    assert!(
        s.reads >= 1 && s.writes >= 1,
        "not direct: {s:?}\n{}",
        o.stderr
    );
}
