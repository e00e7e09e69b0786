//! Core filesystem tests over the in-memory media backend (no FUSE).

use super::*;
use crate::mkfs::{mkfs, MkfsOptions};
use proptest::prelude::*;

const C: Cred = Cred {
    uid: 1000,
    gid: 1000,
};

fn fresh(blocks: u64) -> Fs {
    let m = Media::anonymous(blocks * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    Fs::mount(m, FsOptions::default()).unwrap()
}

/// Unmount and mount the same memory again.
fn remount(fs: Fs) -> Fs {
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).ok().expect("sole owner");
    Fs::mount(media, FsOptions::default()).unwrap()
}

#[test]
fn create_write_read_remount() {
    let fs = fresh(4096);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    assert_eq!(a.uid, 1000);
    let data: Vec<u8> = (0..10000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(fs.write(a.ino, 100, &data, false).unwrap(), data.len());
    let back = fs.read(a.ino, 0, 20000).unwrap();
    assert_eq!(back.len(), 10100);
    assert!(back[..100].iter().all(|&b| b == 0));
    assert_eq!(&back[100..], &data[..]);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap();
    fs.symlink(d.ino, b"l", b"../a", C).unwrap();
    fs.setxattr(a.ino, b"user.k", Some(b"v"), 0).unwrap();
    let free = fs.free_blocks();
    let fs = remount(fs);
    assert_eq!(fs.free_blocks(), free);
    let a2 = fs.lookup(ROOT_INO, b"a").unwrap();
    assert_eq!(a2.size, 10100);
    assert_eq!(&fs.read(a.ino, 100, 10000).unwrap()[..], &data[..]);
    let l = fs.lookup(d.ino, b"l").unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), b"../a");
    assert_eq!(fs.getxattr(a.ino, b"user.k").unwrap(), b"v");
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
}

#[test]
fn unlink_frees_space_and_orphans_survive_remount() {
    let fs = fresh(4096);
    let free0 = fs.free_blocks();
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(a.ino, 0, &vec![1u8; 1 << 20], false).unwrap();
    assert!(fs.free_blocks() < free0 - 255);
    fs.open(a.ino).unwrap();
    fs.unlink(ROOT_INO, b"a").unwrap();
    // Still open: data still readable.
    assert_eq!(fs.read(a.ino, 0, 4).unwrap(), vec![1u8; 4]);
    assert_eq!(fs.lookup(ROOT_INO, b"a"), Err(FsError::NotFound));
    // "Crash" with it open: the next mount reclaims it.
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).ok().unwrap();
    let fs = Fs::mount(media, FsOptions::default()).unwrap();
    assert_eq!(fs.getattr(a.ino), Err(FsError::NotFound));
    // Extent record blocks and the orphan block stay allocated.
    assert!(
        fs.free_blocks() >= free0 - 3,
        "{} vs {}",
        fs.free_blocks(),
        free0
    );
}

