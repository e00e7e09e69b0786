//! What direct access costs (a benchmark, run by scripts/bench.sh;
//! `harness = false`, so `cargo test` does not run it). It mounts for real
//! (root, /dev/fuse, the client library built beside daxlink, fio).
//!
//! 1. Per page model (legacy, upstream, proxy: three mounts side by side,
//!    the models' order turning each round, median of the rounds):
//!    - MAP grants per second: the client's MAP ioctl (writable, from block
//!      0) on an open file of 1 block, of 16384 blocks and of 500 extents
//!      (one full reply), and the daemon's CPU time per grant;
//!    - pins for direct mmap per second: PIN (write, long-term; upstream
//!      refuses long-term pins, so an ordinary one there, as the client
//!      falls back to) + PINMAP + UNPIN through the FUSE ioctls, 1, 256 and
//!      16384 pages, and a read pin of 256 pages; and real direct mmaps of
//!      1 and 256 pages (mmap, one store, munmap) by a process under
//!      `daxlink run`, which checks that its mapping is the image's;
//!    - direct accesses per second: 4 KiB random preads, then pwrites, of a
//!      64 MiB file by a process under `daxlink run` (its writable lease
//!      held throughout), checked direct by the library's exit counters.
//! 2. What FOPEN_DIRECT_IO costs the kernel path: fio psync on a 256 MiB
//!    file (1 job, random read 4 KiB, sequential read 1 MiB; the page cache
//!    warmed first, and cold), with and without a writable lease held by a
//!    `daxlink run` process that keeps the file open after one direct
//!    write; the daemon's READ requests per I/O show which opens bypassed
//!    the page cache.
//!
//! ```text
//! cargo bench --bench direct_cost                         # 3 rounds, 2 s a figure
//! DIRECT_COST_QUICK=1 cargo bench --bench direct_cost     # 1 round, short runs
//! DIRECT_COST_ROUNDS=5 cargo bench --bench direct_cost    # more rounds (a busy machine)
//! DIRECT_COST_PERF=DIR cargo bench --bench direct_cost    # + perf of the daemon per model
//!   (during the figures DIRECT_COST_PERF_FIGURES, default pin_r_256; reports in DIR;
//!   DIRECT_COST_PERF_DWARF=1 for DWARF call graphs)
//! ```

#[path = "direct_cost/child.rs"]
mod child;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "direct_cost/dio.rs"]
mod dio;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use daxlink::fuse::ioctl;
use daxlink::tools::client;
use daxlink_direct::wire;

const BS: u64 = 4096;
const MODELS: [&str; 3] = ["legacy", "upstream", "proxy"];

#[derive(Clone, Copy)]
struct Cfg {
    rounds: usize,
    secs: f64,
    fio_secs: u64,
    dio_size: u64,
}

/// One model's mount and its files.
struct Model {
    name: &'static str,
    _img: Image,
    m: Mounted,
}

fn daemon_cpu_ms(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map_or("", |x| x.1)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (12 and 13 after the comm).
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (t(11) + t(12)) * 1000.0 / hz
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `op` for `secs`: (operations per second, daemon CPU µs per operation).
fn rate(pid: u32, secs: f64, op: &mut dyn FnMut()) -> (f64, f64) {
    let c0 = daemon_cpu_ms(pid);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..16 {
            op();
        }
        n += 16;
    }
    let dt = t0.elapsed().as_secs_f64();
    let cpu = daemon_cpu_ms(pid) - c0;
    (n as f64 / dt, cpu * 1000.0 / n as f64)
}

fn rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

/// A file of `blocks` blocks written in one go (`step` 1), or one block
/// every `step` blocks (no two extents can merge).
fn make_file(p: &Path, blocks: u64, step: u64) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    if step == 1 {
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = blocks * BS;
        let mut off = 0;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            f.write_all_at(&chunk[..n as usize], off).unwrap();
            off += n;
            left -= n;
        }
    } else {
        for i in 0..blocks {
            f.write_all_at(&[0x5au8; BS as usize], i * step * BS)
                .unwrap();
        }
    }
    f.sync_all().unwrap();
}

