//! Core tests of which path ran and what it wrote: the extent records every
//! rewrite leaves (`Ctx::write_extent`), the read path `Fs::read` shares
//! with FUSE, and the times an operation commits (no FUSE).

use super::tests::{fresh, remount, C};
use super::*;

/// Every inode's extent map (slots included), mapped count and the reverse
/// map, as DRAM holds them.
fn dram_maps(fs: &Fs, inos: &[u64]) -> (Vec<MapCopy>, RmapCopy) {
    let maps = inos
        .iter()
        .map(|i| {
            let r = fs.get(*i).unwrap();
            let g = r.read().unwrap();
            (g.extents.clone(), g.mapped)
        })
        .collect();
    (maps, fs.rmap.lock().clone())
}

type MapCopy = (index::extmap::ExtentMap, u64);
type RmapCopy = RMap;
type Step = (&'static str, Box<dyn Fn(&Fs)>);

#[test]
fn extent_records_written_match_dram_through_every_rewrite() {
    // Each way an extent record is (re)written (Ctx::write_extent): a new
    // extent, a merge with the one before, the head and the tail of a cut,
    // a cut in the middle (both), a clone's records. After each, the map a
    // mount rebuilds from the records equals DRAM's, slots included.
    let mut fs = fresh(4096);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    // The extent records' block is taken first, so a's blocks stay contiguous.
    let w = fs
        .mknod(ROOT_INO, b"w", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.write(w, 0, &[9; BS as usize], false).unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let steps: Vec<Step> = vec![
        (
            "new",
            Box::new(move |fs| {
                fs.write(a, 0, &[1; BS as usize], false).unwrap();
            }),
        ),
        (
            "merge",
            Box::new(move |fs| {
                fs.write(a, BS, &[2; 7 * BS as usize], false).unwrap();
                assert_eq!(
                    fs.extents(a).unwrap().len(),
                    1,
                    "merged: {:?}",
                    fs.extents(a)
                );
            }),
        ),
        (
            "middle cut",
            Box::new(move |fs| {
                fs.fallocate(a, 2 * BS, BS, punch).unwrap();
                assert_eq!(fs.extents(a).unwrap().len(), 2);
            }),
        ),
        (
            "head cut",
            Box::new(move |fs| {
                fs.fallocate(a, 0, BS, punch).unwrap();
            }),
        ),
        (
            "tail cut",
            Box::new(move |fs| {
                fs.truncate(a, 6 * BS).unwrap();
            }),
        ),
        (
            "clone",
            Box::new(move |fs| {
                fs.clone_range(a, 0, b, 0, 0).unwrap();
            }),
        ),
    ];
    for (what, step) in steps {
        step(&fs);
        let before = dram_maps(&fs, &[a, b]);
        fs = remount(fs);
        assert_eq!(dram_maps(&fs, &[a, b]), before, "after {what}");
    }
    assert_eq!(
        fs.extents(a)
            .unwrap()
            .iter()
            .map(|e| (e.0, e.2))
            .collect::<Vec<_>>(),
        [(1, 1), (3, 3)]
    );
}

#[test]
fn read_is_read_with_direct_path_included() {
    // Fs::read (tests, the crash oracle) runs the FUSE read path: straight
    // from the mapping inside one run, through a buffer across a hole.
    let fs = fresh(4096);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.write(a, 0, &[1; 2 * BS as usize], false).unwrap();
    fs.write(a, 3 * BS, &[3; 100], false).unwrap();
    let count = |fs: &Fs| {
        let c = &fs.counters;
        (
            c.reads_direct.load(Ordering::Relaxed),
            c.reads_buffered.load(Ordering::Relaxed),
        )
    };
    let c0 = count(&fs);
    assert_eq!(fs.read(a, 10, 5000).unwrap(), vec![1; 5000]);
    assert_eq!(count(&fs), (c0.0 + 1, c0.1), "one run: direct");
    let got = fs.read(a, BS, 3 * BS as usize).unwrap();
    assert_eq!(got.len(), 2 * BS as usize + 100);
    assert!(got[..BS as usize].iter().all(|&b| b == 1));
    assert!(got[BS as usize..2 * BS as usize].iter().all(|&b| b == 0));
    assert!(got[2 * BS as usize..].iter().all(|&b| b == 3));
    assert_eq!(count(&fs), (c0.0 + 1, c0.1 + 1), "across a hole: buffered");
}

/// Mount the same memory again without unmounting: a crash in which every
/// store reached the media (lazily kept times are lost).
fn crash(fs: Fs) -> Fs {
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).ok().expect("sole owner");
    Fs::mount(media, FsOptions::default()).unwrap()
}

#[test]
fn punch_and_zero_range_times_are_durable_when_they_return() {
    // Their edge blocks are zeroed in place through the write engine, which
    // stamps no time of its own for them: the operation commits its times.
    let mut fs = fresh(4096);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap()
        .ino;
    fs.write(a, 0, &[7; 3 * BS as usize], false).unwrap();
    fs.fsync(a).unwrap();
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    for (what, off, len, mode) in [
        (
            "punch inside one block",
            100,
            200,
            libc::FALLOC_FL_PUNCH_HOLE | keep,
        ),
        (
            "punch over a block edge",
            BS - 10,
            20,
            libc::FALLOC_FL_PUNCH_HOLE | keep,
        ),
        (
            "punch with a whole block",
            10,
            2 * BS,
            libc::FALLOC_FL_PUNCH_HOLE | keep,
        ),
        (
            "zero range inside one block",
            2 * BS + 5,
            50,
            libc::FALLOC_FL_ZERO_RANGE,
        ),
    ] {
        let before = fs.getattr(a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        fs.fallocate(a, off, len, mode).unwrap();
        let after = fs.getattr(a).unwrap();
        assert!(
            after.mtime > before.mtime && after.ctime > before.ctime,
            "{what}"
        );
        assert_eq!(after.mtime, after.ctime, "{what}: one stamp");
        fs = crash(fs);
        let got = fs.getattr(a).unwrap();
        assert_eq!((got.mtime, got.ctime), (after.mtime, after.ctime), "{what}");
    }
    let mut want = vec![7u8; 3 * BS as usize];
    want[100..300].fill(0);
    want[BS as usize - 10..2 * BS as usize + 10].fill(0);
    want[10..2 * BS as usize + 10].fill(0);
    want[2 * BS as usize + 5..2 * BS as usize + 55].fill(0);
    assert_eq!(fs.read(a, 0, 3 * BS as usize).unwrap(), want);
}
