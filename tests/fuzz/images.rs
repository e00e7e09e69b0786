//! The base images the fuzzer corrupts, built through the core API, and small
//! helpers over image bytes.

use std::sync::Arc;

use daxlink::check::acl::{Acl, Entry, GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};
use daxlink::format::{self, JournalHdr, RecKind, Roots, Superblock, TxState, ROOT_INO};
use daxlink::fs::make::{mkfs, MkfsOptions};
use daxlink::fs::{journal_geometry, walk_chain, Cred, Fs, FsOptions};
use daxlink::journal::Journal;
use daxlink::media::Media;

pub const BS: u64 = format::BLOCK_SIZE;
/// 4 MiB: room for a few hundred files, small enough for thousands of cases.
pub const IMG_BLOCKS: u64 = 1024;
const C: Cred = Cred::ROOT;

pub fn mem(bytes: &[u8]) -> Media {
    let m = Media::anonymous(bytes.len() as u64).unwrap();
    m.write_at(0, bytes).unwrap();
    m
}

pub fn bytes_of(m: &Media) -> Vec<u8> {
    m.read_vec(0, m.len() as usize).unwrap()
}

/// Hand back the media of an `Fs` (after its unmount).
pub fn into_media(fs: Fs) -> Media {
    let Fs { media, .. } = fs;
    Arc::try_unwrap(media)
        .ok()
        .expect("sole owner of the media")
}

/// The superblock of an intact base image.
pub fn sb_of(bytes: &[u8]) -> Superblock {
    Superblock::decode(bytes, bytes.len() as u64).unwrap()
}

pub fn put(bytes: &mut [u8], off: u64, data: &[u8]) {
    let s = off as usize;
    if s < bytes.len() {
        let n = data.len().min(bytes.len() - s);
        bytes[s..s + n].copy_from_slice(&data[..n]);
    }
}

