//! The processes benches/direct_cost.rs starts under `daxlink run` (this
//! same binary, in the mode named by `DIRECT_COST_CHILD`): their preads,
//! pwrites, mmaps and munmaps go through the client library.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

pub const MODE: &str = "DIRECT_COST_CHILD";

/// In a child mode: do it and return true.
pub fn run() -> bool {
    let Ok(mode) = std::env::var(MODE) else {
        return false;
    };
    let a: Vec<String> = std::env::args().skip(1).collect();
    match mode.as_str() {
        "access" => access(&a[0], a[1].parse().unwrap()),
        "mmap" => mmap(&a[0], &a[1], a[2].parse().unwrap(), a[3].parse().unwrap()),
        "hold" => hold(&a[0]),
        m => panic!("unknown child mode {m}"),
    }
    true
}

fn open(p: &str) -> std::fs::File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

/// 4 KiB random preads for `secs`, then pwrites (of the bytes read, so the
/// file keeps its contents): prints `ACCESS reads/s n writes/s n`.
fn access(p: &str, secs: f64) {
    let f = open(p);
    let blocks = f.metadata().unwrap().len() / 4096;
    let mut buf = vec![0u8; 4096];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % blocks) * 4096
    };
    let mut out = Vec::new();
    for write in [false, true] {
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..64 {
                let off = next();
                if write {
                    f.write_all_at(&buf, off).unwrap();
                } else {
                    f.read_exact_at(&mut buf, off).unwrap();
                }
            }
            n += 64;
        }
        out.push(format!("{:.0} {n}", n as f64 / t0.elapsed().as_secs_f64()));
    }
    println!("ACCESS {}", out.join(" "));
}

/// Direct mmaps of `pages` pages (read-write, shared), one store each,
/// munmap, for `secs`: prints `MMAP per-second n`. The first mapping must
/// be the image's pages (/proc/self/maps names the image), or it fails.
fn mmap(p: &str, image: &str, pages: usize, secs: f64) {
    let f = open(p);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let len = pages * 4096;
    let one = |check: bool| {
        // SAFETY: a fresh shared mapping of the open file, unmapped below.
        let a = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(a, libc::MAP_FAILED, "mmap");
        if check {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let at = format!("{:x}-", a as usize);
            let line = maps.lines().find(|l| l.starts_with(&at)).unwrap_or("");
            assert!(
                line.ends_with(image),
                "the mapping is not direct (not the image's pages): {line}"
            );
        }
        // SAFETY: inside the mapping; the byte is stored back unchanged.
        unsafe {
            let b = a as *mut u8;
            b.write_volatile(b.read_volatile());
            assert_eq!(libc::munmap(a, len), 0);
        }
    };
    one(true);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        one(false);
        n += 1;
    }
    println!("MMAP {:.0} {n}", n as f64 / t0.elapsed().as_secs_f64());
}

/// Take a writable lease on `p` (one direct overwrite of its first block
/// with its own bytes), say `held`, keep the file open until stdin closes.
fn hold(p: &str) {
    let f = open(p);
    let mut b = vec![0u8; 4096];
    f.read_exact_at(&mut b, 0).unwrap();
    f.write_all_at(&b, 0).unwrap();
    println!("held");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(f);
}
