//! Authority comes from the kernel: a capability counts only in the mount's
//! user namespace, and a clone source is the caller's open file itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use crate::*;
use daxlink::fuse::ioctl;

/// nobody inside `unshare -Ur` holds every capability of its own user
/// namespace; none of them counts for the mount (the kernel's
/// `ns_capable(fc->user_ns, ...)`): poison, shutdown, remount, snapshot,
/// the owners report and keeping set-ID bits all behave as for nobody.
#[test]
fn capabilities_of_a_user_namespace_count_for_nothing() {
    let (_img, m) = scene("userns-caps", "");
    let root = m.root().display().to_string();
    let before = fs::read(m.path("rootfile")).unwrap();
    daxlink::tools::client::reflink(&m.path("secret/f"), &m.path("rootfile"), 0, 0, 0).unwrap();
    let shared = fs::read(m.path("rootfile")).unwrap();
    assert_ne!(before, shared);
    // A set-ID file that everyone may write.
    fs::write(m.path("pub/setid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(m.path("pub/setid"), fs::Permissions::from_mode(0o6777)).unwrap();
    let us = Some("");
    // The user namespace really grants the set (else the test proves nothing).
    let o = nobody_in(us, "grep CapEff /proc/self/status");
    assert!(o.stdout.contains("000001ffffffffff"), "{o:?}");

    let o = nobody_in(us, &format!("{DAXLINK} poison {root}/rootfile --offset 0"));
    assert_ne!(o.rc, 0, "poison in a user namespace: {o:?}");
    assert_eq!(
        fs::read(m.path("rootfile")).unwrap(),
        shared,
        "data destroyed"
    );

    let snap = vec![0u8; ioctl::SNAPSHOT_SIZE];
    let o = nobody_in(us, &pyioctl(&m.path("rootfile"), 0, ioctl::SNAPSHOT, &snap));
    assert_eq!(errno_printed(&o), libc::EPERM, "snapshot: {o:?}");

    let ro = 1u64.to_le_bytes();
    let o = nobody_in(us, &pyioctl(&m.path("rootfile"), 0, ioctl::REMOUNT, &ro));
    assert_eq!(errno_printed(&o), libc::EPERM, "remount: {o:?}");
    fs::write(m.path("still-writable"), b"x").expect("root's write after the remount attempt");

    // FS_IOC_SHUTDOWN (_IOR, so the payload is the caller's flags word).
    let o = nobody_in(
        us,
        &pyioctl(&m.path("rootfile"), 0, ioctl::GOINGDOWN, &[0, 0, 0, 0]),
    );
    assert_eq!(errno_printed(&o), libc::EPERM, "shutdown: {o:?}");
    fs::write(m.path("still-up"), b"x").expect("root's write after the shutdown attempt");

    // The owners report names only what nobody could reach.
    let o = nobody_in(us, &format!("{DAXLINK} owners {root}/rootfile --offset 0"));
    assert!(
        !o.stdout.contains("secret"),
        "owners showed a 0700 path: {o:?}"
    );

    // Set-ID bits go on a data change by nobody, namespace or not.
    let o = nobody_in(us, &format!("truncate -s 100 {root}/pub/setid"));
    assert_eq!(o.rc, 0, "{o:?}");
    let mode = fs::metadata(m.path("pub/setid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o777, "truncate kept set-ID bits: {mode:o}");
    responsive(m.root());
    m.cycle("");
}

/// The attack that read root's files through the old /proc check: a second
/// thread swaps, between the daemon's two reads (fdinfo, then mountinfo),
/// a tmpfs file that has the secret's inode number for a bind mount of the
/// daxlink mount that takes over the tmpfs's freed mount id. The source is
/// now the open file itself, so every attempt must fail or clone the
/// harmless tmpfs file's... nothing (it is on another filesystem: EXDEV).
#[test]
fn clone_source_race_never_reads_a_secret() {
    let (_img, m) = scene("clone-race", "");
    let secret_ino = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(m.path("secret/f")).unwrap().ino()
    };
    let dst = m.path("pub/loot");
    fs::write(&dst, b"").unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o666)).unwrap();
    let script = format!(
        r#"
import ctypes, fcntl, os, struct, sys, tempfile, threading, time
libc = ctypes.CDLL(None, use_errno=True)
mnt, dst, ino = {mnt:?}, {dst:?}, {ino}
a = tempfile.mkdtemp(); b = tempfile.mkdtemp()
dstfd = os.open(dst, os.O_RDWR)
N = 200
stop = False
hits = [0, 0]
def cloner():
    buf = bytearray(struct.pack("<QQQQQ", N, 0, 0, 8192, 0))
    while not stop:
        try:
            fcntl.ioctl(dstfd, {clone}, buf, True)
            hits[0] += 1
        except OSError:
            hits[1] += 1
t = threading.Thread(target=cloner); t.start()
deadline = time.time() + 8
rounds = 0
while time.time() < deadline:
    if libc.mount(b"t", a.encode(), b"tmpfs", 0, None) != 0:
        print("mount tmpfs failed", ctypes.get_errno()); break
    p = None
    for k in range(ino + 3):
        q = "%s/f%d" % (a, k); open(q, "w").close()
        if os.stat(q).st_ino == ino: p = q; break
    if p is None:
        print("no tmpfs inode", ino); libc.umount2(a.encode(), 0); break
    fd = os.open(p, os.O_RDONLY); os.dup2(fd, N); os.close(fd)
    time.sleep(0.0002)
    os.close(N)
    libc.umount2(a.encode(), 0)
    libc.mount(mnt.encode(), b.encode(), None, 4096, None)
    time.sleep(0.0002)
    libc.umount2(b.encode(), 2)
    rounds += 1
stop = True; t.join()
print("rounds", rounds, "ok", hits[0], "failed", hits[1])
"#,
        mnt = m.root().display().to_string(),
        dst = dst.display().to_string(),
        ino = secret_ino,
        clone = ioctl::CLONE,
    );
    let file = std::env::temp_dir().join(format!("daxlink-race-{}.py", std::process::id()));
    fs::write(&file, script).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let o = nobody_in(Some("m"), &format!("python3 {}", file.display()));
    let _ = fs::remove_file(&file);
    eprintln!("race: {o:?}");
    let rounds: u64 = o
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the attack did not run: {o:?}"));
    assert!(rounds > 100, "too few rounds to mean anything: {o:?}");
    let got = fs::read(&dst).unwrap();
    let secret = fs::read(m.path("secret/f")).unwrap();
    assert!(
        got.len() < 4096 || !secret.starts_with(&got[..4096]),
        "the secret leaked into nobody's file"
    );
    responsive(m.root());
    m.cycle("");
}
