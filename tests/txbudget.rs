//! Transactions sized in bytes: no operation may build a transaction the
//! journal cannot hold, whatever the file's extent count. A small journal
//! (mkfs's minimum, 16 blocks: 61,440 bytes of transaction area) stands in
//! for a huge device: the sizes where the unbudgeted code broke are a few
//! hundred extents (zero range, fallocate over holes) and a thousand shared
//! extents (punch, truncate, unlink, clone over a fragmented destination).
//! Each case checks that the operation succeeds, that the mount stays
//! writable, and that a remount and fsck find everything in order.

use std::sync::Arc;

use daxlink::format::{BLOCK_SIZE, ROOT_INO};
use daxlink::fs::make::{mkfs, MkfsOptions};
use daxlink::fs::{Cred, Fs, FsOptions};
use daxlink::media::Media;
use daxlink::FsError;

const BS: u64 = BLOCK_SIZE;
const C: Cred = Cred::ROOT;

/// A 64 MiB filesystem with the smallest journal mkfs makes.
fn small_journal() -> Fs {
    let m = Media::anonymous(16384 * BS).unwrap();
    mkfs(
        &m,
        &MkfsOptions {
            journal_blocks: Some(16),
            ..Default::default()
        },
    )
    .unwrap();
    Fs::mount(m, FsOptions::default()).unwrap()
}

/// A file of `n` one-block extents (every other block written).
fn fragmented(fs: &Fs, name: &str, n: u64) -> u64 {
    let ino = fs
        .mknod(ROOT_INO, name.as_bytes(), libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    for i in 0..n {
        fs.write(ino, 2 * i * BS, &[(i % 250 + 1) as u8; 4096], false)
            .unwrap();
    }
    assert_eq!(fs.extents(ino).unwrap().len() as u64, n);
    ino
}

/// Unmount, mount the same memory again, and require a clean fsck.
fn remount_clean(fs: Fs) -> Fs {
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).ok().expect("sole owner");
    let r = daxlink::tools::fsck::check(&media, false);
    assert!(r.is_clean(), "fsck: {:?} {:?}", r.findings, r.error);
    Fs::mount(media, FsOptions::default()).unwrap()
}