/// Every slot of a record kind, free or not: (slot offset, slot bytes). Stops
/// at the first bad link (the image may be corrupt already).
pub fn all_slots(bytes: &[u8], kind: RecKind) -> Vec<(u64, Vec<u8>)> {
    let m = mem(bytes);
    let Ok(sb) = Superblock::decode(bytes, bytes.len() as u64) else {
        return Vec::new();
    };
    let Ok(roots) = Roots::decode(&bytes[(2 * BS) as usize..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = walk_chain(&m, &sb, kind, roots.heads[kind.index()], |off, b| {
        out.push((off, b.to_vec()));
        Ok(())
    });
    out
}

fn file(fs: &Fs, dir: u64, name: &str, data: &[u8]) -> u64 {
    let a = fs
        .mknod(dir, name.as_bytes(), libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    if !data.is_empty() {
        fs.write(a.ino, 0, data, false).unwrap();
    }
    a.ino
}

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect()
}

/// A populated filesystem: nested directories with many files, hard links,
/// symlinks (short and long), xattrs (small and a multi-block blob), access
/// and default ACLs, reflinked clones (whole and partial), a sparse file, a
/// file of more extents than one record block holds, a fifo and a device.
pub fn populated() -> Vec<u8> {
    let m = Media::anonymous(IMG_BLOCKS * BS).unwrap();
    mkfs(
        &m,
        &MkfsOptions {
            label: "fuzz-base".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    let mut dirs = vec![ROOT_INO];
    for d in 0..4 {
        let a = fs
            .mkdir(ROOT_INO, format!("d{d}").as_bytes(), 0o755, C)
            .unwrap();
        dirs.push(a.ino);
        for s in 0..2 {
            let b = fs
                .mkdir(a.ino, format!("s{s}").as_bytes(), 0o750, C)
                .unwrap();
            dirs.push(b.ino);
        }
    }
    let mut files = Vec::new();
    for i in 0..60u64 {
        let dir = dirs[(i as usize) % dirs.len()];
        let len = [0usize, 17, 4096, 5000, 9000][(i % 5) as usize];
        files.push(file(&fs, dir, &format!("f{i}"), &pattern(i, len)));
    }
    // Hard links (one file linked three times, across directories).
    fs.link(files[1], dirs[2], b"hl-a").unwrap();
    fs.link(files[1], dirs[5], b"hl-b").unwrap();
    fs.link(files[7], ROOT_INO, b"hl-c").unwrap();
    // Symlinks.
    fs.symlink(dirs[1], b"sym", b"../f1", C).unwrap();
    let long = vec![b'x'; 300];
    fs.symlink(ROOT_INO, b"sym-long", &long, C).unwrap();
    fs.symlink(dirs[3], b"sym-dangling", b"/nowhere/at/all", C)
        .unwrap();
    // Xattrs: small ones, and a blob of more than one block.
    fs.setxattr(files[2], b"user.comment", Some(b"fuzz base"), 0)
        .unwrap();
    fs.setxattr(files[2], b"trusted.t", Some(&[7u8; 40]), 0)
        .unwrap();
    fs.setxattr(files[3], b"user.big", Some(&pattern(3, 6000)), 0)
        .unwrap();
    fs.setxattr(dirs[1], b"user.dir", Some(b"on a directory"), 0)
        .unwrap();
    // ACLs: an access ACL on a file, a default ACL on a directory.
    let acl = Acl {
        entries: vec![
            Entry {
                tag: USER_OBJ,
                perm: 6,
                id: u32::MAX,
            },
            Entry {
                tag: USER,
                perm: 4,
                id: 1000,
            },
            Entry {
                tag: GROUP_OBJ,
                perm: 4,
                id: u32::MAX,
            },
            Entry {
                tag: GROUP,
                perm: 6,
                id: 100,
            },
            Entry {
                tag: MASK,
                perm: 6,
                id: u32::MAX,
            },
            Entry {
                tag: OTHER,
                perm: 0,
                id: u32::MAX,
            },
        ],
    };
    fs.setxattr(
        files[4],
        daxlink::check::acl::ACCESS,
        Some(&acl.encode()),
        0,
    )
    .unwrap();
    fs.setxattr(
        dirs[4],
        daxlink::check::acl::DEFAULT,
        Some(&acl.encode()),
        0,
    )
    .unwrap();
    file(&fs, dirs[4], "inherits", b"default acl");
    // Reflink: a whole clone of a multi-block file, and a partial one.
    let big = file(&fs, ROOT_INO, "big.bin", &pattern(99, 12 * BS as usize));
    let clone = file(&fs, ROOT_INO, "big.clone", b"");
    fs.clone_range(big, 0, clone, 0, 0).unwrap();
    let part = file(&fs, dirs[2], "big.part", &pattern(5, 3 * BS as usize));
    fs.clone_range(big, 4 * BS, part, BS, 4 * BS).unwrap();
    // A write into the clone: copy on write of one block.
    fs.write(clone, 2 * BS + 10, b"cow", false).unwrap();
    // Sparse.
    let sparse = file(&fs, ROOT_INO, "sparse", b"");
    fs.write(sparse, 40 * BS, b"after a hole", false).unwrap();
    // Many extents: one block every other block, more than one record block holds.
    let many = file(&fs, ROOT_INO, "many-extents", b"");
    for i in 0..140u64 {
        fs.write(many, 2 * i * BS, &pattern(i, 100), false).unwrap();
    }
    fs.mknod(ROOT_INO, b"fifo", libc::S_IFIFO | 0o644, 0, C)
        .unwrap();
    fs.mknod(dirs[1], b"null", libc::S_IFCHR | 0o666, 0x0103, C)
        .unwrap();
    fs.unmount().unwrap();
    bytes_of(&into_media(fs))
}

/// `base` after a crash: an open-unlinked file (kind-1 orphan), a block whose
/// free waits for an unpin (kind-2 orphan), and a committed transaction whose
/// stores never reached their place (the journal holds it for replay).
pub fn crashed(base: &[u8]) -> Vec<u8> {
    let fs = Fs::mount(mem(base), FsOptions::default()).unwrap();
    let orphan = file(&fs, ROOT_INO, "open-unlinked", &pattern(1, 3 * BS as usize));
    fs.open(orphan).unwrap();
    fs.unlink(ROOT_INO, b"open-unlinked").unwrap();
    let pinned = file(&fs, ROOT_INO, "pinned", &pattern(2, 2 * BS as usize));
    fs.open(pinned).unwrap();
    fs.pin(pinned, 77, 0, BS, false, true).unwrap();
    fs.truncate(pinned, 0).unwrap();
    // The crash: the transaction of a mkdir is committed, not applied.
    let geo = journal_geometry(&fs.sb, fs.media.len());
    let before = bytes_of(&fs.media);
    let (a0, _) = Journal::inspect(&fs.media, geo).unwrap();
    fs.mkdir(ROOT_INO, b"pending-dir", 0o755, C).unwrap();
    let (a1, _) = Journal::inspect(&fs.media, geo).unwrap();
    assert_eq!(a1, a0 + 1, "mkdir must be exactly one transaction");
    let mut img = bytes_of(&fs.media);
    let area_off = (geo.start_block + 1) * BS;
    let area_len = ((geo.blocks - 1) * BS) as usize;
    let area = img[area_off as usize..area_off as usize + area_len].to_vec();
    let TxState::Committed { entries, .. } = format::decode_tx(&area, a1) else {
        panic!("no committed transaction in the journal");
    };
    for e in &entries {
        let (s, n) = (e.off as usize, e.data.len());
        img[s..s + n].copy_from_slice(&before[s..s + n]);
    }
    put(
        &mut img,
        geo.start_block * BS,
        &JournalHdr { applied_seq: a0 }.encode(),
    );
    img
}

/// A base image and what the corruptions aim at.
pub struct Base {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub sb: Superblock,
    pub areas: Vec<(String, u64, u64)>,
}

impl Base {
    pub fn new(name: &'static str, bytes: Vec<u8>) -> Base {
        Base {
            name,
            sb: sb_of(&bytes),
            areas: metadata_areas(&bytes),
            bytes,
        }
    }
}

/// Metadata areas of an image: (what, start byte, length): both superblocks,
/// the roots block, the journal header and the start of its area, the used
/// part of the inode table, the bitmap, every record block, every xattr blob.
pub fn metadata_areas(bytes: &[u8]) -> Vec<(String, u64, u64)> {
    let sb = sb_of(bytes);
    let mut v = vec![
        ("superblock A".to_string(), 0, 512),
        ("superblock B".to_string(), BS, 512),
        ("roots".to_string(), 2 * BS, 64),
        ("journal header".to_string(), sb.journal_start * BS, 32),
        (
            "journal area".to_string(),
            (sb.journal_start + 1) * BS,
            2 * BS,
        ),
        ("inode table".to_string(), sb.inode_start * BS, 8 * BS),
        ("bitmap".to_string(), sb.bitmap_start * BS, BS),
    ];
    for k in format::REC_KINDS {
        let mut blocks: Vec<u64> = all_slots(bytes, k).iter().map(|(o, _)| o / BS).collect();
        blocks.dedup();
        for b in blocks {
            v.push((format!("{k:?} record block {b}"), b * BS, BS));
        }
    }
    for ino in 1..=128u64 {
        let o = sb.inode_offset(ino) as usize;
        if let Ok(r) = format::InodeRec::decode(&bytes[o..o + format::INODE_SIZE]) {
            if r.xattr_block != 0 {
                v.push((
                    format!("xattr blob of inode {ino}"),
                    r.xattr_block * BS,
                    r.xattr_blocks as u64 * BS,
                ));
            }
        }
    }
    v
}
