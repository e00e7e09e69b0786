//! Durability per media kind: on a block device (here a loop device over a
//! file on the disk filesystem) stores sit in the page cache until msync, so
//! the default persist mode there is msync and `persist=cpu` is refused.
//! The stand-in for power loss is a copy of the loop device's backing file,
//! taken right after fsync returns.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A loop device over a file on the disk filesystem; detached on drop.
struct Loop {
    dev: PathBuf,
    backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new(size: u64) -> Loop {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let backing = dir.path().join("backing.img");
        fs::File::create(&backing).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup (util-linux) must be installed");
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Loop {
            dev,
            backing,
            _dir: dir,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn mount_err(dev: &Path, opts: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["30", DAXLINK, "mount"])
        .arg(dev)
        .arg(dir.path())
        .args(["-o", opts])
        .output()
        .unwrap();
    let _ = Command::new("umount")
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fsync_on_a_block_device_survives_a_power_cut() {
    let lp = Loop::new(64 << 20);
    daxlink::tools::mkfs::mkfs_path(&lp.dev, None, true, &Default::default()).expect("mkfs");
    // persist=cpu cannot make stores on a block device durable: refused.
    let (code, err) = mount_err(&lp.dev, "persist=cpu");
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("persist=msync"), "{err}");
    // The default: stores reach the device at fsync.
    let m = Mounted::new(&lp.dev, "");
    let data = pattern(11, 1 << 20);
    {
        let mut f = fs::File::create(m.path("f")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    // Power cut: what the device holds now, while still mounted.
    let snap = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    fs::copy(&lp.backing, snap.path()).unwrap();
    m.unmount();
    let m2 = Mounted::new(snap.path(), "");
    assert_eq!(fs::read(m2.path("f")).unwrap(), data);
    m2.unmount();
    fsck_clean(snap.path());
    fsck_clean(&lp.dev);
}

#[test]
fn mkfs_preallocates_images_on_disk_but_not_in_memory() {
    use std::os::unix::fs::MetadataExt;
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let size = 32u64 << 20;
    for (dir, full) in [(disk.path(), true), (shm.path(), false)] {
        let p = dir.join("img");
        daxlink::tools::mkfs::mkfs_path(&p, Some(size), false, &Default::default()).unwrap();
        let allocated = fs::metadata(&p).unwrap().blocks() * 512;
        if full {
            assert!(
                allocated >= size,
                "{}: {allocated} of {size} bytes allocated",
                p.display()
            );
        } else {
            assert!(
                allocated < size / 2,
                "{}: {allocated} bytes allocated",
                p.display()
            );
        }
        fsck_clean(&p);
    }
}
