//! DRAM per file and per extent: the daemon's RssAnon (its own heap and
//! stacks, not the pages of the image it maps) after mounting an image that
//! holds N empty files in one directory, N one-block files, or one file of N
//! extents, minus the RssAnon of a mount of an empty image. The images are
//! filled in process (no FUSE round trip per file), then mounted for real.
//! Prints one line `DRAM_JSON {...}`; asserts the targets (300 bytes per
//! file, 64 per extent). Bytes only, never times.
//!
//!     cargo test --release --test dram -- --nocapture

mod common;

use std::path::Path;

use common::*;
use daxlink::format::ROOT_INO;
use daxlink::fs::{Cred, Fs, FsOptions};
use daxlink::media::{Media, PersistMode};
use daxlink::mkfs::{mkfs_path, MkfsOptions};

const N: u64 = 100_000;

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
/// hundred KiB from one mount to the next).
fn rss_anon_kib(path: &Path) -> u64 {
    (0..3)
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
        .min()
        .unwrap()
}

fn per_item(kib: u64, base: u64, n: u64) -> u64 {
    kib.saturating_sub(base) * 1024 / n
}

#[test]
fn dram_per_file_and_per_extent() {
    let empty = image("dram-empty", 64 << 20, 1024);
    let base = rss_anon_kib(&empty.path);

    // N empty files in one directory.
    let files = image("dram-files", 160 << 20, N + 1024);
    fill(&files.path, |fs| {
        for i in 0..N {
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
    let empty_files = per_item(rss_anon_kib(&files.path), base, N);
    drop(files);

    // N files of one block each (one extent each), in one directory.
    let small = image("dram-small", 600 << 20, N + 1024);
    fill(&small.path, |fs| {
        for i in 0..N {
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
    let one_block_files = per_item(rss_anon_kib(&small.path), base, N);
    drop(small);

    // One file of N extents: every other block written, so no two merge.
    let big = image("dram-extents", 900 << 20, 1024);
    fill(&big.path, |fs| {
        let a = fs
            .mknod(ROOT_INO, b"x", libc::S_IFREG | 0o644, 0, Cred::ROOT)
            .unwrap();
        for i in 0..N {
            fs.write(a.ino, 2 * i * 4096, &[2u8; 4096], false).unwrap();
        }
        assert_eq!(fs.extents(a.ino).unwrap().len() as u64, N);
    });
    let extents = per_item(rss_anon_kib(&big.path), base, N);
    drop(big);

    println!(
        "DRAM_JSON {}",
        serde_json::json!({
            "n": N,
            "empty_mount_rss_anon_kib": base,
            "bytes_per_empty_file": empty_files,
            "bytes_per_one_block_file": one_block_files,
            "bytes_per_extent": extents,
        })
    );
    assert!(empty_files <= 300, "{empty_files} bytes per empty file");
    assert!(extents <= 64, "{extents} bytes per extent");
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
