//! Test hook `DAXLINK_CLIENT_FAULT=stall-in-access:MS`: every direct access
//! of this process, once inside (after `enter` succeeded, before the copy),
//! first says so on stderr and sleeps MS milliseconds, as a thread
//! descheduled in the middle of one copy would. The same style as the
//! daemon's `DAXLINK_FAULT_INJECT` hooks: read from the environment once,
//! nothing happens without it. Lets tests hold a recall waiting on a live
//! client (e.g. to kill the daemon in the middle of it).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::debug::emit;

/// 0: not read yet, 1: no fault, else the stall in ms + 2.
static STALL: AtomicU64 = AtomicU64::new(0);

fn stall_ms() -> Option<u64> {
    match STALL.load(Relaxed) {
        0 => {}
        1 => return None,
        v => return Some(v - 2),
    }
    // SAFETY: getenv with a NUL-terminated name; the result is only read.
    let v = unsafe { libc::getenv(c"DAXLINK_CLIENT_FAULT".as_ptr()) };
    let ms = if v.is_null() {
        None
    } else {
        // SAFETY: a non-null getenv result is a NUL-terminated string.
        let s = unsafe { std::ffi::CStr::from_ptr(v) };
        s.to_str()
            .ok()
            .and_then(|s| s.strip_prefix("stall-in-access:"))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n < u64::MAX - 2)
    };
    STALL.store(ms.map_or(1, |n| n + 2), Relaxed);
    ms
}

/// Called inside an access that holds `slot` (see the module comment).
pub fn in_access(slot: usize, write: bool) {
    let Some(ms) = stall_ms() else { return };
    emit(format_args!(
        "fault: stalling {ms} ms inside a direct {} (slot {slot})",
        if write { "write" } else { "read" }
    ));
    std::thread::sleep(std::time::Duration::from_millis(ms));
    emit(format_args!("fault: stall over (slot {slot})"));
}
