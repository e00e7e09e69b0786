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
    // Without group execute, set-group-ID is not a privilege and stays.
    let f = m.path("pub/mandlock");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6767)).unwrap();
    let o = nobody(&format!("xfs_io -c 'fpunch 0 4096' {}", f.display()));
    assert_eq!(o.rc, 0, "{o:?}");
    assert_eq!(mode_of(&f), 0o2767);
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
