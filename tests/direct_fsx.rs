//! daxlink-fsx (crate `fsx/`, the project's file system exerciser) on real
//! mounts: under `daxlink run` (the shim serves what it can directly), on
//! the kernel path, under each page model, and with a kernel-path worker
//! process changing the file in turn with a direct client. Every run is
//! seeded; the seed is printed (set DAXLINK_FSX_SEED to repeat one), and a
//! failure shows fsx's report (the bad bytes and the last 50 operations).
//! The shim's exit line (DAXLINK_DIRECT_STATS=1) shows that reads and
//! writes were served directly, so no run under the shim passes on the
//! kernel path alone.
//!
//! Needs daxlink-fsx and the shim built beside daxlink:
//! `cargo build --release --workspace`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn fsx_bin() -> PathBuf {
    let p = Path::new(DAXLINK).parent().unwrap().join("daxlink-fsx");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --release --workspace`",
        p.display()
    );
    p
}

/// DAXLINK_FSX_SEED, or one from the clock; printed.
fn seed() -> u64 {
    let s = std::env::var("DAXLINK_FSX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fsx seed {s} (DAXLINK_FSX_SEED={s} repeats it)");
    s
}

/// Run daxlink-fsx on `file` (under `daxlink run` when `shim`), require
/// ALL OK, and return the shim's counts (direct reads, direct writes).
fn fsx(file: &Path, shim: bool, seed: u64, args: &[&str]) -> (u64, u64) {
    let mut c = if shim {
        common::shim();
        let mut c = Command::new(DAXLINK);
        c.arg("run").arg("--").arg(fsx_bin());
        c
    } else {
        Command::new(fsx_bin())
    };
    c.arg(file)
        .arg("--seed")
        .arg(seed.to_string())
        .args(args)
        .env("DAXLINK_DIRECT_STATS", "1");
    let o = run_deadline(c, 120);
    assert!(
        o.rc == 0 && o.stdout.contains("ALL OK"),
        "daxlink-fsx {args:?} (seed {seed}{}) failed, exit {}:\n{}\n{}",
        if shim { ", under daxlink run" } else { "" },
        o.rc,
        o.stdout,
        o.stderr
    );
    let mut served = (0, 0);
    for l in o.stderr.lines() {
        if let Some((_, m)) = l.split_once("]: exit: ") {
            let n: Vec<u64> = m
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            served = (served.0 + n[0], served.1 + n[1]);
        }
    }
    eprintln!("{}", o.stdout.lines().last().unwrap_or(""));
    (served.0, served.1)
}

fn fsx_ok_direct(m: &Mounted, seed: u64, args: &[&str], at_least: u64) {
    let (r, w) = fsx(&m.path("fsx.dat"), true, seed, args);
    assert!(
        r >= at_least && w >= at_least,
        "fsx {args:?} (seed {seed}) under daxlink run: {r} direct reads, {w} direct writes \
         (at least {at_least} each expected): the shim did not serve it"
    );
}

/// 20,000 operations under `daxlink run`: ALL OK, thousands of them served
/// directly, fsck clean afterwards.
#[test]
fn fsx_under_daxlink_run_all_ok() {
    let img = Image::new("dfsx", 256 << 20);
    let m = Mounted::new(&img.path, "");
    fsx_ok_direct(&m, seed(), &["--ops", "20000"], 1000);
    m.unmount();
    fsck_clean(&img.path);
}

/// The same exerciser on the kernel path (no shim): ALL OK.
#[test]
fn fsx_on_the_kernel_path_all_ok() {
    let img = Image::new("dfsxk", 256 << 20);
    let m = Mounted::new(&img.path, "");
    let (r, w) = fsx(&m.path("fsx.dat"), false, seed(), &["--ops", "20000"]);
    assert_eq!((r, w), (0, 0), "no shim, no direct access");
    m.unmount();
    fsck_clean(&img.path);
}

/// Under each page model (a direct mmap is a pin, and the models treat
/// pins differently; fsx unmaps before its next operation): upstream and
/// proxy ALL OK. Legacy too without mmap writes; with them it fails, as
/// designed: a writable direct mmap does not unshare a shared block under
/// legacy (the kernel of 2018 did not either), so fsx's stores through a
/// mapping land in a block the file shares with the second file (after a
/// clone, dedupe or copy_file_range), which fsx sees as a bad read or a
/// dedupe that finds the files differ.
#[test]
fn fsx_under_daxlink_run_on_each_page_model() {
    let s = seed();
    for model in ["upstream", "proxy", "legacy"] {
        let img = Image::new(&format!("dfsx-{model}"), 128 << 20);
        let m = Mounted::new(&img.path, &format!("page_model={model}"));
        let no_map_write: &[&str] = if model == "legacy" { &["-W"] } else { &[] };
        fsx_ok_direct(&m, s, &[&["--ops", "4000"], no_map_write].concat(), 100);
        if model == "legacy" {
            let mut c = Command::new(DAXLINK);
            c.arg("run")
                .arg("--")
                .arg(fsx_bin())
                .arg(m.path("legacy.dat"))
                .args(["--ops", "4000", "--seed", &s.to_string()]);
            let o = run_deadline(c, 120);
            assert!(
                o.rc == 1
                    && o.stdout.contains("FAILED at operation")
                    && (o.stdout.contains("bad data at offset")
                        || o.stdout.contains("dedupe said differs")),
                "legacy with mmap writes (seed {s}): fsx should see stores through a mapping \
                 land in a shared block, exit {}:\n{}\n{}",
                o.rc,
                o.stdout,
                o.stderr
            );
            eprintln!(
                "{}",
                o.stdout.lines().take(3).collect::<Vec<_>>().join("\n")
            );
        }
        m.unmount();
        fsck_clean(&img.path);
    }
}

/// Two processes in turn: a kernel-path worker (no shim) writes,
/// truncates, punches, zeroes and reads the file that the main process
/// reads and writes directly; the worker opens it while the main process
/// holds its lease (late) or before its first access (early: its open uses
/// the page cache, so the main process gets no writable map while it is
/// open). A direct client's map must not survive the worker's changes, and
/// the worker must see every direct write.
#[test]
fn fsx_with_a_kernel_path_worker_all_ok() {
    for late in [true, false] {
        let img = Image::new("dfsx2", 256 << 20);
        let m = Mounted::new(&img.path, "");
        let mut args = vec!["--ops", "12000", "--kernel-share", "40", "--no", "reopen"];
        if late {
            args.push("--late-worker");
            fsx_ok_direct(&m, seed(), &args, 300);
        } else {
            let (r, _) = fsx(&m.path("fsx.dat"), true, seed(), &args);
            assert!(r >= 300, "{r} direct reads: the shim did not serve it");
        }
        m.unmount();
        fsck_clean(&img.path);
    }
}

/// Found by fsx (seed 1, operation 6078): a read the shim sends through
/// the kernel (here: the range holds a hole) after a direct write of the
/// same process returned the page as the kernel had cached it before the
/// write. The descriptor that asked for the lease was opened before it,
/// so it reads through the page cache, which direct stores bypass.
#[test]
fn a_kernel_path_read_after_a_direct_write_sees_it() {
    need("python3");
    common::shim();
    let img = Image::new("dfsxr", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let script = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b'A' * 4096)
os.ftruncate(fd, 8192)          # block 1: a hole
time.sleep(0.05)                # the map is fetched again
os.pwrite(fd, b'B' * 4096, 0)   # block 0: a direct store
b = os.pread(fd, 8192, 0)       # the hole: kernel path (caches page 0)
os.pwrite(fd, b'C' * 4096, 0)   # direct again
c = os.pread(fd, 8192, 0)       # the hole: kernel path again
print('reads', b[:1], c[:1], 'writes', b[:4096] == b'B' * 4096, c[:4096] == b'C' * 4096)
"#;
    let mut c = Command::new(DAXLINK);
    c.args(["run", "--", "python3", "-c", script])
        .arg(m.path("r"))
        .env("DAXLINK_DIRECT_STATS", "1");
    let o = run_deadline(c, 60);
    assert_eq!(o.rc, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(", 2 direct writes"),
        "the writes were not direct: {}",
        o.stderr
    );
    assert!(
        o.stdout.contains("writes True True"),
        "a kernel-path read after a direct write missed it: {}",
        o.stdout
    );
    m.unmount();
}
