//! Makes a large sparse image holding many files, for the scale figures of
//! scripts/bench.sh (a benchmark step; `harness = false`, so `cargo test`
//! does not run it):
//!
//!     BENCH_SCALE_IMAGE=/var/tmp/big.img BENCH_SCALE_SIZE=1T BENCH_SCALE_FILES=100000 \
//!       cargo bench --bench scale_image
//!
//! The image is a sparse file (no fallocate, unlike `mkfs.daxlink` on a disk
//! filesystem, so a 1 TiB image fits on a smaller disk) formatted in process
//! with `daxlink::fs::make::mkfs`, timed, with the bytes it wrote (the file's
//! allocated blocks after an fsync). The files (empty, 1,000 to a directory)
//! are then created in process without per-operation flushes (a FUSE mount of
//! a disk image runs in msync mode, ~30 creates a second here, which would take
//! most of an hour for 100,000 files); the filesystem is unmounted cleanly and
//! the file fsynced. Prints one line `BENCH_SCALE_JSON {...}`.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use daxlink::format::ROOT_INO;
use daxlink::fs::make::{mkfs, MkfsOptions};
use daxlink::fs::{Cred, Fs, FsOptions};
use daxlink::media::{Media, PersistMode};
use daxlink::tools::mkfs::parse_size;

fn allocated(path: &PathBuf) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

fn fsync(path: &PathBuf) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .unwrap();
}

fn main() {
    let path = PathBuf::from(std::env::var("BENCH_SCALE_IMAGE").expect("BENCH_SCALE_IMAGE"));
    let size = std::env::var("BENCH_SCALE_SIZE")
        .ok()
        .and_then(|s| parse_size(&s))
        .expect("BENCH_SCALE_SIZE (e.g. 16G)");
    let files: u64 = std::env::var("BENCH_SCALE_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(size))
        .unwrap();

    let t = Instant::now();
    let media = Media::open(&path, Some(PersistMode::None), false).unwrap();
    mkfs(&media, &MkfsOptions::default()).unwrap();
    drop(media);
    fsync(&path);
    let mkfs_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mkfs_bytes = allocated(&path);

    let t = Instant::now();
    let media = Media::open(&path, Some(PersistMode::None), false).unwrap();
    let fs = Fs::mount(media, FsOptions::default()).unwrap();
    let mut dir = ROOT_INO;
    for i in 0..files {
        if i % 1000 == 0 {
            dir = fs
                .mkdir(ROOT_INO, format!("d{i}").as_bytes(), 0o755, Cred::ROOT)
                .unwrap()
                .ino;
        }
        fs.mknod(
            dir,
            format!("f{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            Cred::ROOT,
        )
        .unwrap();
    }
    fs.unmount().unwrap();
    drop(fs);
    fsync(&path);
    let populate_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "BENCH_SCALE_JSON {}",
        serde_json::json!({
            "image": path.display().to_string(),
            "size_bytes": size,
            "files": files,
            "mkfs_ms": mkfs_ms,
            "mkfs_bytes_written": mkfs_bytes,
            "populate_ms": populate_ms,
            "allocated_bytes_after_populate": allocated(&path),
        })
    );
}
