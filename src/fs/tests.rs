//! Core filesystem tests over the in-memory media backend (no FUSE).

use super::*;
use crate::fs::make::{mkfs, MkfsOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;

pub(super) const C: Cred = Cred {
    uid: 1000,
    gid: 1000,
    umask: 0,
};

pub(super) fn fresh(blocks: u64) -> Fs {
    fresh_model(blocks, crate::pages::PageModel::default())
}

/// A new filesystem of `blocks` blocks in memory under page model `model`.
pub(super) fn fresh_model(blocks: u64, model: crate::pages::PageModel) -> Fs {
    let m = Media::anonymous(blocks * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    Fs::mount(
        m,
        FsOptions {
            page_model: model,
            ..FsOptions::default()
        },
    )
    .unwrap()
}

/// Unmount and mount the same memory again.
pub(super) fn remount(fs: Fs) -> Fs {
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
    // A write that must copy shared blocks (copy-on-write) into more blocks
    // than are free: it fails as a whole, both files and the free count as
    // before; a write that fits then moves only its own blocks.
    let fs = fresh(1024);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let data: Vec<u8> = (0..16 * BS as usize).map(|i| (i / 7) as u8).collect();
    fs.write(a.ino, 0, &data, false).unwrap();
    fs.clone_range(a.ino, 0, b.ino, 0, 0).unwrap();
    // Fill the rest, leaving 4 blocks available (beyond the reserve).
    let filler = fs
        .mknod(ROOT_INO, b"filler", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let left = fs.statfs().bavail - 4;
    fs.write(filler.ino, 0, &vec![1u8; (left * BS) as usize], false)
        .unwrap();
    assert_eq!(fs.statfs().bavail, 4);
    let free = fs.free_blocks();
    let shared = |ino| {
        fs.extents_detail(ino)
            .unwrap()
            .iter()
            .all(|e| e.refcount == 2)
    };
    assert!(shared(b.ino));
    // Overwrite 8 shared blocks of b: 8 new blocks needed, 4 free.
    let new = vec![9u8; 8 * BS as usize];
    assert_eq!(fs.write(b.ino, 2 * BS, &new, false), Err(FsError::NoSpace));
    assert_eq!(fs.read(b.ino, 0, data.len()).unwrap(), data);
    assert_eq!(fs.read(a.ino, 0, data.len()).unwrap(), data);
    assert_eq!(fs.getattr(b.ino).unwrap().size, data.len() as u64);
    assert!(shared(b.ino), "a failed write unshared blocks");
    assert_eq!(fs.free_blocks(), free);
    // Two blocks fit: exactly those two move.
    fs.write(b.ino, 2 * BS, &new[..2 * BS as usize], false)
        .unwrap();
    assert_eq!(fs.free_blocks(), free - 2);
    let mut want = data.clone();
    want[2 * BS as usize..4 * BS as usize].fill(9);
    assert_eq!(fs.read(b.ino, 0, data.len()).unwrap(), want);
    assert_eq!(fs.read(a.ino, 0, data.len()).unwrap(), data);
}

/// Transactions committed so far (the journal's applied sequence number).
fn commits(fs: &Fs) -> u64 {
    let geo = journal_geometry(&fs.sb, fs.media.len());
    crate::journal::Journal::inspect(&fs.media, geo).unwrap().0
}

#[test]
fn hundred_thousand_extents_reads_commit_nothing_and_truncate_batches() {
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
    // Reads and seeks are served from the DRAM extent map: no transaction.
    let c0 = commits(&fs);
    assert_eq!(fs.read(a.ino, (n - 1) * 2 * BS, 8).unwrap(), vec![1u8; 8]);
    assert_eq!(fs.lseek(a.ino, BS, libc::SEEK_DATA).unwrap(), 2 * BS);
    assert_eq!(commits(&fs), c0);
    // Truncate frees the extents in batches of FREE_BATCH, one transaction each.
    fs.truncate(a.ino, 0).unwrap();
    assert_eq!(fs.extents(a.ino).unwrap().len(), 0);
    let batches = n.div_ceil(FREE_BATCH as u64);
    assert_eq!(commits(&fs) - c0, batches, "truncate of {n} extents");
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

// ---------------------------------------------------------------------------
// Reflink against a model
// ---------------------------------------------------------------------------

/// Every physical block's reference count equals the number of (file, block)
/// mappings of it; used data blocks = distinct mapped blocks + the rest.
fn check_refcounts(fs: &Fs, inos: &[u64]) {
    let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut reported: BTreeMap<u64, u32> = BTreeMap::new();
    for ino in inos {
        let Ok(ext) = fs.extents_detail(*ino) else {
            continue;
        };
        for e in ext {
            for b in e.physical..e.physical + e.length {
                *refs.entry(b).or_default() += 1;
                reported.insert(b, e.refcount);
            }
        }
    }
    assert_eq!(refs, reported, "refcounts differ from the extent maps");
}

#[derive(Debug, Clone)]
enum ROp {
    Write(usize, u64, u16, u8),
    Clone(usize, usize, u64, u64, u64),
    CloneAll(usize, usize),
    Copy(usize, usize, u64, u64, u64),
    Dedupe(usize, usize, u64, u64, u64),
    Punch(usize, u64, u64),
    Zero(usize, u64, u64),
    Truncate(usize, u64),
    Unshare(usize),
    Recreate(usize),
    Remount,
}

fn rop() -> impl Strategy<Value = ROp> {
    let f = 0usize..3;
    prop_oneof![
        4 => (f.clone(), 0u64..40_000, 1u16..9000, any::<u8>()).prop_map(|(i, o, l, b)| ROp::Write(i, o, l, b)),
        3 => (f.clone(), f.clone(), 0u64..8, 0u64..8, 0u64..6).prop_map(|(a, b, s, d, n)| ROp::Clone(a, b, s, d, n)),
        2 => (f.clone(), f.clone()).prop_map(|(a, b)| ROp::CloneAll(a, b)),
        2 => (f.clone(), f.clone(), 0u64..30_000, 0u64..30_000, 1u64..20_000).prop_map(|(a, b, s, d, n)| ROp::Copy(a, b, s, d, n)),
        1 => (f.clone(), f.clone(), 0u64..8, 0u64..8, 1u64..4).prop_map(|(a, b, s, d, n)| ROp::Dedupe(a, b, s, d, n)),
        1 => (f.clone(), 0u64..40_000, 1u64..20_000).prop_map(|(i, o, l)| ROp::Punch(i, o, l)),
        1 => (f.clone(), 0u64..40_000, 1u64..20_000).prop_map(|(i, o, l)| ROp::Zero(i, o, l)),
        1 => (f.clone(), 0u64..40_000).prop_map(|(i, s)| ROp::Truncate(i, s)),
        1 => f.clone().prop_map(ROp::Unshare),
        1 => f.clone().prop_map(ROp::Recreate),
        1 => Just(ROp::Remount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn reflink_matches_model(ops in prop::collection::vec(rop(), 1..40)) {
        let mut fs = fresh(4096);
        let free0 = fs.free_blocks();
        let names = [b"f0".as_slice(), b"f1", b"f2"];
        let mut inos: Vec<u64> = names
            .iter()
            .map(|n| fs.mknod(ROOT_INO, n, libc::S_IFREG | 0o644, 0, C).unwrap().ino)
            .collect();
        let mut model: Vec<Vec<u8>> = vec![Vec::new(); 3];
        for op in ops {
            match op {
                ROp::Write(i, off, len, b) => {
                    fs.write(inos[i], off, &vec![b; len as usize], false).unwrap();
                    let end = off as usize + len as usize;
                    if model[i].len() < end { model[i].resize(end, 0); }
                    model[i][off as usize..end].fill(b);
                }
                ROp::Clone(a, b, s, d, n) => {
                    let (so, dof, len) = (s * BS, d * BS, n * BS);
                    let r = fs.clone_range(inos[a], so, inos[b], dof, len);
                    let slen = model[a].len() as u64;
                    let expect_ok = so <= slen && (len == 0 || so + len <= slen)
                        && !(a == b && {
                            let l = if len == 0 { slen - so } else { len };
                            let nb = l.div_ceil(BS);
                            d < s + nb && s < d + nb
                        })
                        && (len != 0 || (slen - so).is_multiple_of(BS) || dof + (slen - so) >= model[b].len() as u64);
                    prop_assert_eq!(r.is_ok(), expect_ok, "clone {:?} -> {:?}", (a, b, s, d, n), r);
                    if let Ok(l @ 1..) = r {
                        let src = model[a][so as usize..(so + l) as usize].to_vec();
                        let end = (dof + l) as usize;
                        if model[b].len() < end { model[b].resize(end, 0); }
                        model[b][dof as usize..end].copy_from_slice(&src);
                    }
                }
                ROp::CloneAll(a, b) => {
                    if a == b { continue; }
                    fs.truncate(inos[b], 0).unwrap();
                    model[b].clear();
                    let l = fs.clone_range(inos[a], 0, inos[b], 0, 0).unwrap();
                    prop_assert_eq!(l, model[a].len() as u64);
                    model[b] = model[a].clone();
                }
                ROp::Copy(a, b, s, d, n) => {
                    let r = fs.copy_range(inos[a], s, inos[b], d, n);
                    let slen = model[a].len() as u64;
                    let len = if s >= slen { 0 } else { n.min(slen - s) };
                    if a == b && len > 0 && d < s + len && s < d + len {
                        prop_assert_eq!(r, Err(FsError::Invalid));
                        continue;
                    }
                    prop_assert_eq!(r.clone(), Ok(len));
                    if len > 0 {
                        let src = model[a][s as usize..(s + len) as usize].to_vec();
                        let end = (d + len) as usize;
                        if model[b].len() < end { model[b].resize(end, 0); }
                        model[b][d as usize..end].copy_from_slice(&src);
                    }
                }
                ROp::Dedupe(a, b, s, d, n) => {
                    let (so, dof, len) = (s * BS, d * BS, n * BS);
                    let r = fs.dedupe_range(inos[a], so, inos[b], dof, len);
                    if let Ok((st, _)) = r {
                        let same = model[a][so as usize..(so + len) as usize] == model[b][dof as usize..(dof + len) as usize];
                        prop_assert_eq!(st == DedupeStatus::Same, same);
                    }
                }
                ROp::Punch(i, off, len) => {
                    fs.fallocate(inos[i], off, len, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE).unwrap();
                    let e = ((off + len) as usize).min(model[i].len());
                    if (off as usize) < e { model[i][off as usize..e].fill(0); }
                }
                ROp::Zero(i, off, len) => {
                    fs.fallocate(inos[i], off, len, libc::FALLOC_FL_ZERO_RANGE).unwrap();
                    let e = (off + len) as usize;
                    if model[i].len() < e { model[i].resize(e, 0); }
                    model[i][off as usize..e].fill(0);
                }
                ROp::Truncate(i, sz) => {
                    fs.truncate(inos[i], sz).unwrap();
                    model[i].resize(sz as usize, 0);
                }
                ROp::Unshare(i) => {
                    fs.unshare(inos[i], 0, 0).unwrap();
                    for e in fs.extents_detail(inos[i]).unwrap() {
                        prop_assert_eq!(e.refcount, 1);
                    }
                }
                ROp::Recreate(i) => {
                    fs.unlink(ROOT_INO, names[i]).unwrap();
                    inos[i] = fs.mknod(ROOT_INO, names[i], libc::S_IFREG | 0o644, 0, C).unwrap().ino;
                    model[i].clear();
                }
                ROp::Remount => fs = remount(fs),
            }
            for i in 0..3 {
                let got = fs.read(inos[i], 0, 1 << 20).unwrap();
                prop_assert!(got == model[i], "file {} differs from the model", i);
            }
            check_refcounts(&fs, &inos);
        }
        for n in names { fs.unlink(ROOT_INO, n).unwrap(); }
        let fs = remount(fs);
        let st = fs.share_stats();
        prop_assert_eq!((st.shared_blocks, st.saved_blocks, st.refcount_records), (0, 0, 0));
        // All data blocks return; at most the record blocks stay.
        prop_assert!(fs.free_blocks() + 8 >= free0, "{} of {}", fs.free_blocks(), free0);
    }
}

#[test]
fn clone_of_large_file_is_constant_work() {
    let fs = fresh(1 << 16);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.fallocate(a.ino, 0, 128 << 20, 0).unwrap();
    fs.write(a.ino, 12345, b"marker", false).unwrap();
    assert_eq!(fs.extents(a.ino).unwrap().len(), 1);
    let free = fs.free_blocks();
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    assert_eq!(fs.clone_range(a.ino, 0, b.ino, 0, 0).unwrap(), 128 << 20);
    // Nothing copied: at most a record block or two.
    assert!(free - fs.free_blocks() <= 2);
    let d = fs.extents_detail(b.ino).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].refcount, 2);
    assert_eq!(fs.share_stats().saved_blocks, 32768);
    // CoW: a write into b moves one block only, a stays.
    fs.write(b.ino, 12345, b"MARKER", false).unwrap();
    assert_eq!(fs.read(a.ino, 12345, 6).unwrap(), b"marker");
    assert_eq!(fs.read(b.ino, 12345, 6).unwrap(), b"MARKER");
    assert_eq!(fs.share_stats().saved_blocks, 32767);
    assert_eq!(fs.extents_detail(b.ino).unwrap().len(), 3);
}

#[test]
fn hundred_thousand_entry_directory() {
    let m = Media::anonymous(1 << 30).unwrap();
    mkfs(
        &m,
        &MkfsOptions {
            inodes: Some(110_000),
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    let d = fs.mkdir(ROOT_INO, b"big", 0o755, C).unwrap().ino;
    let n = 100_000u32;
    let c0 = commits(&fs);
    for i in 0..n {
        fs.mknod(
            d,
            format!("entry-{i:06}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            C,
        )
        .unwrap();
    }
    // One transaction per create, whatever the directory's size.
    assert_eq!(commits(&fs) - c0, n as u64);
    // Lookups go through the directory's hash index (no scan of the entries).
    for i in (0..n).step_by(997) {
        fs.lookup(d, format!("entry-{i:06}").as_bytes()).unwrap();
    }
    assert_eq!(fs.lookup(d, b"entry-x"), Err(FsError::NotFound));
    let fs = remount(fs);
    let mut seen = 0usize;
    let mut off = 0;
    loop {
        let batch = fs.readdir(d, off, 4096).unwrap();
        if batch.is_empty() {
            break;
        }
        off = batch.last().unwrap().offset;
        seen += batch.len();
    }
    assert_eq!(seen, n as usize + 2);
    fs.lookup(d, b"entry-099999").unwrap();
    fs.unlink(d, b"entry-050000").unwrap();
    assert_eq!(fs.lookup(d, b"entry-050000"), Err(FsError::NotFound));
}

/// Rewrite the on-media directory entry `name` of directory `dir` (a
/// hostile image: every checksum right), then try to mount.
fn mount_with_dirent(fs: Fs, dir: u64, name: &[u8], new: DirentRec) -> FsResult<Fs> {
    let slot = fs
        .get(dir)
        .unwrap()
        .read()
        .unwrap()
        .dir
        .as_ref()
        .unwrap()
        .get(name)
        .unwrap()
        .slot;
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).ok().expect("sole owner");
    media.write_at(slot, &new.encode()).unwrap();
    Fs::mount(media, FsOptions::default())
}

#[test]
fn mount_refuses_cycles_doubly_named_directories_and_wrong_types() {
    let setup = || {
        let fs = fresh(4096);
        let a = fs.mkdir(ROOT_INO, b"a", 0o755, C).unwrap().ino;
        let b = fs.mkdir(a, b"b", 0o755, C).unwrap().ino;
        let f = fs
            .mknod(ROOT_INO, b"f", libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        (fs, a, b, f)
    };
    let dir_type = ftype_byte(libc::S_IFDIR);
    let dirent = |parent, child, name: &[u8]| DirentRec {
        parent,
        child,
        ftype: dir_type,
        name: name.to_vec(),
    };
    type Case = fn(u64, u64, u64) -> (u64, &'static [u8], u64, u64, &'static [u8]);
    let cases: [(Case, &str); 3] = [
        // "a" named inside b (its own child): a cycle, cut off from the root.
        (|a, b, _| (ROOT_INO, b"a", b, a, b"a"), "cycle"),
        // "f" in the root now names directory b, which a also names.
        (|_, b, _| (ROOT_INO, b"f", ROOT_INO, b, b"f"), "named twice"),
        // "f" says directory, but the inode is a regular file.
        (|_, _, f| (ROOT_INO, b"f", ROOT_INO, f, b"f"), "file type"),
    ];
    for (case, want) in cases {
        let (fs, a, b, f) = setup();
        let (dir, entry, parent, child, name) = case(a, b, f);
        let e = mount_with_dirent(fs, dir, entry, dirent(parent, child, name))
            .err()
            .unwrap_or_else(|| panic!("mounted despite: {want}"));
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn a_full_filesystem_can_always_be_emptied() {
    // Small files in several directories until nothing more fits, then
    // delete everything: every unlink and rmdir must succeed, and all the
    // space must come back.
    let fs = fresh(2048);
    let free0 = fs.free_blocks();
    let dirs: Vec<u64> = (0..8)
        .map(|i| {
            fs.mkdir(ROOT_INO, format!("d{i}").as_bytes(), 0o755, C)
                .unwrap()
                .ino
        })
        .collect();
    let mut files = Vec::new();
    'fill: for n in 0.. {
        for (i, &d) in dirs.iter().enumerate() {
            let name = format!("f{n}");
            match fs.mknod(d, name.as_bytes(), libc::S_IFREG | 0o644, 0, C) {
                Ok(a) => match fs.write(a.ino, 0, &[n as u8; 12000], false) {
                    Ok(_) => files.push((d, name)),
                    Err(FsError::NoSpace) => {
                        files.push((d, name));
                        break 'fill;
                    }
                    Err(e) => panic!("write: {e}"),
                },
                Err(FsError::NoSpace) => break 'fill,
                Err(e) => panic!("create in d{i}: {e}"),
            }
        }
    }
    assert!(files.len() > 100, "only {} files fit", files.len());
    for (d, name) in &files {
        fs.unlink(*d, name.as_bytes())
            .unwrap_or_else(|e| panic!("unlink {name} on a full filesystem: {e}"));
    }
    for i in 0..8 {
        fs.rmdir(ROOT_INO, format!("d{i}").as_bytes())
            .unwrap_or_else(|e| panic!("rmdir d{i}: {e}"));
    }
    let fs = remount(fs);
    // Record blocks stay allocated (they are reused, not returned).
    assert!(
        fs.free_blocks() + 64 >= free0,
        "{} of {free0} free",
        fs.free_blocks()
    );
    fs.unmount().unwrap();
    let Fs { media, .. } = fs;
    let r = crate::tools::fsck::check(&media, false);
    assert!(r.is_clean(), "{r:?}");
}

#[test]
fn extent_changes_of_a_failed_transaction_are_undone_in_dram() {
    // What write_locked and zero-range do while building a transaction:
    // DRAM changes applied as they go, put back when the transaction fails.
    let fs = fresh(4096);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    for i in 0..6u64 {
        fs.write(a.ino, i * 3 * BS, &[i as u8; 4096], false)
            .unwrap();
    }
    let r = fs.get(a.ino).unwrap();
    let mut g = r.write().unwrap();
    let before = (
        g.extents.clone(),
        g.mapped,
        fs.owners_of(g.find(0).unwrap().1.phys),
    );
    let rmap_before = fs.rmap.lock().clone();
    let first = g.extents.iter().next().unwrap().1;
    let mut undo = Vec::new();
    // Replace the first extent, remove the second, map a new one.
    fs.apply_op_undoable(
        &mut g,
        ExtOp::Put(
            0,
            Ext {
                phys: first.phys + 100,
                len: 2,
                slot: first.slot,
            },
            1,
        ),
        &mut undo,
    );
    let second = g.extents.iter().nth(1).unwrap().0;
    let len = g.extents.get(second).unwrap().len;
    fs.apply_op_undoable(&mut g, ExtOp::Remove(second, len), &mut undo);
    fs.apply_op_undoable(
        &mut g,
        ExtOp::Put(
            100,
            Ext {
                phys: first.phys + 200,
                len: 1,
                slot: 0,
            },
            1,
        ),
        &mut undo,
    );
    assert_ne!(g.extents, before.0);
    fs.undo_ops(&mut g, undo, before.1);
    assert_eq!(g.extents, before.0);
    assert_eq!(g.mapped, before.1);
    assert_eq!(*fs.rmap.lock(), rmap_before);
    drop(g);
    let fs = remount(fs);
    assert_eq!(fs.read(a.ino, 0, 4096).unwrap(), vec![0u8; 4096]);
}