fn map_once(f: &File, b: &mut [u8]) -> wire::MapReply {
    wire::map_request(b.try_into().unwrap(), 0, wire::MAP_WANT_WRITE);
    ioctl::call(f, ioctl::Cmd::MAP, b).expect("MAP");
    wire::MapReply::decode(b).unwrap()
}

/// PIN (+ PINMAP + UNPIN) of `pages` pages as the direct mmap makes them.
fn pin_cycle(model: &str, f: &File, pages: u64, write: bool, b: &mut [u8]) {
    let id = client::pin(f, 0, pages * BS, write, model != "upstream").expect("PIN");
    wire::pinmap_request(b.try_into().unwrap(), id, 0);
    ioctl::call(f, ioctl::Cmd::PINMAP, b).expect("PINMAP");
    client::unpin(f, id).expect("UNPIN");
}

/// This bench's binary under `daxlink run` in child mode `mode`.
fn under_run(mode: &str, args: &[String]) -> Command {
    let mut c = Command::new(DAXLINK);
    c.arg("run")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(args)
        .env(child::MODE, mode)
        .env("DAXLINK_DIRECT_DEBUG", "1");
    c
}

/// The numbers a child printed after `tag`.
fn child_numbers(o: &Out, tag: &str) -> Vec<f64> {
    assert_eq!(o.rc, 0, "child failed\n{}\n{}", o.stdout, o.stderr);
    o.stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("no {tag} line\n{}\n{}", o.stdout, o.stderr))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The library's exit line: (direct reads, direct writes, kernel-path I/Os).
