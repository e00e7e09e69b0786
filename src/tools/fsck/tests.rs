//! Unit tests of fsck on small in-memory images.

use super::*;
use crate::format::{self, INODE_SIZE, ROOT_INO, SB_SIZE, TX_HDR_SIZE, TX_MAGIC};
use crate::fs::make::{mkfs, MkfsOptions};
use crate::fs::{Cred, Fs, FsOptions};
use std::sync::Arc;

fn fresh() -> Media {
    let m = Media::anonymous(512 * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    m
}

fn populated() -> Media {
    let fs = Fs::mount(fresh(), FsOptions::default()).unwrap();
    let c = Cred::ROOT;
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, c)
        .unwrap();
    fs.write(a.ino, 0, &[7u8; 9000], false).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
    fs.symlink(d.ino, b"l", b"../a", c).unwrap();
    fs.link(a.ino, d.ino, b"hard").unwrap();
    fs.setxattr(a.ino, b"user.x", Some(b"y"), 0).unwrap();
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    Arc::try_unwrap(media).ok().unwrap()
}

#[test]
fn fresh_and_populated_are_clean() {
    let r = check(&fresh(), false);
    assert!(r.is_clean(), "{r:?}");
    let m = populated();
    let r = check(&m, false);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.counts.inodes, 4);
    assert_eq!(r.counts.dirs, 2);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn wrong_nlink_is_found_and_fixed() {
    let m = populated();
    let sb = crate::fs::read_superblock(&m).unwrap().0;
    let off = sb.inode_offset(2);
    let mut r = InodeRec::decode(&m.read_vec(off, INODE_SIZE).unwrap()).unwrap();
    r.nlink = 9;
    m.write_at(off, &r.encode()).unwrap();
    let rep = check(&m, false);
    assert_eq!(rep.codes(), vec!["nlink-wrong"], "{rep:?}");
    assert_eq!(rep.exit_code(), 4);
    let rep = check(&m, true);
    assert_eq!(rep.exit_code(), 1, "{rep:?}");
    assert!(check(&m, false).is_clean());
}

#[test]
fn malformed_acl_is_found_and_removed() {
    use crate::check::acl::{Acl, Entry, ACCESS, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};
    let fs = Fs::mount(fresh(), FsOptions::default()).unwrap();
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, Cred::ROOT)
        .unwrap();
    let e = |tag, perm, id| Entry { tag, perm, id };
    let acl = Acl {
        entries: vec![
            e(USER_OBJ, 6, u32::MAX),
            e(USER, 6, 1000),
            e(GROUP_OBJ, 4, u32::MAX),
            e(MASK, 6, u32::MAX),
            e(OTHER, 4, u32::MAX),
        ],
    };
    fs.setxattr(a.ino, ACCESS, Some(&acl.encode()), 0).unwrap();
    fs.setxattr(a.ino, b"user.keep", Some(b"kept"), 0).unwrap();
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    let m = Arc::try_unwrap(media).ok().unwrap();
    // A hostile image: the named user's entry gets bits beyond rwx,
    // with every checksum right.
    let sb = crate::fs::read_superblock(&m).unwrap().0;
    let off = sb.inode_offset(a.ino);
    let mut r = InodeRec::decode(&m.read_vec(off, INODE_SIZE).unwrap()).unwrap();
    let mut blob = m
        .read_vec(r.xattr_block * BS, r.xattr_len as usize)
        .unwrap();
    let v = acl.encode();
    let at = blob.windows(v.len()).position(|w| w == v).unwrap();
    blob[at + 4 + 8 + 2] = 0o10;
    m.write_at(r.xattr_block * BS, &blob).unwrap();
    r.xattr_crc = format::crc(&blob);
    m.write_at(off, &r.encode()).unwrap();
    let rep = check(&m, false);
    assert_eq!(rep.codes(), vec!["acl-bad"], "{rep:?}");
    assert_eq!(check(&m, true).exit_code(), 1);
    assert!(check(&m, false).is_clean());
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    assert_eq!(fs.getxattr(a.ino, b"user.keep").unwrap(), b"kept");
    assert_eq!(fs.getxattr(a.ino, ACCESS), Err(crate::FsError::NoData));
}

#[test]
fn no_superblock_is_operational_error() {
    let m = Media::anonymous(512 * BS).unwrap();
    let r = check(&m, false);
    assert_eq!(r.exit_code(), 8);
    assert!(r.error.unwrap().contains("no valid superblock"));
}

#[test]
fn huge_journal_payload_is_torn_not_a_panic() {
    let m = fresh();
    let sb = crate::fs::read_superblock(&m).unwrap().0;
    let area = (sb.journal_start + 1) * BS;
    let mut h = [0u8; TX_HDR_SIZE];
    h[0..4].copy_from_slice(&TX_MAGIC.to_le_bytes());
    h[8..16].copy_from_slice(&1u64.to_le_bytes());
    h[16..24].copy_from_slice(&(u64::MAX - 30).to_le_bytes());
    m.write_at(area, &h).unwrap();
    let r = check(&m, false);
    assert!(r.is_clean(), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("journal-torn")));
    let r = check(&m, true);
    assert_eq!(r.exit_code(), 0, "{r:?}");
    let r = check(&m, false);
    assert!(r.notes.is_empty(), "{r:?}");
}

/// Superblock copy `i` as decoded, changed by `f`, written back with a valid
/// checksum.
fn edit_sb(m: &Media, i: u64, f: impl FnOnce(&mut crate::format::Superblock)) {
    let mut sb =
        crate::format::Superblock::decode(&m.read_vec(i * BS, SB_SIZE).unwrap(), m.len()).unwrap();
    f(&mut sb);
    m.write_persist(i * BS, &sb.encode()).unwrap();
}

#[test]
fn a_label_that_is_not_utf8_is_repaired_once() {
    let m = populated();
    // Copy A's label: 64 bytes that are not UTF-8, with a valid checksum.
    let mut b = m.read_vec(0, SB_SIZE).unwrap();
    b[40..104].fill(0xff);
    let c = format::crc(&b[..SB_SIZE - 4]);
    b[SB_SIZE - 4..].copy_from_slice(&c.to_le_bytes());
    m.write_persist(0, &b).unwrap();
    let r = check(&m, false);
    assert_eq!(r.codes(), vec!["superblock-mismatch"], "{r:?}");
    assert_eq!(check(&m, true).exit_code(), 1);
    let r = check(&m, false);
    assert!(r.is_clean(), "-n after -y: {r:?}");
}

#[test]
fn a_newer_copy_with_an_absurd_size_is_not_trusted() {
    let m = populated();
    // Copy B claims the filesystem ends just past its data start, and is newer.
    edit_sb(&m, 1, |sb| {
        sb.total_blocks = sb.data_start + 1;
        sb.generation += 5;
    });
    let r = check(&m, false);
    assert_eq!(r.codes(), vec!["superblock-mismatch"], "{r:?}");
    assert_eq!(r.counts.inodes, 4, "{r:?}");
    assert_eq!(check(&m, true).exit_code(), 1);
    let r = check(&m, false);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.counts.inodes, 4);
    // Mount agrees: the copy that fits the media.
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    assert!(fs.lookup(ROOT_INO, b"a").is_ok());
}