#[test]
fn rename_semantics() {
    let fs = fresh(4096);
    let d1 = fs.mkdir(ROOT_INO, b"d1", 0o755, C).unwrap();
    let d2 = fs.mkdir(ROOT_INO, b"d2", 0o755, C).unwrap();
    let f = fs.mknod(d1.ino, b"f", libc::S_IFREG | 0o644, 0, C).unwrap();
    let g = fs.mknod(d2.ino, b"g", libc::S_IFREG | 0o644, 0, C).unwrap();
    assert_eq!(
        fs.rename(d1.ino, b"f", d2.ino, b"g", libc::RENAME_NOREPLACE),
        Err(FsError::Exists)
    );
    fs.rename(d1.ino, b"f", d2.ino, b"g", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(fs.lookup(d1.ino, b"f").unwrap().ino, g.ino);
    assert_eq!(fs.lookup(d2.ino, b"g").unwrap().ino, f.ino);
    // d1/f (now g's inode) replaces d2/g (f's inode): f's inode is freed.
    fs.rename(d1.ino, b"f", d2.ino, b"g", 0).unwrap();
    assert_eq!(fs.getattr(f.ino), Err(FsError::NotFound));
    assert_eq!(
        fs.rename(ROOT_INO, b"d1", d1.ino, b"x", 0),
        Err(FsError::Invalid)
    );
    fs.rename(ROOT_INO, b"d1", d2.ino, b"d1", 0).unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(fs.getattr(d2.ino).unwrap().nlink, 3);
    assert_eq!(fs.lookup(d1.ino, b"..").unwrap().ino, d2.ino);
    assert_eq!(fs.rmdir(ROOT_INO, b"d2"), Err(FsError::NotEmpty));
    let fs = remount(fs);
    assert_eq!(fs.lookup(d1.ino, b"..").unwrap().ino, d2.ino);
    assert_eq!(fs.lookup(d2.ino, b"g").unwrap().ino, g.ino);
}

#[test]
fn enospc_leaves_file_unchanged() {
    let fs = fresh(1024);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let free = fs.free_blocks();
    let big = vec![7u8; ((free + 10) * BS) as usize];
    assert_eq!(fs.write(a.ino, 0, &big, false), Err(FsError::NoSpace));
    assert_eq!(fs.getattr(a.ino).unwrap().size, 0);
    assert_eq!(fs.free_blocks(), free);
    fs.write(a.ino, 0, &big[..4096 * 10], false).unwrap();
}

#[test]
fn hundred_thousand_extents_lookup_is_fast_enough() {
    // Every other block written: one extent per block.
    let fs = fresh(1 << 19);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let n = 100_000u64;
    for i in 0..n {
        fs.write(a.ino, i * 2 * BS, &[1u8; 8], false).unwrap();
    }
    assert_eq!(fs.extents(a.ino).unwrap().len() as u64, n);
    assert_eq!(fs.read(a.ino, (n - 1) * 2 * BS, 8).unwrap(), vec![1u8; 8]);
    assert_eq!(fs.lseek(a.ino, BS, libc::SEEK_DATA).unwrap(), 2 * BS);
    fs.truncate(a.ino, 0).unwrap();
    assert_eq!(fs.extents(a.ino).unwrap().len(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u16, u8),
    Truncate(u64),
    Punch(u64, u64),
    Zero(u64, u64),
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..200_000, 1u16..20000, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        1 => (0u64..200_000).prop_map(Op::Truncate),
        1 => (0u64..200_000, 1u64..50_000).prop_map(|(o, l)| Op::Punch(o, l)),
        1 => (0u64..200_000, 1u64..50_000).prop_map(|(o, l)| Op::Zero(o, l)),
        1 => Just(Op::Remount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// The extent map against a byte-vector model: every read equals the model.
    #[test]
    fn file_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut fs = fresh(2048);
        let a = fs.mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C).unwrap();
        let mut model: Vec<u8> = Vec::new();
        let free0 = fs.free_blocks();
        for o in ops {
            match o {
                Op::Write(off, len, b) => {
                    fs.write(a.ino, off, &vec![b; len as usize], false).unwrap();
                    let end = off as usize + len as usize;
                    if model.len() < end { model.resize(end, 0); }
                    model[off as usize..end].fill(b);
                }
                Op::Truncate(s) => {
                    fs.truncate(a.ino, s).unwrap();
                    model.resize(s as usize, 0);
                }
                Op::Punch(off, len) => {
                    fs.fallocate(a.ino, off, len, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE).unwrap();
                    let e = ((off + len) as usize).min(model.len());
                    if (off as usize) < e { model[off as usize..e].fill(0); }
                }
                Op::Zero(off, len) => {
                    fs.fallocate(a.ino, off, len, libc::FALLOC_FL_ZERO_RANGE).unwrap();
                    let e = (off + len) as usize;
                    if model.len() < e { model.resize(e, 0); }
                    model[off as usize..e].fill(0);
                }
                Op::Remount => fs = remount(fs),
            }
            let got = fs.read(a.ino, 0, 1 << 20).unwrap();
            prop_assert_eq!(got.len(), model.len());
            prop_assert!(got == model, "content differs");
            let attr = fs.getattr(a.ino).unwrap();
            let used = free0 - fs.free_blocks();
            // Mapped blocks plus record blocks account for all used space.
            prop_assert!(attr.blocks / 8 <= used);
        }
        fs.unlink(ROOT_INO, b"a").unwrap();
        let fs = remount(fs);
        // All data blocks return; at most the record blocks stay.
        prop_assert!(fs.free_blocks() + 3 >= free0);
    }
}
