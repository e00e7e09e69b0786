//! Unit tests of the compact DRAM indexes through the filesystem: paged
//! extent listing, the reverse map against a brute-force answer, and record
//! blocks going back to free space.

use super::*;
use crate::fs::make::{mkfs, MkfsOptions};

const C: Cred = Cred::ROOT;

fn fresh(blocks: u64) -> Fs {
    let m = Media::anonymous(blocks * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    Fs::mount(m, FsOptions::default()).unwrap()
}

fn remount(fs: Fs) -> Fs {
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).ok().expect("sole owner");
    Fs::mount(media, FsOptions::default()).unwrap()
}

/// A file of `n` one-block extents (every other block written).
fn sparse_file(fs: &Fs, name: &[u8], n: u64) -> u64 {
    let a = fs
        .mknod(ROOT_INO, name, libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    for i in 0..n {
        fs.write(a, 2 * i * BS, &[i as u8; 4096], false).unwrap();
    }
    a
}

#[test]
fn extent_pages_cover_the_listing_once() {
    let fs = fresh(8192);
    let a = sparse_file(&fs, b"a", 1200);
    // Share a part, so that pieces split where the count changes.
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.clone_range(a, 100 * BS, b, 0, 300 * BS).unwrap();
    let all = fs.extents_detail(a).unwrap();
    assert_eq!(all.len(), 1200);
    let mut got = Vec::new();
    let mut start = 0;
    loop {
        let (page, next) = fs.extents_page(a, start, 500).unwrap();
        assert!(page.len() <= 500);
        got.extend(page);
        match next {
            Some(n) => start = n,
            None => break,
        }
    }
    assert_eq!(got, all);
    // A start inside a hole begins at the next extent; a start past the end
    // gives an empty last page.
    let (p, _) = fs.extents_page(a, 3, 2).unwrap();
    assert_eq!(p[0].logical, 4);
    assert_eq!(fs.extents_page(a, 1 << 30, 10).unwrap(), (Vec::new(), None));
}

#[test]
fn reverse_map_agrees_with_every_extent() {
    let fs = fresh(8192);
    let a = sparse_file(&fs, b"a", 300);
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    // Overlapping shares at different offsets: owners of a block overlap.
    fs.clone_range(a, 0, b, 0, 599 * BS).unwrap();
    fs.clone_range(a, 10 * BS, b, 1000 * BS, 300 * BS).unwrap();
    fs.write(b, 5 * BS, &[9u8; 8192], false).unwrap();
    let mut truth: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for ino in [a, b] {
        for (l, p, n) in fs.extents(ino).unwrap() {
            for i in 0..n {
                truth.entry(p + i).or_default().push((ino, l + i));
            }
        }
    }
    let (lo, hi) = (fs.sb.data_start, fs.sb.total_blocks);
    for blk in lo..hi {
        let mut want = truth.get(&blk).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(fs.owners_of(blk), want, "block {blk}");
    }
}

#[test]
fn record_blocks_return_to_free_space() {
    let fs = fresh(16384);
    let free0 = fs.free_blocks();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    for i in 0..2000u32 {
        let a = fs
            .mknod(d, format!("f{i}").as_bytes(), libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(a, 0, &[1u8; 100], false).unwrap();
    }
    let a = sparse_file(&fs, b"big", 700);
    assert!(fs.meta.lock().rec.block_count() > 150);
    for i in 0..2000u32 {
        fs.unlink(d, format!("f{i}").as_bytes()).unwrap();
    }
    fs.truncate(a, 0).unwrap();
    fs.unlink(ROOT_INO, b"big").unwrap();
    fs.rmdir(ROOT_INO, b"d").unwrap();
    assert_eq!(fs.meta.lock().rec.block_count(), 0);
    assert_eq!(fs.free_blocks(), free0);
    let fs = remount(fs);
    assert_eq!(fs.free_blocks(), free0);
    assert_eq!(fs.readdir(ROOT_INO, 0, 100).unwrap().len(), 2);
}
