//! Counters of which path the daemon took, so a test can show that a path
//! really ran (not only that the result came out right). They are read
//! through the SNAPSHOT ioctl (`counters` in its JSON); nothing else uses
//! them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

#[derive(Default)]
pub struct Counters {
    /// Reads answered straight from the mapping (`Fs::read_with`).
    pub reads_direct: AtomicU64,
    /// Reads answered through a buffer (holes, several runs, pins, poison).
    pub reads_buffered: AtomicU64,
    /// Set-ID bits cleared by the daemon itself: by a write the kernel sent
    /// with FUSE_WRITE_KILL_SUIDGID, or by a setattr's `clear_mode` (what
    /// FUSE_HANDLE_KILLPRIV_V2 leaves to the filesystem).
    pub setid_cleared: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "reads_direct": get(&self.reads_direct),
            "reads_buffered": get(&self.reads_buffered),
            "setid_cleared": get(&self.setid_cleared),
        })
    }
}
