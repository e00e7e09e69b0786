//! The FUSE requests being served right now, with their start times, so that a
//! shutdown that cannot finish can say which requests are stuck (src/tools/mount/mod.rs).
//! `fuse::guarded` registers every request for the time its handler runs.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static NEXT: AtomicU64 = AtomicU64::new(0);
/// Set by FS_IOC_SHUTDOWN: every later request is refused (EIO).
static REFUSING: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: Mutex<BTreeMap<u64, (&'static str, Instant)>> = Mutex::new(BTreeMap::new());

fn table() -> std::sync::MutexGuard<'static, BTreeMap<u64, (&'static str, Instant)>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request in flight; it leaves the table when dropped.
pub struct InFlight(u64);

/// Register a request named `what` (the FUSE opcode) as started now.
pub fn enter(what: &'static str) -> InFlight {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    table().insert(id, (what, Instant::now()));
    InFlight(id)
}

impl Drop for InFlight {
    fn drop(&mut self) {
        table().remove(&self.0);
    }
}

/// From now on every request fails with EIO (the filesystem was shut down).
pub fn refuse_all() {
    REFUSING.store(true, Ordering::SeqCst);
}

/// Whether requests are refused (see [`refuse_all`]).
pub fn refusing() -> bool {
    REFUSING.load(Ordering::SeqCst)
}

/// Every request in flight: its name and how long it has been running, oldest first.
pub fn snapshot() -> Vec<(&'static str, Duration)> {
    table().values().map(|(w, t)| (*w, t.elapsed())).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn requests_leave_when_done() {
        let a = super::enter("test-a");
        let b = super::enter("test-b");
        let names = |v: Vec<(&'static str, std::time::Duration)>| {
            v.into_iter()
                .map(|(w, _)| w)
                .filter(|w| w.starts_with("test-"))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(super::snapshot()), ["test-a", "test-b"]);
        drop(a);
        assert_eq!(names(super::snapshot()), ["test-b"]);
        drop(b);
        assert!(names(super::snapshot()).is_empty());
    }
}
