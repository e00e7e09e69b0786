//! `daxlink-holder FILE`: a real process holding a direct mmap of one block
//! of FILE (a file on a daxlink mount offering direct access), for
//! `daxlink demo --real`: the device of the scenarios, storing into the
//! image's block through its own mapping instead of the DMA_WRITE ioctl.
//!
//! It maps the first 4 KiB of FILE read-write (`daxlink_client::mmap`),
//! prints `mapped PIN` (the pin the mapping holds) and then serves lines
//! on stdin: `store HEX` (store those bytes at the start of the mapping;
//! answers `ok`), `unmap` (munmap: the pin ends; answers `ok` and exits).
//! At end of input it exits, and the kernel's close of its files ends the
//! pin. Any failure prints `error: ...` and exits 1.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;

use daxlink_client::mmap;

const BS: usize = 4096;

fn fail(what: &str) -> ! {
    println!("error: {what}");
    std::process::exit(1)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        fail("usage: daxlink-holder FILE")
    };
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => fail(&format!("open: {e}")),
    };
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let Some(addr) = mmap::map(0, BS, prot, libc::MAP_SHARED, f.as_raw_fd(), 0) else {
        fail("no direct mapping (not a direct mount, or the pin was refused)")
    };
    // The mapping, not the descriptor, holds the pin from now on.
    drop(f);
    let pin = mmap::pin_of(addr).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "mapped {pin}");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("store"), Some(h)) => match hex(h) {
                Some(d) if mmap::store(addr, 0, &d) => {
                    let _ = writeln!(out, "ok");
                }
                _ => fail("store"),
            },
            (Some("unmap"), None) => {
                mmap::unmap(addr, BS);
                let _ = writeln!(out, "ok");
                let _ = out.flush();
                return;
            }
            _ => fail("unknown command"),
        }
        let _ = out.flush();
    }
}
