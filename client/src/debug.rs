//! `DAXLINK_DIRECT_DEBUG=1`: one line on stderr per decision (for tests and
//! diagnosis), silent otherwise; `DAXLINK_DIRECT_STATS=1`: only the line at
//! exit (how many reads and writes were served directly). Lines are formatted into a stack buffer and
//! written with one raw write(2): no allocation, async-signal-safe.

use std::fmt::Write;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// 0: not read yet, 1: off, 2: on.
static DEBUG: AtomicU32 = AtomicU32::new(0);

pub fn enabled() -> bool {
    match DEBUG.load(Relaxed) {
        2 => true,
        1 => false,
        _ => {
            // SAFETY: getenv with a NUL-terminated name; the result is only read.
            let v = unsafe { libc::getenv(c"DAXLINK_DIRECT_DEBUG".as_ptr()) };
            // SAFETY: a non-null getenv result is a NUL-terminated string.
            let on = !v.is_null() && unsafe { *v } == b'1' as libc::c_char;
            DEBUG.store(if on { 2 } else { 1 }, Relaxed);
            on
        }
    }
}

/// 0: not read yet, 1: off, 2: on.
#[cfg_attr(any(test, not(feature = "shim")), allow(dead_code))]
static STATS: AtomicU32 = AtomicU32::new(0);

/// The exit line is wanted (DAXLINK_DIRECT_STATS=1 or debug).
#[cfg_attr(any(test, not(feature = "shim")), allow(dead_code))]
pub fn stats() -> bool {
    match STATS.load(Relaxed) {
        2 => true,
        1 => false,
        _ => {
            // SAFETY: as in `enabled`.
            let v = unsafe { libc::getenv(c"DAXLINK_DIRECT_STATS".as_ptr()) };
            // SAFETY: as in `enabled`.
            let on = enabled() || (!v.is_null() && unsafe { *v } == b'1' as libc::c_char);
            STATS.store(if on { 2 } else { 1 }, Relaxed);
            on
        }
    }
}

pub struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub fn emit(args: std::fmt::Arguments) {
    let mut l = Line {
        buf: [0; 320],
        len: 0,
    };
    let _ = write!(l, "daxlink-direct[{}]: ", crate::sys::getpid());
    let _ = l.write_fmt(args);
    l.buf[l.len] = b'\n';
    crate::sys::write_all(2, &l.buf[..l.len + 1]);
}

/// One debug line, when enabled.
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::debug::enabled() {
            $crate::debug::emit(format_args!($($t)*));
        }
    };
}
pub(crate) use debug;