fn served(stderr: &str) -> (u64, u64, u64) {
    let l = stderr
        .lines()
        .find_map(|l| l.split_once("]: exit: ").map(|x| x.1))
        .unwrap_or_else(|| panic!("no exit line from the library:\n{stderr}"));
    let n: Vec<u64> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

type Figure = (&'static str, &'static str);
const FIGURES: [Figure; 11] = [
    ("map_1", "MAP grant, 1 block"),
    ("map_16384", "MAP grant, 16384 blocks (1 extent)"),
    ("map_500x", "MAP grant, 500 extents"),
    ("pin_w_1", "PIN+PINMAP+UNPIN, write, 1 page"),
    ("pin_w_256", "PIN+PINMAP+UNPIN, write, 256 pages"),
    ("pin_w_16384", "PIN+PINMAP+UNPIN, write, 16384 pages"),
    ("pin_r_256", "PIN+PINMAP+UNPIN, read, 256 pages"),
    ("mmap_1", "direct mmap+store+munmap, 1 page"),
    ("mmap_256", "direct mmap+store+munmap, 256 pages"),
    ("read_4k", "direct 4 KiB random pread"),
    ("write_4k", "direct 4 KiB random pwrite"),
];

/// One figure on one model: (per second, daemon µs per operation or NaN).
fn measure(fig: &str, md: &Model, cfg: &Cfg) -> (f64, f64) {
    let pid = md.m.pid().expect("daemon");
    let mut b = vec![0u8; wire::MAP_SIZE.max(wire::PINMAP_SIZE)];
    match fig {
        "map_1" | "map_16384" | "map_500x" => {
            let f = rw(&md.m.path(&fig[4..]));
            let mb = &mut b[..wire::MAP_SIZE];
            let r = map_once(&f, mb);
            assert_eq!(r.flags & wire::MAP_WRITE, wire::MAP_WRITE, "{fig}");
            let want = if fig == "map_500x" { 500 } else { 1 };
            assert!(
                r.extents.len() >= want,
                "{fig}: {} extents",
                r.extents.len()
            );
            rate(pid, cfg.secs, &mut || {
                map_once(&f, mb);
            })
        }
        "pin_w_1" | "pin_w_256" | "pin_w_16384" | "pin_r_256" => {
            let f = rw(&md.m.path("16384"));
            let pages = fig[6..].parse().unwrap();
            let write = fig.starts_with("pin_w");
            let pb = &mut b[..wire::PINMAP_SIZE];
            rate(pid, cfg.secs, &mut || {
                pin_cycle(md.name, &f, pages, write, pb)
            })
        }
        "mmap_1" | "mmap_256" => {
            let args = [
                md.m.path("16384").display().to_string(),
                md.m.image.display().to_string(),
                fig[5..].to_string(),
                cfg.secs.to_string(),
            ];
            let c0 = daemon_cpu_ms(pid);
            let o = run_deadline(under_run("mmap", &args), 120);
            let cpu = daemon_cpu_ms(pid) - c0;
            let v = child_numbers(&o, "MMAP ");
            // Every mapping direct: the library's debug line for each.
            let direct = o
                .stderr
                .lines()
                .filter(|l| l.contains("]: mmap of fd ") && l.contains(": direct, "))
                .count();
            assert_eq!(direct as f64, v[1] + 1.0, "{}: mmaps not direct", md.name);
            (v[0], cpu * 1000.0 / v[1])
        }
        _ => unreachable!("{fig}"),
    }
}

/// Direct 4 KiB random reads then writes by one `daxlink run` process:
/// (reads/s, writes/s).
fn accesses(md: &Model, cfg: &Cfg) -> (f64, f64) {
    let args = [
        md.m.path("16384").display().to_string(),
        cfg.secs.to_string(),
    ];
    let o = run_deadline(under_run("access", &args), 120);
    let v = child_numbers(&o, "ACCESS ");
    let (r, w, k) = served(&o.stderr);
    let (nr, nw) = (v[1] as u64, v[3] as u64);
    assert!(
        r >= nr && w >= nw && k < (nr + nw) / 100 + 4,
        "{}: not direct: {r} direct reads, {w} direct writes, {k} kernel for {nr} + {nw}\n{}",
        md.name,
        o.stderr
    );
    (v[0], v[2])
}

fn perf_profile(md: &Model, cfg: &Cfg, dir: &Path, fig: &str) {
    let pid = md.m.pid().expect("daemon");
    let data = dir.join(format!("perf-{}-{fig}.data", md.name));
    let mut p = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock"])
        // DIRECT_COST_PERF_DWARF=1: call graphs from DWARF (who called
        // malloc), at a lower rate; frame pointers otherwise.
        .args(
            if std::env::var("DIRECT_COST_PERF_DWARF").is_ok_and(|v| v == "1") {
                ["-F", "500", "--call-graph", "dwarf,16384"]
            } else {
                ["-F", "4000", "--call-graph", "fp"]
            },
        )
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf");
    std::thread::sleep(Duration::from_millis(300));
    let (ops, _) = measure(
        fig,
        md,
        &Cfg {
            secs: cfg.secs.max(2.0) * 1.5,
            ..*cfg
        },
    );
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(p.id() as i32, libc::SIGINT) };
    let _ = p.wait();
    let rep = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none"])
        .args(["--sort", "symbol", "--percent-limit", "1.5", "-i"])
        .arg(&data)
        .output()
        .expect("perf report");
    let text = String::from_utf8_lossy(&rep.stdout).to_string();
    std::fs::write(dir.join(format!("perf-{}-{fig}.txt", md.name)), &text).unwrap();
    println!("\nperf of the daemon, {} {fig} ({ops:.0}/s):", md.name);
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        println!("  {}", l.trim_end());
    }
}

