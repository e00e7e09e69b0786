//! fsck tests: the reference and corrupted images in images/ (`images.rs`: the
//! cases and how each image is made; `image_tests.rs`: what fsck, mount and the
//! CLI say about them), a fresh mkfs, crash states made through the core API,
//! and targeted corruptions.
//! Random corruption of realistic images is the fuzzer's (tests/fuzz/).
//!
//! The images are regenerated with
//! `cargo test --test fsck -- --ignored regenerate_images`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use daxlink::format::{
    self, ExtentRec, InodeRec, JournalHdr, RecKind, Roots, Superblock, TxState, BLOCK_SIZE,
    INODE_SIZE, ROOT_INO,
};
use daxlink::fs::make::{geometry as mkfs_geometry, mkfs, MkfsOptions};
use daxlink::fs::{journal_geometry, read_superblock, walk_chain, Cred, Fs, FsOptions};
use daxlink::journal::Journal;
use daxlink::media::{Media, PersistMode};
use daxlink::tools::fsck::{self, Report};
use daxlink::FsError;

const BS: u64 = BLOCK_SIZE;
/// 2 MiB: the smallest filesystem mkfs makes.
const IMG_BLOCKS: u64 = 512;
const C: Cred = Cred::ROOT;

mod image_tests;
mod images;

use image_tests::run_cli;
use images::{crash_after_commit, make_image, reference, Case, CASES};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(path: &Path, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap();
}

fn mem(bytes: &[u8]) -> Media {
    let m = Media::anonymous(bytes.len() as u64).unwrap();
    m.write_at(0, bytes).unwrap();
    m
}

fn bytes_of(m: &Media) -> Vec<u8> {
    m.read_vec(0, m.len() as usize).unwrap()
}

fn mount_bytes(bytes: &[u8]) -> Result<Fs, FsError> {
    Fs::mount(mem(bytes), FsOptions::default())
}

/// Unmount and hand back the media.
fn into_media(fs: Fs) -> Media {
    let Fs { media, .. } = fs;
    Arc::try_unwrap(media)
        .ok()
        .expect("sole owner of the media")
}

fn sb_of(bytes: &[u8]) -> Superblock {
    Superblock::decode(&bytes[BS as usize..], bytes.len() as u64)
        .or_else(|_| Superblock::decode(bytes, bytes.len() as u64))
        .unwrap()
}

fn put(bytes: &mut [u8], off: u64, data: &[u8]) {
    bytes[off as usize..off as usize + data.len()].copy_from_slice(data);
}

fn inode_of(bytes: &[u8], ino: u64) -> InodeRec {
    let sb = sb_of(bytes);
    let o = sb.inode_offset(ino) as usize;
    InodeRec::decode(&bytes[o..o + INODE_SIZE]).unwrap()
}

fn put_inode(bytes: &mut [u8], ino: u64, r: &InodeRec) {
    let sb = sb_of(bytes);
    put(bytes, sb.inode_offset(ino), &r.encode());
}