/// The mount still takes changes (no commit failed on the way).
fn still_writable(fs: &Fs) {
    let a = fs
        .mknod(ROOT_INO, b"probe", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(a.ino, 0, b"ok", false).unwrap();
    fs.unlink(ROOT_INO, b"probe").unwrap();
}

#[test]
fn zero_range_over_thousands_of_extents() {
    let fs = small_journal();
    let ino = fragmented(&fs, "f", 2000);
    let size = fs.getattr(ino).unwrap().size;
    fs.fallocate(ino, 0, size, libc::FALLOC_FL_ZERO_RANGE)
        .unwrap();
    still_writable(&fs);
    let fs = remount_clean(fs);
    assert_eq!(fs.getattr(ino).unwrap().size, size);
    assert!(fs
        .read(ino, 0, size as usize)
        .unwrap()
        .iter()
        .all(|b| *b == 0));
    // Every block of the range is allocated (zero range allocates).
    let mapped: u64 = fs.extents(ino).unwrap().iter().map(|e| e.2).sum();
    assert_eq!(mapped, size / BS);
}

#[test]
fn fallocate_over_thousands_of_holes() {
    let fs = small_journal();
    let ino = fragmented(&fs, "f", 2000);
    let size = fs.getattr(ino).unwrap().size;
    fs.fallocate(ino, 0, size + 100 * BS, 0).unwrap();
    still_writable(&fs);
    let fs = remount_clean(fs);
    assert_eq!(fs.getattr(ino).unwrap().size, size + 100 * BS);
    let mapped: u64 = fs.extents(ino).unwrap().iter().map(|e| e.2).sum();
    assert_eq!(mapped, size / BS + 100);
    assert_eq!(
        fs.read(ino, 2 * 1999 * BS, 1).unwrap(),
        vec![(1999 % 250 + 1) as u8]
    );
}

/// `src` fragmented, and `dst` a clone of it: every extent shared.
fn shared_pair(fs: &Fs, n: u64) -> (u64, u64) {
    let src = fragmented(fs, "src", n);
    let dst = fs
        .mknod(ROOT_INO, b"dst", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.clone_range(src, 0, dst, 0, 0).unwrap();
    (src, dst)
}

#[test]
fn punch_truncate_unlink_of_thousands_of_shared_extents() {
    let n = 3000;
    let fs = small_journal();
    let free0 = fs.free_blocks();
    let (src, dst) = shared_pair(&fs, n);
    let size = fs.getattr(src).unwrap().size;
    fs.fallocate(
        src,
        0,
        size,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    assert!(fs.extents(src).unwrap().is_empty());
    fs.truncate(dst, BS).unwrap();
    still_writable(&fs);
    let fs = remount_clean(fs);
    let (src2, dst2) = {
        fs.unlink(ROOT_INO, b"src").unwrap();
        fs.unlink(ROOT_INO, b"dst").unwrap();
        shared_pair(&fs, n)
    };
    assert_ne!((src2, dst2), (0, 0));
    fs.unlink(ROOT_INO, b"src").unwrap();
    fs.unlink(ROOT_INO, b"dst").unwrap();
    still_writable(&fs);
    let fs = remount_clean(fs);
    // Record blocks stay allocated; everything else is back.
    let records = free0 - fs.free_blocks();
    assert!(records < 200, "{records} blocks not returned");
}

#[test]
fn clone_over_a_fragmented_destination() {
    let fs = small_journal();
    let src = fragmented(&fs, "src", 10);
    let dst = fragmented(&fs, "dst", 3000);
    let size = fs.getattr(dst).unwrap().size;
    // One source extent replaces the destination's 3000 (shared into it).
    let whole = fs.getattr(src).unwrap().size;
    fs.truncate(src, size).unwrap();
    fs.fallocate(src, 0, size, 0).unwrap();
    assert!(whole <= size);
    fs.clone_range(src, 0, dst, 0, 0).unwrap();
    assert_eq!(
        fs.read(dst, 0, size as usize).unwrap(),
        fs.read(src, 0, size as usize).unwrap()
    );
    still_writable(&fs);
    let fs = remount_clean(fs);
    assert_eq!(fs.getattr(dst).unwrap().size, size);
}

#[test]
fn unshare_of_thousands_of_shared_extents() {
    let fs = small_journal();
    let (src, dst) = shared_pair(&fs, 2000);
    fs.unshare(dst, 0, 0).unwrap();
    let size = fs.getattr(src).unwrap().size;
    assert_eq!(
        fs.read(dst, 0, size as usize).unwrap(),
        fs.read(src, 0, size as usize).unwrap()
    );
    still_writable(&fs);
    let fs = remount_clean(fs);
    assert!(fs
        .extents_detail(dst)
        .unwrap()
        .iter()
        .all(|e| e.refcount == 1));
}

/// An operation that cannot fit is refused before anything is written: the
/// mount stays writable (it used to go read-only on any failed commit).
#[test]
fn errors_leave_the_mount_writable() {
    let fs = small_journal();
    let ino = fragmented(&fs, "f", 10);
    assert_eq!(
        fs.fallocate(ino, 0, 1 << 40, 0),
        Err(FsError::NoSpace),
        "more blocks than the filesystem has"
    );
    still_writable(&fs);
}

/// One extent whose bitmap bytes alone exceed the journal: 2.5 GiB on a
/// 3 GiB filesystem with a 16-block journal (80 KiB of bitmap bytes against
/// 60 KiB of journal). Allocated, cloned, punched and freed.
#[test]
fn one_extent_larger_than_the_journal() {
    let m = Media::anonymous(3 << 30).unwrap();
    mkfs(
        &m,
        &MkfsOptions {
            journal_blocks: Some(16),
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    let free0 = fs.free_blocks();
    let len = 5u64 << 29;
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.fallocate(a, 0, len, 0).unwrap();
    assert_eq!(fs.getattr(a).unwrap().blocks * 512, len);
    fs.write(a, len - 5, b"tail!", false).unwrap();
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.clone_range(a, 0, b, 0, 0).unwrap();
    fs.fallocate(
        a,
        BS,
        len - 2 * BS,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    assert_eq!(fs.getattr(a).unwrap().blocks * 512, 2 * BS);
    still_writable(&fs);
    let fs = remount_clean(fs);
    assert_eq!(fs.read(b, len - 5, 5).unwrap(), b"tail!");
    fs.unlink(ROOT_INO, b"a").unwrap();
    fs.truncate(b, 0).unwrap();
    fs.unlink(ROOT_INO, b"b").unwrap();
    let fs = remount_clean(fs);
    assert!(free0 - fs.free_blocks() < 16);
}
