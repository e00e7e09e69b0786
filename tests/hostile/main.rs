//! Hostile users: what an unprivileged local user (nobody, through setpriv,
//! and with a user namespace of its own through `unshare -Ur`) can do to a
//! daxlink mount that root mounted with `allow_other`. Each attack must fail
//! as it fails on ext4 or XFS, and the daemon must stay up and answer.
//!
//! Every command runs under a deadline: a hang fails the test, and the
//! mount guard then ends the daemon.

#[path = "../common/mod.rs"]
mod common;

mod authority;
mod extremes;
mod images;
mod killed;
mod pins;
mod setid;
mod stall;
mod xattrs;

use std::path::Path;
use std::process::Command;

pub use common::{run_deadline, Out};

/// `script` run by sh as user and group nobody with no supplementary
/// groups; with `userns`, inside `unshare -Ur` (a user namespace where
/// nobody is root with a full set of capabilities), `-Urm` for `"m"`.
pub fn nobody_in(userns: Option<&str>, script: &str) -> Out {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if let Some(extra) = userns {
        c.arg("unshare").arg(format!("-Ur{extra}"));
    }
    c.args(["sh", "-c", script]);
    run_deadline(c, 60)
}

pub fn nobody(script: &str) -> Out {
    nobody_in(None, script)
}

/// A stat from this process answers within 10 s.
pub fn responsive(p: &Path) {
    let mut c = Command::new("stat");
    c.arg(p);
    let out = run_deadline(c, 10);
    assert_eq!(out.rc, 0, "stat {}: {out:?}", p.display());
}

/// Python that issues one ioctl: `pyioctl(path, open_flags, cmd, payload)`
/// prints `errno=N` (0 on success) and the payload it got back as hex.
pub fn pyioctl(path: &Path, flags: i32, cmd: u32, payload: &[u8]) -> String {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "python3 -c 'import fcntl,os,sys\n\
         fd=os.open(sys.argv[1],int(sys.argv[2]))\n\
         b=bytearray(bytes.fromhex(sys.argv[4]))\n\
         try:\n    fcntl.ioctl(fd,int(sys.argv[3]),b,True); print(\"errno=0\", b.hex())\n\
         except OSError as e:\n    print(\"errno=%d\" % e.errno)' '{}' {flags} {cmd} '{hex}'",
        path.display()
    )
}

/// The errno a `pyioctl` script printed.
pub fn errno_printed(o: &Out) -> i32 {
    o.stdout
        .lines()
        .find_map(|l| l.strip_prefix("errno="))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no errno printed: {o:?}"))
}

/// The usual scene: root mounts with allow_other; a root-only 0700
/// directory holds a 0600 secret; a world-writable sticky directory.
pub fn scene(tag: &str, opts: &str) -> (common::Image, common::Mounted) {
    use std::os::unix::fs::PermissionsExt;
    let img = common::Image::new(tag, 64 << 20);
    let opts = if opts.is_empty() {
        "allow_other".to_string()
    } else {
        format!("allow_other,{opts}")
    };
    let m = common::Mounted::new(&img.path, &opts);
    let perm = std::fs::Permissions::from_mode;
    std::fs::set_permissions(m.root(), perm(0o755)).unwrap();
    std::fs::create_dir(m.path("secret")).unwrap();
    std::fs::set_permissions(m.path("secret"), perm(0o700)).unwrap();
    std::fs::write(m.path("secret/f"), common::pattern(7, 8192)).unwrap();
    std::fs::set_permissions(m.path("secret/f"), perm(0o600)).unwrap();
    std::fs::write(m.path("rootfile"), common::pattern(8, 8192)).unwrap();
    std::fs::set_permissions(m.path("rootfile"), perm(0o644)).unwrap();
    std::fs::create_dir(m.path("pub")).unwrap();
    std::fs::set_permissions(m.path("pub"), perm(0o1777)).unwrap();
    (img, m)
}
