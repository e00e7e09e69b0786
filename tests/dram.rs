//! DRAM per file and per extent: the daemon's RssAnon (its own heap and
//! stacks, not the pages of the image it maps) after mounting an image that
//! holds n empty files in one directory, n one-block files, or one file of n
//! extents, taken as a slope: (RssAnon at 400,000 items - RssAnon at
//! 100,000) / 300,000, so the fixed cost of a mount cancels and the noise of
//! a reading (the spread of three mounts, a few hundred KiB) is spread over
//! 300,000 items. The images are filled in process (no FUSE round trip per
//! file), then mounted for real. Prints one line `DRAM_JSON {...}` with each
//! slope and its noise; asserts the targets (300 bytes per file, 64 per
//! extent) with the noise added. Bytes only, never times.
//!
//!     cargo test --release --test dram -- --nocapture

mod common;

use std::path::Path;

use common::*;
use daxlink::format::ROOT_INO;
use daxlink::fs::make::MkfsOptions;
use daxlink::fs::{Cred, Fs, FsOptions};
use daxlink::media::{Media, PersistMode};
use daxlink::tools::mkfs::mkfs_path;

/// The two sizes the slopes are taken between: four times apart, so the
/// hash tables that grow by doubling are equally full at both.
const N: u64 = 100_000;
const N2: u64 = 400_000;

/// A fresh image of `size` bytes with room for `inodes` inodes.
fn image(tag: &str, size: u64, inodes: u64) -> Image {
    let img = Image::new(tag, 2 << 20);
    let _ = std::fs::remove_file(&img.path);
    let o = MkfsOptions {
        inodes: Some(inodes),
        ..Default::default()
    };
    mkfs_path(&img.path, Some(size), false, &o).expect("mkfs");
    img
}

/// Fill an image in process (no flushes), unmount cleanly.
fn fill(path: &Path, f: impl FnOnce(&Fs)) {
    let media = Media::open(path, Some(PersistMode::None), false).unwrap();
    let fs = Fs::mount(media, FsOptions::default()).unwrap();
    f(&fs);
    fs.unmount().unwrap();
}

/// The daemon's RssAnon (KiB) once mounted on `path`: the least of three
/// mounts, each read once the daemon has settled (its worker threads start
/// as the kernel connects, and their stacks and malloc arenas vary by a few
/// hundred KiB from one mount to the next), and the spread (largest minus
/// least) of the three, the noise of one reading.
fn rss_anon_kib(path: &Path) -> (u64, u64) {
    let v: Vec<u64> = (0..3)
        .map(|_| {
            let m = Mounted::new(path, "");
            std::thread::sleep(std::time::Duration::from_millis(300));
            let pid = m.pid().expect("daemon pid");
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .expect("RssAnon in /proc/PID/status");
            m.unmount();
            kib
        })
        .collect();
    let (lo, hi) = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
    (lo, hi - lo)
}

/// `n` empty files in one directory.
fn empty_files(n: u64) -> Image {
    let img = image("dram-files", (160 << 20) * n.div_ceil(N), n + 1024);
    fill(&img.path, |fs| {
        for i in 0..n {
            let name = format!("f{i}");
            fs.mknod(
                ROOT_INO,
                name.as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                Cred::ROOT,
            )
            .unwrap();
        }
    });
    img
}

/// `n` files of one block each (one extent each), in one directory.
fn one_block_files(n: u64) -> Image {
    let img = image("dram-small", (600 << 20) * n.div_ceil(N), n + 1024);
    fill(&img.path, |fs| {
        for i in 0..n {
            let name = format!("f{i}");
            let a = fs
                .mknod(
                    ROOT_INO,
                    name.as_bytes(),
                    libc::S_IFREG | 0o644,
                    0,
                    Cred::ROOT,
                )
                .unwrap();
            fs.write(a.ino, 0, &[1u8; 4096], false).unwrap();
        }
    });
    img
}

/// One file of `n` extents: every other block written, so no two merge.
fn extents(n: u64) -> Image {
    let img = image("dram-extents", (900 << 20) * n.div_ceil(N), 1024);
    fill(&img.path, |fs| {
        let a = fs
            .mknod(ROOT_INO, b"x", libc::S_IFREG | 0o644, 0, Cred::ROOT)
            .unwrap();
        for i in 0..n {
            fs.write(a.ino, 2 * i * 4096, &[2u8; 4096], false).unwrap();
        }
        assert_eq!(fs.extents(a.ino).unwrap().len() as u64, n);
    });
    img
}

/// Bytes per item as a slope: the RssAnon of an image of `N2` items minus
/// that of `N` items, over the `N2 - N` items between (so what every mount
/// carries, and the base, cancel), and the noise of that slope: the two
/// readings' spreads over the same items.
fn slope(make: fn(u64) -> Image) -> (f64, f64) {
    let small = make(N);
    let (lo, lo_noise) = rss_anon_kib(&small.path);
    drop(small);
    let big = make(N2);
    let (hi, hi_noise) = rss_anon_kib(&big.path);
    drop(big);
    let items = (N2 - N) as f64;
    (
        (hi as f64 - lo as f64) * 1024.0 / items,
        (lo_noise + hi_noise) as f64 * 1024.0 / items,
    )
}

