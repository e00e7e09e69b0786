//! Cost of the page model (a benchmark, run by scripts/bench.sh;
//! `harness = false`, so `cargo test` does not run it): DRAM per GiB of pmem
//! with no pins and with 100,000 pins, pin + unpin latency (in the core and
//! through FUSE ioctls), and the slow-down of normal I/O under
//! page_model=proxy versus legacy. It mounts (root and /dev/fuse needed).
//!
//! `cargo bench --bench page_cost`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;
use daxlink::fs::make::{mkfs, MkfsOptions};
use daxlink::fs::{Cred, Fs, FsOptions};
use daxlink::media::Media;
use daxlink::pages::PageModel;

const BS: u64 = 4096;
const C: Cred = Cred::ROOT;

fn fs_with(model: PageModel, bytes: u64) -> Fs {
    let m = Media::anonymous(bytes).unwrap();
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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut json = serde_json::Map::new();
    // 1. Memory: a 1 GiB file on a 1.25 GiB fs, no pins, then 100,000 one-page pins.
    let fs = fs_with(PageModel::Proxy, 1280 << 20);
    let a = fs.mknod(1, b"a", libc::S_IFREG | 0o644, 0, C).unwrap().ino;
    fs.fallocate(a, 0, 1 << 30, 0).unwrap();
    let idle = fs.pages.memory_bytes();
    let t0 = Instant::now();
    let ids: Vec<u64> = (0..100_000u64)
        .map(|i| {
            fs.pin(a, 1, (i % 262_144) * BS, BS, i % 2 == 0, true)
                .unwrap()
        })
        .collect();
    let pin_each = t0.elapsed().as_secs_f64() / ids.len() as f64;
    let pinned = fs.pages.memory_bytes();
    let t0 = Instant::now();
    for id in &ids {
        fs.unpin(*id).unwrap();
    }
    let unpin_each = t0.elapsed().as_secs_f64() / ids.len() as f64;
    println!("page model memory: {idle} bytes per GiB with no pins; {pinned} bytes with 100,000 pins ({} bytes per pin)", pinned / 100_000);
    println!(
        "core pin: {:.2} us, unpin: {:.2} us (100,000 pins on a 1 GiB file)",
        pin_each * 1e6,
        unpin_each * 1e6
    );
    json.insert("memory_bytes_per_gib_no_pins".into(), idle.into());
    json.insert("memory_bytes_100k_pins".into(), pinned.into());
    json.insert("core_pin_us".into(), (pin_each * 1e6).into());
    json.insert("core_unpin_us".into(), (unpin_each * 1e6).into());
    println!("process RSS now: {} KiB", rss_kib());

    // 2. Normal I/O in the core: proxy vs legacy, 256 MiB in 64 KiB writes then reads.
    let mut ratio = Vec::new();
    for round in 0..3 {
        let mut t = [0f64; 2];
        for (k, model) in [PageModel::Legacy, PageModel::Proxy]
            .into_iter()
            .enumerate()
        {
            let fs = fs_with(model, 512 << 20);
            let f = fs.mknod(1, b"f", libc::S_IFREG | 0o644, 0, C).unwrap().ino;
            // A pin elsewhere keeps the "any pins" fast path off in both models.
            let g = fs.mknod(1, b"g", libc::S_IFREG | 0o644, 0, C).unwrap().ino;
            fs.write(g, 0, &[1u8; 4096], false).unwrap();
            let _pin = fs.pin(g, 9, 0, BS, false, false).unwrap();
            let buf = vec![7u8; 64 << 10];
            let t0 = Instant::now();
            for i in 0..4096u64 {
                fs.write(f, i * (64 << 10), &buf, false).unwrap();
            }
            for i in 0..4096u64 {
                let _ = fs.read(f, i * (64 << 10), 64 << 10).unwrap();
            }
            fs.truncate(f, 0).unwrap();
            t[k] = t0.elapsed().as_secs_f64();
        }
        println!("round {round}: legacy {:.3} s, proxy {:.3} s", t[0], t[1]);
        ratio.push(t[1] / t[0]);
    }
    let r = median(ratio);
    println!(
        "core I/O slow-down, proxy vs legacy: {:+.1}% (median of 3)",
        (r - 1.0) * 100.0
    );
    json.insert("core_io_proxy_over_legacy".into(), r.into());

    // 3. Through FUSE: pin + unpin latency of the ioctls, and dd-like I/O per model.
    let mut fuse_ratio = Vec::new();
    let mut ioctl_us = 0.0;
    for round in 0..3 {
        let mut t = [0f64; 2];
        for (k, model) in ["legacy", "proxy"].into_iter().enumerate() {
            let img = Image::new(&format!("cost-{model}"), 640 << 20);
            let m = Mounted::new(&img.path, &format!("page_model={model}"));
            let p = m.path("f");
            let data = vec![3u8; 1 << 20];
            let t0 = Instant::now();
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&p).unwrap();
                for _ in 0..256 {
                    f.write_all(&data).unwrap();
                }
                f.sync_all().unwrap();
            }
            let _ = std::fs::read(&p).unwrap();
            t[k] = t0.elapsed().as_secs_f64();
            if model == "proxy" && round == 0 {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .unwrap();
                let n = 5000u64;
                let t0 = Instant::now();
                for i in 0..n {
                    let id =
                        daxlink::tools::client::pin(&f, (i % 256) * BS, BS, false, false).unwrap();
                    daxlink::tools::client::unpin(&f, id).unwrap();
                }
                ioctl_us = t0.elapsed().as_secs_f64() / n as f64 * 1e6;
                println!("pin + unpin through FUSE ioctls: {ioctl_us:.1} us");
            }
        }
        println!(
            "FUSE round {round}: 256 MiB write+fsync+read: legacy {:.3} s, proxy {:.3} s",
            t[0], t[1]
        );
        fuse_ratio.push(t[1] / t[0]);
    }
    let fr = median(fuse_ratio);
    println!(
        "FUSE I/O slow-down, proxy vs legacy: {:+.1}% (median of 3)",
        (fr - 1.0) * 100.0
    );
    json.insert("fuse_pin_unpin_us".into(), ioctl_us.into());
    json.insert("fuse_io_proxy_over_legacy".into(), fr.into());
    println!("PAGE_COST_JSON {}", serde_json::Value::Object(json));
}