fn main() {
    if child::run() {
        return;
    }
    need("fio");
    shim();
    let quick = std::env::var("DIRECT_COST_QUICK").is_ok_and(|v| v == "1");
    let mut cfg = if quick {
        Cfg {
            rounds: 1,
            secs: 0.4,
            fio_secs: 1,
            dio_size: 64 << 20,
        }
    } else {
        Cfg {
            rounds: 3,
            secs: 2.0,
            fio_secs: 3,
            dio_size: 256 << 20,
        }
    };
    if let Some(n) = std::env::var("DIRECT_COST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.rounds = n;
    }
    println!("load average at the start: {}", loadavg());
    let models: Vec<Model> = MODELS
        .iter()
        .map(|&name| {
            let img = Image::new(&format!("dcost-{name}"), 512 << 20);
            let m = Mounted::new(&img.path, &format!("page_model={name}"));
            make_file(&m.path("1"), 1, 1);
            make_file(&m.path("16384"), 16384, 1);
            make_file(&m.path("500x"), 500, 2);
            Model { name, _img: img, m }
        })
        .collect();
    let mut res: Vec<Vec<Vec<(f64, f64)>>> = vec![vec![Vec::new(); MODELS.len()]; FIGURES.len()];
    for round in 0..cfg.rounds {
        let order: Vec<usize> = (0..MODELS.len())
            .map(|k| (k + round) % MODELS.len())
            .collect();
        for (fi, (fig, _)) in FIGURES.iter().enumerate() {
            if *fig == "write_4k" {
                continue;
            }
            for &k in &order {
                if *fig == "read_4k" {
                    let (r, w) = accesses(&models[k], &cfg);
                    res[fi][k].push((r, f64::NAN));
                    res[fi + 1][k].push((w, f64::NAN));
                } else {
                    res[fi][k].push(measure(fig, &models[k], &cfg));
                }
            }
        }
        println!("round {} done (load {})", round + 1, loadavg());
    }
    println!(
        "\n| figure | {} |",
        MODELS
            .iter()
            .map(|m| format!("{m} /s (daemon µs each)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---:|---:|---:|");
    let mut json = serde_json::Map::new();
    for (fi, (fig, what)) in FIGURES.iter().enumerate() {
        let mut cells = Vec::new();
        for (k, m) in MODELS.iter().enumerate() {
            let ops = median(res[fi][k].iter().map(|x| x.0).collect());
            let us = median(res[fi][k].iter().map(|x| x.1).collect());
            json.insert(format!("{fig}.{m}.per_s"), ops.into());
            if us.is_nan() {
                cells.push(format!("{ops:.0}"));
            } else {
                json.insert(format!("{fig}.{m}.daemon_us"), us.into());
                cells.push(format!("{ops:.0} ({us:.1})"));
            }
        }
        println!("| {what} | {} |", cells.join(" | "));
    }
    println!("load average after part 1: {}", loadavg());
    if let Ok(dir) = std::env::var("DIRECT_COST_PERF") {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        let figs = std::env::var("DIRECT_COST_PERF_FIGURES").unwrap_or("pin_r_256".into());
        for fig in figs.split(',') {
            for md in &models {
                perf_profile(md, &cfg, dir, fig);
            }
        }
    }
    drop(models);
    dio::run(&cfg, &mut json);
    println!("load average at the end: {}", loadavg());
    println!("DIRECT_COST_JSON {}", serde_json::Value::Object(json));
}

/// The holder of a writable lease on `file` (dio.rs), started; its stdout
/// stays open with it.
fn hold_lease(file: &Path) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut c = under_run("hold", &[file.display().to_string()]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ch = c.spawn().expect("daxlink run");
    let mut out = BufReader::new(ch.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held", "the lease holder did not start");
    (ch, out)
}

/// End the holder (its stdin closes) and check its one write was direct.
fn end_hold(mut ch: std::process::Child) {
    drop(ch.stdin.take());
    let o = ch.wait_with_output().unwrap();
    assert!(o.status.success(), "holder failed");
    let (_, w, _) = served(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(w, 1, "the holder's write was not direct");
}
