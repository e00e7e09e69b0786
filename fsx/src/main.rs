//! `daxlink-fsx FILE`: a file system exerciser in the spirit of fsx. It
//! drives one file (and a second one, FILE.2, for clone, dedupe and
//! copy_file_range) through ordinary libc calls — so that under `daxlink
//! run` the preloaded shim serves what it can directly — with seeded random
//! operations, and checks every read, and the whole file every
//! `--check-every` operations and at the end, against an in-memory model.
//! A mismatch prints the offset, the expected and the read bytes and the
//! last 50 operations, and exits 1; a clean run prints `ALL OK` and a
//! summary and exits 0.

mod model;
mod ops;
mod remap;
mod sys;
mod worker;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use ops::{Config, Fail, File, Fsx, Kind, Res, KINDS};

#[derive(Parser)]
#[command(
    name = "daxlink-fsx",
    about = "File system exerciser: random I/O checked against a model"
)]
struct Args {
    /// The file to exercise (created or truncated); FILE.2 is the second file.
    file: Option<PathBuf>,
    /// Seed of the run (default: from the clock); printed at the start.
    #[arg(long)]
    seed: Option<u64>,
    /// Operations to make.
    #[arg(long, default_value_t = 10000)]
    ops: u64,
    /// Largest size the file grows to.
    #[arg(long, default_value_t = 256 * 1024)]
    max_size: u64,
    /// Longest single operation.
    #[arg(long, default_value_t = 64 * 1024)]
    max_len: u64,
    /// The file system's block size (alignment of clone, dedupe, aligned ranges).
    #[arg(long, default_value_t = 4096)]
    block: u64,
    /// Check the whole file every N operations (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    check_every: u64,
    /// No mmap writes.
    #[arg(short = 'W')]
    no_map_write: bool,
    /// No mmap reads.
    #[arg(short = 'R')]
    no_map_read: bool,
    /// Operation kinds to leave out (comma-separated: read, write, readseek,
    /// writeseek, readv, writev, truncate, falloc, punch, zero, clone,
    /// dedupe, copy, fsync, mapread, mapwrite, reopen).
    #[arg(long = "no", value_delimiter = ',')]
    no: Vec<String>,
    /// Two-process mode: this percentage of the operations is made by a
    /// worker process on the kernel path (no LD_PRELOAD), strictly in turn.
    #[arg(long, default_value_t = 0)]
    kernel_share: u32,
    /// Start the worker after the main process's first 50 operations (its
    /// file then opened while the main process holds a direct-access
    /// lease) instead of before the first one.
    #[arg(long)]
    late_worker: bool,
    /// Internal: serve as the kernel-path worker on FILE.
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() {
    let a = Args::parse();
    let Some(file) = a.file.clone() else {
        eprintln!("daxlink-fsx: a FILE is needed");
        std::process::exit(2);
    };
    if a.worker {
        std::process::exit(worker::serve(&file));
    }
    std::process::exit(run(a, file));
}

fn config(a: &Args) -> Result<Config, String> {
    let mut no = a.no.clone();
    if a.no_map_write {
        no.push("mapwrite".into());
    }
    if a.no_map_read {
        no.push("mapread".into());
    }
    for n in &no {
        if !KINDS.iter().any(|k| k.1 == n && k.0 != Kind::Kernel) {
            return Err(format!("--no {n}: no such operation kind"));
        }
    }
    if a.block == 0 || a.max_size < a.block || a.max_len == 0 || a.kernel_share > 100 {
        return Err("--block, --max-size, --max-len or --kernel-share out of range".into());
    }
    let mut weights: Vec<(Kind, u32)> = KINDS
        .iter()
        .filter(|k| k.0 != Kind::Kernel && !no.iter().any(|n| n == k.1))
        .map(|k| (k.0, k.2))
        .collect();
    let own: u32 = weights.iter().map(|w| w.1).sum();
    if a.kernel_share > 0 {
        let share = a.kernel_share;
        let k = if share == 100 {
            1
        } else {
            (own * share).div_ceil(100 - share)
        };
        if share == 100 {
            weights.clear();
        }
        weights.push((Kind::Kernel, k));
    }
    if weights.iter().map(|w| w.1).sum::<u32>() == 0 {
        return Err("every operation kind is left out".into());
    }
    Ok(Config {
        max_size: a.max_size,
        max_len: a.max_len.min(a.max_size),
        block: a.block,
        weights,
    })
}

fn run(a: Args, path: PathBuf) -> i32 {
    let cfg = match config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("daxlink-fsx: {e}");
            return 2;
        }
    };
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ std::process::id() as u64
    });
    let path2 = {
        let mut p = path.clone().into_os_string();
        p.push(".2");
        PathBuf::from(p)
    };
    println!(
        "daxlink-fsx: seed {seed}, {} ops on {} (and {}), max size {}, max len {}{}",
        a.ops,
        path.display(),
        path2.display(),
        cfg.max_size,
        cfg.max_len,
        if a.kernel_share > 0 {
            format!(", {}% by a kernel-path worker", a.kernel_share)
        } else {
            String::new()
        }
    );
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;
    let open =
        |p: &PathBuf| sys::open(p, flags).map_err(|e| format!("open {}: errno {e}", p.display()));
    let (fa, fb) = match (open(&path), open(&path2)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("daxlink-fsx: {e}");
            return 2;
        }
    };
    let worker = if a.kernel_share > 0 && !a.late_worker {
        match worker::Worker::start(&path) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("daxlink-fsx: cannot start the worker: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    let file = |name, path, fd| File {
        name,
        path,
        fd,
        m: Default::default(),
    };
    let mut fsx = Fsx::new(
        cfg,
        seed,
        [file("FILE", path.clone(), fa), file("FILE.2", path2, fb)],
        worker,
    );
    let t0 = Instant::now();
    let r = exercise(&mut fsx, &a);
    let secs = t0.elapsed().as_secs_f64();
    if let Some(w) = fsx.worker.take() {
        w.stop();
    }
    match r {
        Ok(()) => {
            let per: Vec<String> = KINDS
                .iter()
                .zip(&fsx.counts)
                .filter(|(_, &n)| n > 0)
                .map(|(k, n)| format!("{} {n}", k.1))
                .collect();
            println!(
                "daxlink-fsx: ALL OK: seed {seed}, {} ops in {secs:.1} s ({})",
                fsx.opno,
                per.join(", ")
            );
            0
        }
        Err(f) => {
            report(&fsx, seed, &f);
            1
        }
    }
}

