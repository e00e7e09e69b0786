//! Changes that take a direct writer's right away without moving a block:
//! a set-ID bit or an inode flag gained, and a memory failure. Each recalls
//! the file's leases, so the client maps again and the next access is what
//! the kernel path would do (the bit cleared, EPERM, EIO).
//!
//! Needs root, /dev/fuse, python3 and setpriv; builds with
//! `cargo build --release --workspace` (the shim beside the binaries).

mod common;

use common::direct::*;
use common::*;

fn file(m: &Mounted) -> std::path::PathBuf {
    let f = m.path("f");
    std::fs::write(&f, pattern(1, 64 << 10)).unwrap();
    f
}

/// A direct writer without CAP_FSETID keeps writing after the owner makes
/// the file set-user-ID and set-group-ID: its next write clears both bits,
/// as the kernel path's write does (a direct store could not).
#[test]
fn set_id_bits_gained_under_a_writable_lease_are_cleared_by_the_next_write() {
    need("setpriv");
    let img = Image::new("drsetid", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    // Root without CAP_FSETID (dropped from the bounding set): a writer
    // whose writes clear set-ID bits, who may still open the image.
    let o = py_under(
        &["setpriv", "--bounding-set=-fsetid"],
        r#"
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, pat(5, 4096), 0)
kernel('os.chmod(sys.argv[1], 0o6775)', sys.argv[1])
check(os.stat(sys.argv[1]).st_mode & 0o7777 == 0o6775, 'chmod took')
os.pwrite(fd, pat(6, 4096), 4096)
mode = os.stat(sys.argv[1]).st_mode & 0o7777
check(mode == 0o775, 'mode after the write: %o' % mode)
check(os.pread(fd, 8192, 0) == pat(5, 4096) + pat(6, 4096), 'data')
"#,
        &[&f],
    );
    let s = served_ok(&o);
    assert!(
        s.writes >= 1,
        "the first write was not direct: {s:?}\n{}",
        o.stderr
    );
}

/// `chattr +i` by root while a client holds a writable lease: the client's
/// next write fails with EPERM, as a kernel-path write does, and the file
/// is unchanged.
#[test]
fn immutable_gained_under_a_writable_lease_refuses_the_next_write() {
    let img = Image::new("drimm", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    let o = py(
        r#"
import fcntl, struct, errno
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, pat(5, 4096), 0)
SET = 'import fcntl, struct\nf = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.ioctl(f, 0x40086602, struct.pack("i", int(sys.argv[2])))'
kernel(SET, sys.argv[1], 0x10)   # FS_IMMUTABLE_FL
try:
    os.pwrite(fd, pat(6, 4096), 0)
    ok = False
except OSError as e:
    ok = e.errno == errno.EPERM
kernel(SET, sys.argv[1], 0)
check(ok, 'a write to an immutable file was not refused with EPERM')
check(os.pread(fd, 4096, 0) == pat(5, 4096), 'the immutable file changed')
"#,
        &[&f],
    );
    let s = served_ok(&o);
    assert!(
        s.writes >= 1,
        "the first write was not direct: {s:?}\n{}",
        o.stderr
    );
}

/// A memory failure on a block a client reads directly: its next read of
/// that block fails with EIO, as the kernel path's does (the page model
/// told the owner), and the other blocks still read right, directly.
#[test]
fn poison_of_a_directly_read_block_makes_the_next_read_fail_with_eio() {
    let img = Image::new("drpoison", 128 << 20);
    let m = Mounted::new(&img.path, "");
    let f = file(&m);
    let o = py(
        r#"
import errno
fd = os.open(sys.argv[1], os.O_RDONLY)
check(os.pread(fd, 4096, 8192) == pat(1, 65536)[8192:12288], 'before')
r = subprocess.run([sys.argv[2], 'poison', '--offset', '8192', sys.argv[1]], env=PLAIN, capture_output=True)
check(r.returncode == 0, r.stderr)
try:
    got = os.pread(fd, 4096, 8192)
    what = 'read %d bytes, %s' % (len(got), got[:4].hex())
except OSError as e:
    what = 'errno %d' % e.errno
check(what == 'errno %d' % errno.EIO, 'the poisoned block: ' + what)
check(os.pread(fd, 4096, 0) == pat(1, 4096), 'another block')
"#,
        &[&f, &DAXLINK],
    );
    let s = served_ok(&o);
    assert!(s.reads >= 2, "reads were not direct: {s:?}\n{}", o.stderr);
}
