//! Extended attributes as ext4 checks them: of `system.` only the POSIX ACL
//! names exist; `trusted.` needs CAP_SYS_ADMIN (in the initial namespace);
//! nobody can fill the xattr space of a file it may not write.

use std::fs;

use crate::*;

#[test]
fn system_names_other_than_acls_are_not_supported() {
    let (_img, m) = scene("xattr-ns", "");
    let root = m.root().display().to_string();
    // As root too: no such namespace (ext4: EOPNOTSUPP).
    for name in ["system.foo", "system.daxlink", "nonamespace", "user."] {
        let o = run_deadline(
            {
                let mut c = std::process::Command::new("setfattr");
                c.args(["-n", name, "-v", "1"]).arg(m.path("rootfile"));
                c
            },
            20,
        );
        assert_ne!(o.rc, 0, "root set {name}: {o:?}");
        assert!(
            o.stderr.contains("not supported") || o.stderr.contains("Invalid argument"),
            "{name}: {o:?}"
        );
    }
    // nobody, with or without a user namespace, on root's files and the root.
    for us in [None, Some("")] {
        for target in [
            format!("{root}/rootfile"),
            root.clone(),
            format!("{root}/secret"),
        ] {
            for name in ["system.foo", "trusted.foo", "security.foo"] {
                let o = nobody_in(us, &format!("setfattr -n {name} -v 1 {target}"));
                assert_ne!(o.rc, 0, "nobody set {name} on {target} ({us:?}): {o:?}");
                let o = nobody_in(us, &format!("setfattr -x {name} {target}"));
                assert_ne!(o.rc, 0, "nobody removed {name} on {target}: {o:?}");
            }
            let o = nobody_in(us, &format!("setfattr -n user.x -v 1 {target}"));
            assert_ne!(o.rc, 0, "nobody set user.x on {target}: {o:?}");
        }
    }
    // Root's ACLs still work, and root's trusted/security/user names.
    for name in ["trusted.t", "security.s", "user.u"] {
        let o = run_deadline(
            {
                let mut c = std::process::Command::new("setfattr");
                c.args(["-n", name, "-v", "1"]).arg(m.path("rootfile"));
                c
            },
            20,
        );
        assert_eq!(o.rc, 0, "root set {name}: {o:?}");
    }
    let o = run_deadline(
        {
            let mut c = std::process::Command::new("setfacl");
            c.args(["-m", "u:65534:r"]).arg(m.path("rootfile"));
            c
        },
        20,
    );
    assert_eq!(o.rc, 0, "{o:?}");
    let o = nobody(&format!("cat {root}/rootfile >/dev/null"));
    assert_eq!(o.rc, 0, "the ACL grants read: {o:?}");
    assert!(fs::metadata(m.path("rootfile")).is_ok());
    responsive(m.root());
    m.cycle("");
}