/// Every record of a kind: (slot offset, slot bytes).
fn records(bytes: &[u8], kind: RecKind) -> Vec<(u64, Vec<u8>)> {
    let m = mem(bytes);
    let sb = sb_of(bytes);
    let roots = Roots::decode(&bytes[(2 * BS) as usize..]).unwrap();
    let mut out = Vec::new();
    walk_chain(&m, &sb, kind, roots.heads[kind.index()], |off, b| {
        if b.iter().any(|&x| x != 0) {
            out.push((off, b.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    out
}

fn extent_of(bytes: &[u8], ino: u64) -> (u64, ExtentRec) {
    records(bytes, RecKind::Extent)
        .into_iter()
        .filter_map(|(o, b)| ExtentRec::decode(&b).unwrap().map(|r| (o, r)))
        .find(|(_, r)| r.ino == ino)
        .expect("extent record")
}

#[allow(clippy::needless_update)]
fn lookup(bytes: &[u8], path: &[&str]) -> u64 {
    let fs = Fs::mount(
        mem(bytes),
        FsOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ino = ROOT_INO;
    for p in path {
        ino = fs.lookup(ino, p.as_bytes()).unwrap().ino;
    }
    ino
}

// ---------------------------------------------------------------------------
// Fresh filesystems, crashes through the API
// ---------------------------------------------------------------------------

#[test]
fn fresh_mkfs_is_clean() {
    for blocks in [512u64, 4096, 40000] {
        let m = Media::anonymous(blocks * BS).unwrap();
        mkfs(&m, &MkfsOptions::default()).unwrap();
        let r = fsck::check(&m, false);
        assert!(r.is_clean(), "{blocks}: {r:#?}");
        assert_eq!(r.counts.inodes, 1);
        assert_eq!(r.counts.blocks_used, 0);
        let r = fsck::check(&m, true);
        assert_eq!(r.exit_code(), 0);
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fresh.img");
    daxlink::tools::mkfs::mkfs_path(&p, Some(4 << 20), false, &MkfsOptions::default()).unwrap();
    let (code, out) = run_cli(&["-n"], &p);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn open_unlinked_file_then_crash() {
    let m = Media::anonymous(2048 * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    let keep = fs
        .mknod(ROOT_INO, b"keep", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(keep.ino, 0, &vec![1u8; 50_000], false).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap();
    let gone = fs
        .mknod(d.ino, b"gone", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(gone.ino, 0, &vec![2u8; 300_000], false).unwrap();
    fs.setxattr(gone.ino, b"user.a", Some(&[3u8; 5000]), 0)
        .unwrap();
    fs.open(gone.ino).unwrap();
    fs.unlink(d.ino, b"gone").unwrap();
    // While it is open the blocks are still in use; crash now (no release, no unmount).
    let bytes = bytes_of(&into_media(fs));

    // fsck before the next mount: the orphan is reported, and -y reclaims it.
    let m = mem(&bytes);
    let r = fsck::check(&m, false);
    assert_eq!(r.codes(), vec!["orphan-reclaim"], "{r:#?}");
    assert_eq!(r.exit_code(), 4);
    let used_before = r.counts.blocks_used;
    let r = fsck::check(&m, true);
    assert_eq!(r.exit_code(), 1, "{r:#?}");
    assert!(r.counts.blocks_used < used_before - 70, "{r:#?}");
    let r = fsck::check(&m, false);
    assert!(r.is_clean(), "{r:#?}");
    let free_after_fsck = {
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        fs.free_blocks()
    };

    // Or the next mount reclaims it, and fsck is clean afterwards.
    let fs = mount_bytes(&bytes).unwrap();
    assert_eq!(fs.free_blocks(), free_after_fsck);
    assert_eq!(fs.read(keep.ino, 0, 10).unwrap(), vec![1u8; 10]);
    let m = into_media(fs); // crash again, right after mount
    let r = fsck::check(&m, false);
    assert!(r.is_clean(), "{r:#?}");
    assert!(r.notes.iter().any(|n| n.contains("not cleanly unmounted")));
}

#[test]
fn repair_of_many_problems_at_once() {
    let r = reference();
    let mut b = make_image("inode-bad-crc.img.gz", &r);
    // Add: a wrong nlink, a leaked block, a dirent ftype and a bad bitmap crc elsewhere.
    let data = lookup(&r, &["data.bin"]);
    let mut i = inode_of(&b, data);
    i.nlink = 3;
    put_inode(&mut b, data, &i);
    let m = mem(&b);
    let rep = fsck::check(&m, false);
    assert!(rep.codes().contains(&"nlink-wrong"), "{rep:#?}");
    let rep = fsck::check(&m, true);
    assert_eq!(rep.exit_code(), 1, "{rep:#?}");
    assert!(fsck::check(&m, false).is_clean());
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    // The file whose inode was lost is gone; everything else is intact.
    assert_eq!(fs.lookup(ROOT_INO, b"hello.txt"), Err(FsError::NotFound));
    let d = fs.lookup(ROOT_INO, b"data.bin").unwrap();
    assert_eq!(d.nlink, 1);
    assert_eq!(fs.read(d.ino, 0, 14000).unwrap().len(), 14000);
}

// ---------------------------------------------------------------------------
// A seeded PRNG (the image fuzzer, with random scribbles and semantic
// corruptions of realistic images, is tests/fuzz/)
// ---------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn read_superblock_agrees_with_fsck_on_copies() {
    // fsck rewrites a bad copy from the good one; read_superblock then sees no problem.
    let r = reference();
    let b = make_image("sb-a-bad.img.gz", &r);
    let m = mem(&b);
    assert_eq!(read_superblock(&m).unwrap().1.len(), 1);
    assert_eq!(fsck::check(&m, true).exit_code(), 1);
    assert!(read_superblock(&m).unwrap().1.is_empty());
}

/// Finding 7c: with both superblock copies unusable, fsck -y finds the
/// geometry again (mkfs's for the media size, or by a scan when mkfs was
/// given another journal or inode count) and keeps every file; a truncated
/// image is refused with exit 8, saying so.
#[test]
fn geometry_is_recovered_without_superblocks() {
    for (journal, inodes) in [(None, None), (Some(40), Some(2048))] {
        let m = Media::anonymous(1024 * BS).unwrap();
        let opts = MkfsOptions {
            label: "lost-sb".into(),
            journal_blocks: journal,
            inodes,
            ..Default::default()
        };
        let want = mkfs(&m, &opts).unwrap();
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap();
        let f = fs.mknod(d.ino, b"f", libc::S_IFREG | 0o644, 0, C).unwrap();
        fs.write(f.ino, 0, &[7u8; 9000], false).unwrap();
        fs.unmount().unwrap();
        let mut b = bytes_of(&into_media(fs));
        let intact = b.clone();
        // Both copies: one zeroed, one with a field changed (bad crc).
        b[..BS as usize].fill(0);
        b[BS as usize + 130] ^= 1;
        let m = mem(&b);
        assert!(Fs::mount(mem(&b), FsOptions::default()).is_err());
        let r = fsck::check(&m, false);
        assert_eq!(r.codes(), vec!["superblock-bad"], "{r:#?}");
        assert_eq!(r.exit_code(), 4);
        let r = fsck::check(&m, true);
        assert_eq!(r.exit_code(), 1, "{r:#?}");
        assert!(fsck::check(&m, false).is_clean());
        let (sb, _) = read_superblock(&m).unwrap();
        assert_eq!(
            (sb.journal_blocks, sb.inode_count, sb.data_start, sb.uuid),
            (
                want.journal_blocks,
                want.inode_count,
                want.data_start,
                want.uuid
            ),
            "journal {journal:?} inodes {inodes:?}"
        );
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        let d = fs.lookup(ROOT_INO, b"d").unwrap();
        let f = fs.lookup(d.ino, b"f").unwrap();
        assert_eq!(fs.read(f.ino, 0, 9000).unwrap(), vec![7u8; 9000]);
        fs.unmount().unwrap();
        // Truncated: the copies are intact but claim more than the image holds.
        let mut t = intact.clone();
        t.truncate(t.len() - 8 * BS as usize);
        for repair in [false, true] {
            let r = fsck::check(&mem(&t), repair);
            assert_eq!(r.exit_code(), 8, "{r:#?}");
            assert!(r.error.as_deref().unwrap().contains("truncated"), "{r:#?}");
        }
    }
}

/// Mount and fsck share their record rules (src/check/): an extent past
/// the largest file is refused by mount and repaired by fsck, and mount
/// accepts what fsck leaves.
#[test]
fn mount_and_fsck_share_extent_rules() {
    let r = reference();
    for past in [1u64 << 34, 1] {
        let mut b = r.clone();
        let ino = lookup(&b, &["data.bin"]);
        let (off, mut x) = extent_of(&b, ino);
        // The extent ends `past` blocks after the largest file's last block.
        let logical = (1u64 << 34) + past - x.len as u64;
        x.logical = logical;
        put(&mut b, off, &x.encode());
        match mount_bytes(&b) {
            Err(FsError::Corrupt(m)) => assert!(m.contains("largest file size"), "{m}"),
            other => panic!("mount of an extent at logical {logical}: {:?}", other.err()),
        }
        let m = mem(&b);
        let rep = fsck::check(&m, false);
        assert!(rep.codes().contains(&"extent-range"), "{rep:#?}");
        assert_eq!(fsck::check(&m, true).exit_code(), 1);
        assert!(fsck::check(&m, false).is_clean());
        Fs::mount(m, FsOptions::default())
            .unwrap()
            .unmount()
            .unwrap();
    }
}

// ---------------------------------------------------------------------------
// Record slots
// ---------------------------------------------------------------------------

/// Every slot of a kind, free or not: (slot offset, slot bytes).
fn all_slots(bytes: &[u8], kind: RecKind) -> Vec<(u64, Vec<u8>)> {
    let m = mem(bytes);
    let sb = sb_of(bytes);
    let roots = Roots::decode(&bytes[(2 * BS) as usize..]).unwrap();
    let mut out = Vec::new();
    let _ = walk_chain(&m, &sb, kind, roots.heads[kind.index()], |off, b| {
        out.push((off, b.to_vec()));
        Ok(())
    });
    out
}

// ---------------------------------------------------------------------------
// The core and fsck agree: random workloads through the Fs API stay clean
// ---------------------------------------------------------------------------

#[test]
fn core_workloads_stay_clean() {
    let seed: u64 = std::env::var("FSCK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        // A fixed default, so that CI runs the same cases every time (and a
        // failure reproduces); FSCK_SEED explores others.
        .unwrap_or(0x5eed_0001);
    let ops: u64 = std::env::var("FSCK_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    println!("core_workloads_stay_clean: seed = {seed} (rerun with FSCK_SEED={seed})");
    let mut rng = Rng(seed);
    let m = Media::anonymous(4096 * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    let mut fs = Fs::mount(m, FsOptions::default()).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    let names: Vec<Vec<u8>> = (0..6).map(|i| format!("f{i}").into_bytes()).collect();
    let mut open_held: Vec<u64> = Vec::new();
    let mut last = String::new();
    for op in 0..ops {
        let n = &names[rng.below(names.len() as u64) as usize];
        let parent = if rng.below(2) == 0 { ROOT_INO } else { d };
        let ino = fs.lookup(parent, n).ok().map(|a| a.ino);
        let other = fs
            .lookup(ROOT_INO, &names[rng.below(names.len() as u64) as usize])
            .ok()
            .map(|a| a.ino);
        let off = rng.below(40) * if rng.below(3) == 0 { 1000 } else { BS };
        let len = 1 + rng.below(12) * BS + rng.below(2) * rng.below(BS);
        let what = match (rng.below(12), ino) {
            (_, None) => {
                let _ = fs.mknod(parent, n, libc::S_IFREG | 0o644, 0, C);
                "create"
            }
            (0..=2, Some(i)) => {
                let data = vec![(op % 251) as u8; len as usize];
                let _ = fs.write(i, off, &data, false);
                "write"
            }
            (3, Some(i)) => {
                let _ = fs.truncate(i, rng.below(30) * 1500);
                "truncate"
            }
            (4, Some(i)) => {
                let _ = fs.fallocate(
                    i,
                    off,
                    len,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                );
                "punch"
            }
            (5 | 6, Some(i)) => {
                if let Some(o) = other {
                    let _ = fs.clone_range(o, 0, i, rng.below(8) * BS, 0);
                }
                "clone"
            }
            (7, Some(i)) => {
                if let Some(o) = other {
                    let _ = fs.copy_range(o, rng.below(3) * 1000, i, off, len);
                }
                "copy_range"
            }
            (8, Some(i)) => {
                let _ = fs.unshare(i, 0, 0);
                "unshare"
            }
            (9, Some(i)) => {
                if rng.below(3) == 0 {
                    fs.open(i).unwrap();
                    open_held.push(i);
                }
                let _ = fs.unlink(parent, n);
                "unlink"
            }
            (10, Some(i)) => {
                let _ = fs.link(i, if parent == d { ROOT_INO } else { d }, n);
                let _ = fs.setxattr(i, b"user.x", Some(&vec![1u8; len as usize % 9000]), 0);
                "link+xattr"
            }
            (_, Some(_)) => {
                if let Some(i) = open_held.pop() {
                    fs.close(i).unwrap();
                }
                "release"
            }
        };
        last = format!("{last} {what}");
        if op % 25 == 24 {
            // A snapshot of the media as a crash would leave it: after mount it is clean.
            let snap = bytes_of(&fs.media);
            let ctx = format!("seed {seed} op {op}:{last}");
            let r = fsck::check(&mem(&snap), false);
            assert!(
                r.codes().iter().all(|c| *c == "orphan-reclaim"),
                "{ctx}: {r:#?}"
            );
            let after = into_media(mount_bytes(&snap).unwrap());
            let r = fsck::check(&after, false);
            assert!(r.is_clean(), "{ctx}: after mount: {r:#?}");
            last.clear();
        }
        if op % 100 == 99 {
            for i in open_held.drain(..) {
                fs.close(i).unwrap();
            }
            fs.unmount().unwrap();
            let m = into_media(fs);
            let r = fsck::check(&m, false);
            assert!(r.is_clean(), "seed {seed} op {op}: after unmount: {r:#?}");
            fs = Fs::mount(m, FsOptions::default()).unwrap();
        }
    }
    let st = fs.share_stats();
    println!(
        "core_workloads_stay_clean: {} free blocks, {} shared blocks, {} refcount records",
        fs.free_blocks(),
        st.shared_blocks,
        st.refcount_records
    );
}

/// Makes a large populated image for timing the checker:
/// `FSCK_LARGE_IMAGE=/tmp/big.img FSCK_LARGE_MB=4096 cargo test --test fsck -- --ignored large_image`,
/// then `time target/release/fsck-daxlink -n /tmp/big.img`.
#[test]
#[ignore]
fn large_image() {
    let path = PathBuf::from(
        std::env::var("FSCK_LARGE_IMAGE").unwrap_or_else(|_| "/tmp/fsck-large.img".into()),
    );
    let mb: u64 = std::env::var("FSCK_LARGE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let files: u64 = std::env::var("FSCK_LARGE_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let _ = std::fs::remove_file(&path);
    daxlink::tools::mkfs::mkfs_path(&path, Some(mb << 20), true, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(
        Media::open(&path, Some(PersistMode::None), false).unwrap(),
        FsOptions::default(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let mut dir = ROOT_INO;
    let mut prev = None;
    for i in 0..files {
        if i % 1000 == 0 {
            dir = fs
                .mkdir(ROOT_INO, format!("d{i}").as_bytes(), 0o755, C)
                .unwrap()
                .ino;
        }
        let f = fs
            .mknod(dir, format!("f{i}").as_bytes(), libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(f, 0, &vec![i as u8; (1 + i % 7) as usize * 4096], false)
            .unwrap();
        if i % 10 == 0 {
            if let Some(p) = prev {
                fs.clone_range(p, 0, f, 64 * BS, 0).unwrap();
            }
        }
        prev = Some(f);
    }
    fs.unmount().unwrap();
    drop(fs);
    println!("populated in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let r = fsck::check_path(&path, false);
    println!(
        "fsck -n (debug build) in {:?}: {}",
        t.elapsed(),
        r.summary("big")
    );
    assert!(r.is_clean(), "{r:#?}");
}

// ---------------------------------------------------------------------------
// Targeted corruptions: each must give its code, and -y must fix it
// ---------------------------------------------------------------------------

fn dirent_slot(bytes: &[u8], parent: u64, name: &[u8]) -> (u64, format::DirentRec) {
    records(bytes, RecKind::Dirent)
        .into_iter()
        .filter_map(|(o, s)| format::DirentRec::decode(&s).unwrap().map(|d| (o, d)))
        .find(|(_, d)| d.parent == parent && d.name == name)
        .expect("dirent")
}

#[test]
fn targeted_corruptions_are_repaired() {
    use daxlink::format::{DirentRec, OrphanRec, RecBlockHdr};
    let r = reference();
    let orphaned = make_image("orphan-pending.img.gz", &r);
    let sb = &*Box::leak(Box::new(sb_of(&r)));
    let hello = lookup(&r, &["hello.txt"]);
    let data = lookup(&r, &["data.bin"]);
    let dir = lookup(&r, &["dir"]);
    let link = lookup(&r, &["dir", "link"]);
    type Recipe = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, &[&str], Recipe)> = vec![
        (
            "root inode checksum",
            &["inode-bad", "root-bad"],
            Box::new(move |b| b[sb.inode_offset(1) as usize + 8] ^= 1),
        ),
        (
            "root is a regular file",
            &["root-bad"],
            Box::new(|b| {
                let mut i = inode_of(b, 1);
                i.mode = libc::S_IFREG | 0o644;
                put_inode(b, 1, &i);
            }),
        ),
        (
            "roots block checksum",
            &["roots-bad"],
            Box::new(|b| b[2 * BS as usize + 9] ^= 1),
        ),
        (
            "extent chain loops onto itself",
            &["chain-bad"],
            Box::new(|b| {
                let roots = Roots::decode(&b[(2 * BS) as usize..]).unwrap();
                let h = roots.heads[RecKind::Extent.index()];
                put(
                    b,
                    h * BS,
                    &RecBlockHdr {
                        kind: RecKind::Extent,
                        next: h,
                    }
                    .encode(),
                );
            }),
        ),
        (
            "directory inside itself",
            &["dir-cycle", "dir-unreachable"],
            Box::new(move |b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"dir");
                d.parent = dir;
                put(b, off, &d.encode());
            }),
        ),
        (
            "symlink of size 0",
            &["symlink-bad"],
            Box::new(move |b| {
                let mut i = inode_of(b, link);
                i.size = 0;
                put_inode(b, link, &i);
            }),
        ),
        (
            "symlink without its target block",
            &["block-leaked", "dirent-free-inode", "symlink-bad"],
            Box::new(move |b| {
                let (off, _) = extent_of(b, link);
                put(b, off, &[0u8; 32]);
            }),
        ),
        (
            "xattr checksum",
            &["xattr-bad"],
            Box::new(move |b| {
                let mut i = inode_of(b, hello);
                i.xattr_crc ^= 1;
                put_inode(b, hello, &i);
            }),
        ),
        (
            "bitmap block checksum",
            &["bitmap-crc"],
            Box::new(move |b| b[(sb.bitmap_start * BS) as usize + 4000] ^= 1),
        ),
        (
            "dirent file type",
            &["dirent-ftype"],
            Box::new(|b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"fifo");
                d.ftype = 8;
                put(b, off, &d.encode());
            }),
        ),
        (
            "duplicate name",
            &["dirent-dup-name", "inode-unreachable", "nlink-wrong"],
            Box::new(|b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"empty");
                d.name = b"hello.txt".to_vec();
                put(b, off, &d.encode());
            }),
        ),
        (
            "hard link to a directory",
            &["dir-multi-link", "inode-unreachable", "nlink-wrong"],
            Box::new(move |b| {
                let (off, _) = dirent_slot(b, ROOT_INO, b"fifo");
                let d = DirentRec {
                    parent: ROOT_INO,
                    child: dir,
                    ftype: 4,
                    name: b"fifo".to_vec(),
                };
                put(b, off, &d.encode());
            }),
        ),
        (
            "dirent parent is a file",
            &["dirent-bad-parent", "inode-unreachable", "nlink-wrong"],
            Box::new(move |b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"empty");
                d.parent = data;
                put(b, off, &d.encode());
            }),
        ),
        (
            "free inode with stale fields",
            &["inode-free-dirty"],
            Box::new(move |b| {
                // InodeRec::encode drops the fields of a free inode: write raw bytes.
                let o = sb.inode_offset(200) as usize;
                let mut slot = [0u8; INODE_SIZE];
                slot[12..16].copy_from_slice(&3u32.to_le_bytes());
                slot[76..80].copy_from_slice(&7u32.to_le_bytes());
                let c = format::crc(&slot[..INODE_SIZE - 4]);
                slot[INODE_SIZE - 4..].copy_from_slice(&c.to_le_bytes());
                b[o..o + INODE_SIZE].copy_from_slice(&slot);
            }),
        ),
        (
            "journal header checksum, committed transaction pending",
            &["journal-header"],
            Box::new(move |b| {
                let img = crash_after_commit(
                    b,
                    |fs| {
                        fs.mkdir(ROOT_INO, b"x", 0o755, C).unwrap();
                    },
                    false,
                );
                *b = img;
                b[(sb.journal_start * BS) as usize + 10] ^= 0x55;
            }),
        ),
    ];
    let orphan_cases: Vec<(&str, &[&str], Recipe)> = vec![
        (
            "orphan record for a linked inode",
            &["orphan-bad", "orphan-reclaim"],
            Box::new(move |b| {
                let free = all_slots(b, RecKind::Orphan)
                    .into_iter()
                    .find(|(_, s)| s.iter().all(|&x| x == 0))
                    .unwrap()
                    .0;
                put(b, free, &OrphanRec::Inode(hello).encode());
            }),
        ),
        (
            "unfinished truncate of a shared file",
            &["orphan-reclaim"],
            Box::new(move |b| {
                let free = all_slots(b, RecKind::Orphan)
                    .into_iter()
                    .find(|(_, s)| s.iter().all(|&x| x == 0))
                    .unwrap()
                    .0;
                put(
                    b,
                    free,
                    &OrphanRec::Truncate { ino: data, from: 1 }.encode(),
                );
            }),
        ),
        (
            "deferred free of a leaked block",
            &["orphan-reclaim"],
            Box::new(move |b| {
                let free = all_slots(b, RecKind::Orphan)
                    .into_iter()
                    .find(|(_, s)| s.iter().all(|&x| x == 0))
                    .unwrap()
                    .0;
                let last = sb.total_blocks - 1;
                put(b, free, &OrphanRec::Blocks { phys: last, len: 1 }.encode());
                let bit = last - sb.data_start;
                let off = (sb.bitmap_start * BS) as usize;
                b[off + (bit / 8) as usize] |= 1 << (bit % 8);
                let c = format::bitmap_crc(&b[off..off + BS as usize]);
                put(b, sb.bitmap_start * BS + 4088, &c.to_le_bytes());
            }),
        ),
    ];
    for (base, list) in [(&r, cases), (&orphaned, orphan_cases)] {
        for (name, codes, f) in list {
            let mut b = base.clone();
            f(&mut b);
            let m = mem(&b);
            let rep = fsck::check(&m, false);
            assert_eq!(rep.codes(), codes.to_vec(), "{name}: {rep:#?}");
            assert_eq!(rep.exit_code(), 4, "{name}");
            let rep = fsck::check(&m, true);
            assert_eq!(rep.exit_code(), 1, "{name}: {rep:#?}");
            let rep = fsck::check(&m, false);
            assert!(rep.is_clean(), "{name}: after -y: {rep:#?}");
            let fs = Fs::mount(m, FsOptions::default())
                .unwrap_or_else(|e| panic!("{name}: mount after -y: {e}"));
            // The untouched files are intact.
            let d = fs.lookup(ROOT_INO, b"data-clone.bin").unwrap();
            assert_eq!(fs.read(d.ino, 0, 14000).unwrap().len(), 14000, "{name}");
            fs.unmount().unwrap();
            assert!(fsck::check(&into_media(fs), false).is_clean(), "{name}");
        }
    }
}
