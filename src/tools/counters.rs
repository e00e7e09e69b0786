//! `daxlink counters MOUNTPOINT [--json] [--reset]`: the daemon's
//! per-opcode request counters (`fuse::counters`), read through the
//! COUNTERS ioctl on the mount's root.

use std::io;
use std::path::Path;

use crate::fuse::counters::{name, DEV, OPCODES, RING};
use crate::fuse::ioctl;

/// Requests per opcode since mount or the last reset: `[dev, ring]`.
pub struct Counts(pub [[u64; OPCODES]; 2]);

/// Read the counters of the mount on `dir` (and zero them if `reset`).
pub fn read(dir: &Path, reset: bool) -> io::Result<Counts> {
    let f = std::fs::File::open(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let mut buf = vec![0u8; ioctl::COUNTERS_SIZE];
    ioctl::put_u64(&mut buf, 0, if reset { ioctl::COUNTERS_RESET } else { 0 });
    ioctl::call(&f, ioctl::Cmd::COUNTERS, &mut buf).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTTY) => io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: not on a daxlink filesystem", dir.display()),
        ),
        Some(libc::EINVAL) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not the root of a daxlink mount", dir.display()),
        ),
        _ => io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
    })?;
    let mut c = [[0u64; OPCODES]; 2];
    for (t, row) in c.iter_mut().enumerate() {
        for (op, v) in row.iter_mut().enumerate() {
            *v = ioctl::get_u64(&buf, 8 + (t * OPCODES + op) * 8).unwrap_or(0);
        }
    }
    Ok(Counts(c))
}

impl Counts {
    /// Every opcode with a request: (name, dev, ring).
    pub fn rows(&self) -> Vec<(String, u64, u64)> {
        (0..OPCODES)
            .filter(|&op| self.0[DEV][op] + self.0[RING][op] > 0)
            .map(|op| (name(op as u32), self.0[DEV][op], self.0[RING][op]))
            .collect()
    }

    /// `{"total": {OPCODE: n}, "dev": {...}, "ring": {...}, "requests": n}`:
    /// only opcodes with a request; `ring` counts what the io_uring queue
    /// threads served themselves, `dev` what fuser's sessions served.
    pub fn json(&self) -> serde_json::Value {
        let mut total = serde_json::Map::new();
        let mut dev = serde_json::Map::new();
        let mut ring = serde_json::Map::new();
        let mut all = 0;
        for (n, d, r) in self.rows() {
            total.insert(n.clone(), (d + r).into());
            all += d + r;
            if d > 0 {
                dev.insert(n.clone(), d.into());
            }
            if r > 0 {
                ring.insert(n, r.into());
            }
        }
        serde_json::json!({"total": total, "dev": dev, "ring": ring, "requests": all})
    }

    /// A table: opcode, total, of them served by ring threads.
    pub fn table(&self) -> String {
        let mut s = format!("{:<16} {:>12} {:>12}\n", "opcode", "requests", "by ring");
        let mut all = 0;
        for (n, d, r) in self.rows() {
            s.push_str(&format!("{n:<16} {:>12} {r:>12}\n", d + r));
            all += d + r;
        }
        s.push_str(&format!("{:<16} {all:>12}\n", "total"));
        s
    }
}