/// Rounded to a tenth of a byte, for the JSON line.
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[test]
fn dram_per_file_and_per_extent() {
    let empty = image("dram-empty", 64 << 20, 1024);
    let (base, base_noise) = rss_anon_kib(&empty.path);
    drop(empty);
    let (empty_files, empty_noise) = slope(empty_files);
    let (one_block_files, one_block_noise) = slope(one_block_files);
    let (extents, extents_noise) = slope(extents);
    println!(
        "DRAM_JSON {}",
        serde_json::json!({
            "n": [N, N2],
            "empty_mount_rss_anon_kib": base,
            "empty_mount_spread_kib": base_noise,
            "bytes_per_empty_file": r1(empty_files),
            "bytes_per_empty_file_noise": r1(empty_noise),
            "bytes_per_one_block_file": r1(one_block_files),
            "bytes_per_one_block_file_noise": r1(one_block_noise),
            "bytes_per_extent": r1(extents),
            "bytes_per_extent_noise": r1(extents_noise),
        })
    );
    // The target holds even at the worst the noise allows.
    assert!(
        empty_files + empty_noise <= 300.0,
        "{empty_files:.1} (noise {empty_noise:.1}) bytes per empty file"
    );
    assert!(
        extents + extents_noise <= 64.0,
        "{extents:.1} (noise {extents_noise:.1}) bytes per extent"
    );
}

/// `daxlink extents` over a file of more extents than one ioctl reply
/// holds (500): the pages, asked one after the other by start block, list
/// every extent once, in order.
#[test]
fn extents_listing_is_paged() {
    use std::os::unix::fs::FileExt;
    let img = Image::new("dram-pages", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let n = 1300u64;
    let f = std::fs::File::create(m.path("x")).unwrap();
    for i in 0..n {
        f.write_all_at(&[7u8; 4096], 2 * i * 4096).unwrap();
    }
    f.sync_all().unwrap();
    let out = daxlink(&[&"extents", &"--json", &m.path("x")]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let logical: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["logical"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..n).map(|i| 2 * i * 4096).collect();
    assert_eq!(logical, want);
    drop(f);
    m.unmount();
    fsck_clean(&img.path);
}

/// The daemon's RssAnon in KiB, read after a short settle.
fn rss_anon_now(pid: u32) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// A pin's DRAM follows the runs of its range, not its pages: 16 read
/// pins of one contiguous 64 MiB file (the same blocks 16 times: one
/// descriptor run, 16 proxy runs), then 16 read pins that cover a 1 GiB
/// sparse file (zero-page runs), each set held while the daemon's
/// RssAnon is read. Per-page records (a block, a proxy and a descriptor
/// for each of the 16,384 pages of every pin) cost megabytes here; runs
/// cost a few hundred bytes a pin, within the noise of one reading.
#[test]
fn pin_dram_follows_runs_not_pages() {
    use daxlink::tools::client;
    use std::io::Write;
    const MIB: u64 = 1 << 20;
    let img = Image::new("dram-pins", 160 * MIB);
    let m = Mounted::new(&img.path, "max_pinned=4G");
    let rw = |n: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.path(n))
            .unwrap()
    };
    let mut c = rw("c");
    let chunk = vec![3u8; MIB as usize];
    for _ in 0..64 {
        c.write_all(&chunk).unwrap();
    }
    c.sync_all().unwrap();
    let s = rw("s");
    s.set_len(1 << 30).unwrap();
    let pid = m.pid().expect("daemon pid");
    // Warm up whatever the first pin starts (threads, arenas).
    let w = client::pin(&c, 0, 4096, false, false).unwrap();
    client::unpin(&c, w).unwrap();
    let before = rss_anon_now(pid);
    for _ in 0..16 {
        client::pin(&c, 0, 64 * MIB, false, false).unwrap();
    }
    let contiguous = rss_anon_now(pid).saturating_sub(before);
    for i in 0..16 {
        client::pin(&s, i * 64 * MIB, 64 * MIB, false, false).unwrap();
    }
    let sparse = rss_anon_now(pid).saturating_sub(before + contiguous);
    println!(
        "PIN_DRAM_JSON {}",
        serde_json::json!({
            "pins": 16, "pages_per_pin": 16384,
            "contiguous_kib": contiguous, "sparse_kib": sparse,
        })
    );
    assert!(
        contiguous < 512,
        "16 pins of a contiguous 64 MiB file cost {contiguous} KiB of daemon DRAM"
    );
    assert!(
        sparse < 512,
        "16 pins over a 1 GiB sparse file cost {sparse} KiB of daemon DRAM"
    );
    drop((c, s));
    m.unmount();
    fsck_clean(&img.path);
}
