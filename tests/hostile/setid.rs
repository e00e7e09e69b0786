//! Set-ID bits go on every data change by a caller without CAP_FSETID, as
//! the VFS's `file_remove_privs` does on ext4 and XFS (fstests generic/355,
//! 683-685), and `stat` shows it at once (the kernel's cached mode is
//! dropped when the daemon changes it).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use crate::*;

fn mode_of(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn every_data_change_by_a_non_owner_clears_set_id_bits() {
    let (_img, m) = scene("setid", "");
    let root = m.root().display().to_string();
    let ops = [
        ("odirect-write", "xfs_io -d -c 'pwrite -q 0 4096' F"),
        ("write", "xfs_io -c 'pwrite -q 0 10' F"),
        ("falloc", "xfs_io -c 'falloc 0 8192' F"),
        ("falloc-keep", "xfs_io -c 'falloc -k 8192 4096' F"),
        ("punch", "xfs_io -c 'fpunch 0 4096' F"),
        ("zero", "xfs_io -c 'fzero 0 4096' F"),
        ("truncate", "truncate -s 1 F"),
        (
            "copy-range",
            "xfs_io -c 'copy_range -s 0 -d 0 -l 4096 ROOT/rootfile' F",
        ),
        ("clone", "DAXLINK reflink ROOT/rootfile F"),
    ];
    for (name, cmd) in ops {
        let f = m.path(&format!("pub/{name}"));
        fs::write(&f, common::pattern(3, 8192)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
        // The kernel caches the mode now.
        assert_eq!(mode_of(&f), 0o6777);
        let cmd = cmd
            .replace('F', &f.display().to_string())
            .replace("ROOT", &root)
            .replace("DAXLINK", DAXLINK);
        let o = nobody(&cmd);
        assert_eq!(o.rc, 0, "{name}: {o:?}");
        assert_eq!(
            mode_of(&f),
            0o777,
            "{name} by nobody kept set-ID bits (or stat showed a stale mode)"
        );
    }
    // Root (CAP_FSETID) keeps them, as on ext4.
    let f = m.path("pub/by-root");
    fs::write(&f, common::pattern(4, 8192)).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    let o = run_deadline(
        {
            let mut c = std::process::Command::new("xfs_io");
            c.args(["-c", "fpunch 0 4096", "-c", "falloc 0 8192"])
                .arg(&f);
            c
        },
        30,
    );
    assert_eq!(o.rc, 0, "{o:?}");
    assert_eq!(mode_of(&f), 0o6777);
    m.cycle("");
}

/// fstests generic/355 and 683-685 without fstests: a user who may write
/// but is not the owner changes a file of each mode those tests use, by an
/// O_DIRECT write, a write, a truncate, a fallocate, a punch and a zero
/// range. Set-user-ID always goes; set-group-ID goes when the group may
/// execute or when the writer is not in the file's group, by its fs gid or
/// a supplementary group (Linux 6.2's `setattr_should_drop_suidgid`; tmpfs
/// gives this same table on this machine's kernel). Over both transports:
/// each passes the writer's thread to the daemon its own way.
#[test]
fn set_group_id_goes_unless_the_writer_is_in_the_files_group() {
    for opts in ["", "transport=uring"] {
        setid_table(opts);
    }
}

fn setid_table(opts: &str) {
    let (_img, m) = scene("setid-groups", opts);
    let ops = [
        ("odirect", "xfs_io -d -c 'pwrite -q 0 4096' F"),
        ("write", "xfs_io -c 'pwrite -q 0 10' F"),
        ("truncate", "truncate -s 4096 F"),
        ("falloc", "xfs_io -c 'falloc 64k 64k' F"),
        ("fpunch", "xfs_io -c 'fpunch 64k 64k' F"),
        ("fzero", "xfs_io -c 'fzero 64k 64k' F"),
    ];
    // (file's group, the writer's supplementary groups, in the group?)
    let groups = [(0, "", false), (65534, "", true), (4242, "4242", true)];
    // mode before -> after, for a writer outside / inside the file's group
    // (generic/683's "non-exec", "group-exec", "user-exec", "all-exec").
    let modes = [
        (0o6666, 0o666, 0o2666),
        (0o6676, 0o676, 0o676),
        (0o6766, 0o766, 0o2766),
        (0o6777, 0o777, 0o777),
    ];
    let mut wrong = Vec::new();
    for (name, cmd) in ops {
        for (gid, supp, inside) in groups {
            for (before, outside_after, inside_after) in modes {
                let f = m.path(&format!("pub/{name}-{gid}-{before:o}"));
                fs::write(&f, common::pattern(5, 192 << 10)).unwrap();
                std::os::unix::fs::chown(&f, None, Some(gid)).unwrap();
                fs::set_permissions(&f, fs::Permissions::from_mode(before)).unwrap();
                assert_eq!(mode_of(&f), before);
                let mut c = std::process::Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534"]);
                if supp.is_empty() {
                    c.arg("--clear-groups");
                } else {
                    c.arg(format!("--groups={supp}"));
                }
                c.args(["sh", "-c", &cmd.replace('F', &f.display().to_string())]);
                let o = run_deadline(c, 60);
                assert_eq!(o.rc, 0, "{name} on {before:o}: {o:?}");
                let want = if inside { inside_after } else { outside_after };
                let got = mode_of(&f);
                if got != want {
                    wrong.push(format!(
                        "[{opts}] {name}, group {gid}, writer's groups [65534 {supp}]: \
                         {before:o} -> {got:o}, want {want:o}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    m.cycle("");
}