fn exercise(fsx: &mut Fsx, a: &Args) -> Res {
    // The second file starts with half the maximum size of random bytes.
    let mut d = vec![0u8; (fsx.cfg.max_size / 2) as usize];
    fsx.rng.fill(&mut d);
    let n = sys::pwrite(fsx.f[1].fd, &d, 0).map_err(ops::errno("pwrite FILE.2"))?;
    if n != d.len() {
        return Err(Fail::Wrong(format!(
            "pwrite FILE.2: {n} of {} bytes",
            d.len()
        )));
    }
    fsx.f[1].m.write(0, &d);
    for i in 1..=a.ops {
        let mut k = fsx.pick();
        if a.kernel_share > 0 && fsx.worker.is_none() {
            // --late-worker: the main process alone first.
            while k == Kind::Kernel {
                k = fsx.pick();
            }
            if i > 50 {
                let w = worker::Worker::start(&fsx.f[0].path)
                    .map_err(|e| Fail::Wrong(format!("cannot start the worker: {e}")))?;
                fsx.note("the kernel-path worker opens FILE".into());
                fsx.worker = Some(w);
            }
        }
        fsx.step(k)?;
        if a.check_every > 0 && i % a.check_every == 0 {
            check_all(fsx)?;
        }
    }
    check_all(fsx)
}

/// Read both files whole (and the file under test through the worker too)
/// and compare them with the model; their sizes too.
fn check_all(fsx: &mut Fsx) -> Res {
    fsx.note("check both files whole".into());
    for i in 0..2 {
        fsx.check_size(i, "at a full check")?;
        let f = &fsx.f[i];
        let size = f.m.size();
        let mut buf = vec![0u8; size as usize + 1];
        let mut at = 0usize;
        while at < buf.len() {
            let n = sys::pread(f.fd, &mut buf[at..], at as u64).map_err(ops::errno("pread"))?;
            if n == 0 {
                break;
            }
            at += n;
        }
        ops::compare(
            &format!("full check of {}", f.name),
            0,
            &f.m.data,
            &buf[..at],
        )?;
    }
    if let Some(w) = fsx.worker.as_mut() {
        let size = fsx.f[0].m.size();
        let got = w.read(0, size + 1)?;
        ops::compare(
            "full check through the kernel path",
            0,
            &fsx.f[0].m.data,
            &got,
        )?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(fsx: &Fsx, seed: u64, f: &Fail) {
    println!(
        "daxlink-fsx: FAILED at operation {} (seed {seed})",
        fsx.opno
    );
    match f {
        Fail::Mismatch {
            what,
            off,
            expected,
            got,
        } => {
            println!("{what}: bad data at offset {off:#x}");
            println!("  expected: {}", hex(expected));
            println!("  got:      {}", hex(got));
        }
        Fail::Errno { what, errno } => {
            println!(
                "{what} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            );
        }
        Fail::Wrong(s) => println!("{s}"),
    }
    println!("size of FILE in the model: {:#x}", fsx.f[0].m.size());
    println!("the last {} operations:", fsx.log.len());
    for l in &fsx.log {
        println!("{l}");
    }
}
