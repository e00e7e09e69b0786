//! Values at the extremes of what a caller controls (times, sizes,
//! offsets, lengths, ioctl fields) are refused or clamped at the edge as
//! ext4 does: no request panics a worker or hangs its caller.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::*;
use daxlink::fuse::ioctl;

const CALLS: &str = r#"
import ctypes, errno, fcntl, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class TS(ctypes.Structure):
    _fields_ = [("s", ctypes.c_int64), ("ns", ctypes.c_long)]
f = sys.argv[1]; cmds = dict(a.split("=") for a in sys.argv[2:])
fd = os.open(f, os.O_RDWR)
M, X = -2**63, 2**63 - 1
def call(name, fn):
    try:
        r = fn(); print(name, "ok", r if isinstance(r, int) else "")
    except OSError as e:
        print(name, "errno", e.errno)
    sys.stdout.flush()
def utimens(a, an, m, mn):
    t = (TS * 2)(TS(a, an), TS(m, mn))
    if libc.utimensat(-100, f.encode(), t, 0) != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    st = os.stat(f); return st.st_mtime_ns // 10**9
for a, an in [(M, 0), (X, 0), (M + 1, 999999999), (X - 1, 999999999), (-2**31 - 1, 5), (2**40, 0)]:
    call("utimes %d %d" % (a, an), lambda: utimens(a, an, a, an))
call("truncate max", lambda: os.truncate(f, X))
call("truncate 2^62", lambda: os.truncate(f, 2**62))
call("pwrite max", lambda: os.pwrite(fd, b"x", X - 1))
call("pwrite 2^62", lambda: os.pwrite(fd, b"x", 2**62))
call("pread max", lambda: len(os.pread(fd, 4096, X - 1)))
call("fallocate max", lambda: os.posix_fallocate(fd, X - 1, 1))
call("fallocate huge", lambda: os.posix_fallocate(fd, 0, 2**62))
for mode in (0x03, 0x10, 0x01):  # punch|keep, zero range, keep size
    def fa(mode=mode):
        if libc.fallocate(fd, mode, ctypes.c_int64(0), ctypes.c_int64(X)) != 0:
            e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
        return 0
    call("fallocate mode %d" % mode, fa)
call("copy_file_range max", lambda: os.copy_file_range(fd, fd, X, 0, 4096))
call("copy_file_range len", lambda: os.copy_file_range(fd, fd, 2**62, 0, 2**62))
for wh in (3, 4):
    call("lseek %d" % wh, lambda: os.lseek(fd, 2**62, wh))
def io(name, cmd, size, fields):
    b = bytearray(size)
    for off, v, w in fields:
        if off + w <= size: struct.pack_into("<Q" if w == 8 else "<I", b, off, v)
    call(name, lambda: fcntl.ioctl(fd, cmd, b, True))
U = 2**64 - 1
for k, v in cmds.items():
    cmd, size = (int(x) for x in v.split(","))
    io(k + " max", cmd, size, [(0, fd if k in ("clone", "dedupe") else U, 8), (8, U, 8), (16, U, 8), (24, U, 8)])
    io(k + " mid", cmd, size, [(0, fd if k in ("clone", "dedupe") else 2**63, 8), (8, 2**63, 8), (16, 2**63, 8), (24, 2**63 - 4096, 8)])
print("done")
"#;

#[test]
fn extreme_values_in_every_request_are_refused_or_clamped() {
    let (_img, m) = scene("extremes", "");
    let script = std::env::temp_dir().join(format!("daxlink-extremes-{}.py", std::process::id()));
    fs::write(&script, CALLS).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let cmds: Vec<String> = [
        ("clone", ioctl::CLONE, ioctl::CLONE_SIZE),
        ("dedupe", ioctl::DEDUPE, ioctl::DEDUPE_SIZE),
        ("unshare", ioctl::UNSHARE, ioctl::UNSHARE_SIZE),
        ("extents", ioctl::EXTENTS, 16),
        ("pin", ioctl::PIN, 32),
        ("owners", ioctl::OWNERS, ioctl::OWNERS_SIZE),
        ("poison", ioctl::POISON, ioctl::POISON_SIZE),
        ("snapshot", ioctl::SNAPSHOT, ioctl::SNAPSHOT_SIZE),
    ]
    .iter()
    .map(|(n, c, s)| format!("{n}={c},{s}"))
    .collect();
    let own = m.path("pub/mine");
    fs::write(&own, common::pattern(5, 10000)).unwrap();
    fs::set_permissions(&own, fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
    // As nobody on a file it may write, then as root (the root-only paths).
    let run = |as_root: bool| {
        let line = format!(
            "python3 {} {} {}",
            script.display(),
            own.display(),
            cmds.join(" ")
        );
        let o = if as_root {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &line]);
            run_deadline(c, 120)
        } else {
            nobody(&line)
        };
        assert!(
            o.stdout.contains("done"),
            "the calls did not all return: {o:?}"
        );
        assert_eq!(o.rc, 0, "{o:?}");
        responsive(m.root());
        o
    };
    let o = run(false);
    // Times are kept in ext4's range (1901-12-13 .. 2446-05-10), clamped.
    let line = |prefix: &str| {
        o.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {o:?}"))
            .to_string()
    };
    assert_eq!(
        line("utimes -9223372036854775808 0"),
        "utimes -9223372036854775808 0 ok -2147483648"
    );
    assert_eq!(
        line("utimes 9223372036854775807 0"),
        "utimes 9223372036854775807 0 ok 15032385535"
    );
    assert!(line("truncate max").contains("errno"), "{o:?}");
    run(true);
    let _ = fs::remove_file(&script);
    // Still the same filesystem for everyone, and consistent.
    fs::write(m.path("after"), b"still here").unwrap();
    assert_eq!(fs::read(m.path("after")).unwrap(), b"still here");
    m.cycle("");
}
