//! The per-descriptor state: a fixed array of atomics indexed by fd (no
//! allocation, no lock a signal handler could already hold).
//!
//! Each entry says whether the fd was found to be a file of the direct
//! mount, and holds its map window: the raw reply of one MAP (up to
//! `wire::MAP_MAX` extents from a logical block on), in a buffer mapped
//! once per entry and kept for the life of the process. The window is read
//! under a shared hold of the entry's lock and replaced under an exclusive
//! one; nobody ever waits without bound: a reader that finds a refresh in
//! progress, or a refresher that finds readers for too long, takes the
//! kernel path for that call.
//!
//! The table must never trust an entry of an fd number that was closed and
//! reused: every call the shim sees that closes or produces a descriptor
//! (close, close_range, dup*, fcntl F_DUPFD*, open*, fclose) resets it.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use daxlink_direct::wire;

use crate::sys;

/// Descriptors the shim handles directly (higher ones take the kernel path).
pub const MAX_FDS: usize = 8192;

pub const UNKNOWN: u32 = 0;
pub const KERNEL: u32 = 1;
pub const DIRECT: u32 = 2;
pub const PROBING: u32 = 3;

/// Entry flags.
pub const F_WRITE: u32 = 1;
pub const F_APPEND: u32 = 2;
/// A write was asked through it: its maps ask for writability from then on
/// (a writable lease makes other opens of the file bypass the page cache,
/// which a descriptor that only reads should not cost them).
pub const F_WROTE: u32 = 4;

const EXCL: u32 = 1 << 31;

/// Bytes of a window buffer: one MAP reply, page-rounded.
pub const WIN_LEN: usize = wire::MAP_SIZE.div_ceil(4096) * 4096;
/// Windows per descriptor: a file of up to WINDOWS * MAP_MAX extents is
/// mapped once however it is accessed (a buffer is touched only when used).
pub const WINDOWS: usize = 32;

pub struct Entry {
    pub state: AtomicU32,
    pub flags: AtomicU32,
    /// Readers of the window, or EXCL while it is replaced.
    lock: AtomicU32,
    excl_owner: AtomicUsize,
    /// The file-offset lock of read/write (owner thread, 0 if free).
    pos_owner: AtomicUsize,
    /// The window must be fetched again before its next use (a recall
    /// made it stale, or it must move).
    pub stale: AtomicBool,
    /// The file changed in ways no recall announces (growth, filled holes:
    /// a kernel-path write, truncate or fallocate): fetch the window again
    /// when it is older than `REFETCH_MS`, for the new blocks' sake only.
    pub changed: AtomicBool,
    /// CLOCK_MONOTONIC ms of the window's MAP.
    pub mapped: AtomicU64,
    /// The windows holding a valid MAP reply (bit i: window i).
    pub valid: AtomicU32,
    /// Logical block each window starts at (MAP's `from`).
    pub from: [AtomicU64; WINDOWS],
    /// The window a new MAP replaces next when all are valid.
    pub victim: AtomicU32,
    pub win: AtomicPtr<u8>,
    pub dev: AtomicU64,
    pub ino: AtomicU64,
    /// CLOCK_MONOTONIC ms of the last TOUCH, and whether direct writes
    /// since then are not yet reported.
    pub touched: AtomicU64,
    pub pending: AtomicBool,
    /// Direct writes through it since the kernel's cached pages of the
    /// file were last dropped (`access::before_kernel_read`).
    pub uncached: AtomicBool,
    /// Its last MAP said another open file writes the file directly
    /// (MAP_OTHERS).
    pub others: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    state: AtomicU32::new(UNKNOWN),
    flags: AtomicU32::new(0),
    lock: AtomicU32::new(0),
    excl_owner: AtomicUsize::new(0),
    pos_owner: AtomicUsize::new(0),
    stale: AtomicBool::new(false),
    changed: AtomicBool::new(false),
    mapped: AtomicU64::new(0),
    valid: AtomicU32::new(0),
    from: [const { AtomicU64::new(0) }; WINDOWS],
    victim: AtomicU32::new(0),
    win: AtomicPtr::new(std::ptr::null_mut()),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
    touched: AtomicU64::new(0),
    pending: AtomicBool::new(false),
    uncached: AtomicBool::new(false),
    others: AtomicBool::new(false),
};

static TABLE: [Entry; MAX_FDS] = [EMPTY; MAX_FDS];
/// One more than the highest fd ever made DIRECT (bounds scans).
static HIGH: AtomicUsize = AtomicUsize::new(0);

pub fn entry(fd: libc::c_int) -> Option<&'static Entry> {
    TABLE.get(usize::try_from(fd).ok()?)
}

pub fn note_direct(fd: libc::c_int) {
    HIGH.fetch_max(fd as usize + 1, Relaxed);
}

/// Entries that may be DIRECT.
pub fn direct_entries() -> impl Iterator<Item = (libc::c_int, &'static Entry)> {
    TABLE[..HIGH.load(Relaxed).min(MAX_FDS)]
        .iter()
        .enumerate()
        .map(|(i, e)| (i as libc::c_int, e))
        .filter(|(_, e)| e.state.load(Acquire) == DIRECT)
}

/// The entries that may be DIRECT on file (`dev`, `ino`).
pub fn of_file(dev: u64, ino: u64) -> impl Iterator<Item = &'static Entry> {
    direct_entries()
        .map(|(_, e)| e)
        .filter(move |e| e.ino.load(Relaxed) == ino && e.dev.load(Relaxed) == dev)
}

/// Clear `flag` of every entry of file (`dev`, `ino`); was any set?
pub fn take_any(dev: u64, ino: u64, flag: fn(&Entry) -> &AtomicBool) -> bool {
    of_file(dev, ino).fold(false, |any, e| flag(e).swap(false, AcqRel) | any)
}

/// Mark every direct entry of the same file as changed (after a
/// kernel-path write, truncate or fallocate through any of them).
pub fn changed_file(dev: u64, ino: u64) {
    for e in of_file(dev, ino) {
        e.changed.store(true, Release);
    }
}

impl Entry {
    /// Forget what is known about this fd (closed, replaced, flags changed).
    pub fn reset(&self) {
        self.valid.store(0, Release);
        self.pending.store(false, Relaxed);
        self.uncached.store(false, Relaxed);
        self.others.store(false, Relaxed);
        self.state.store(UNKNOWN, Release);
    }

    /// Window `i`'s buffer; the buffers are mapped at the first use of the
    /// entry (untouched pages cost nothing).
    pub fn window(&self, i: usize) -> Option<*mut u8> {
        let p = self.win.load(Acquire);
        if !p.is_null() {
            return Some(p.wrapping_add(i % WINDOWS * WIN_LEN));
        }
        let n = sys::mmap(
            WIN_LEN * WINDOWS,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )
        .ok()?;
        match self
            .win
            .compare_exchange(std::ptr::null_mut(), n, AcqRel, Acquire)
        {
            Ok(_) => Some(n.wrapping_add(i % WINDOWS * WIN_LEN)),
            Err(other) => {
                sys::munmap(n, WIN_LEN * WINDOWS);
                Some(other.wrapping_add(i % WINDOWS * WIN_LEN))
            }
        }
    }

    /// A shared hold of the window; false: a refresh is in progress.
    pub fn read_lock(&self) -> bool {
        let me = sys::thread_id();
        for i in 0..200 {
            let cur = self.lock.load(Relaxed);
            if cur & EXCL == 0 {
                if self
                    .lock
                    .compare_exchange_weak(cur, cur + 1, Acquire, Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if self.excl_owner.load(Relaxed) == me {
                return false; // a signal handler inside our own refresh
            }
            if i > 20 {
                sys::sched_yield();
            }
        }
        false
    }

    pub fn read_unlock(&self) {
        self.lock.fetch_sub(1, Release);
    }

    /// The exclusive hold, to replace the window; false: readers stayed.
    pub fn write_lock(&self) -> bool {
        for i in 0..2000 {
            if self
                .lock
                .compare_exchange_weak(0, EXCL, Acquire, Relaxed)
                .is_ok()
            {
                self.excl_owner.store(sys::thread_id(), Relaxed);
                return true;
            }
            if i > 20 {
                sys::sched_yield();
            }
        }
        false
    }

    pub fn write_unlock(&self) {
        self.excl_owner.store(0, Relaxed);
        self.lock.store(0, Release);
    }

    /// The offset lock of read/write/readv/writev: the kernel updates a
    /// file's offset atomically with the access (f_pos_lock), and so do
    /// we: lseek(SEEK_CUR), copy, lseek(SEEK_SET) under this lock. False:
    /// this very thread holds it (a signal handler): kernel path.
    pub fn pos_lock(&self) -> bool {
        let me = sys::thread_id();
        loop {
            match self
                .pos_owner
                .compare_exchange_weak(0, me, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(o) if o == me => return false,
                Err(_) => sys::sched_yield(),
            }
        }
    }

    pub fn pos_unlock(&self) {
        self.pos_owner.store(0, Release);
    }

    fn clear_locks(&self) {
        self.lock.store(0, Relaxed);
        self.excl_owner.store(0, Relaxed);
        self.pos_owner.store(0, Relaxed);
    }
}

/// In a forked child (single-threaded): locks held by the parent's other
/// threads are nobody's here, and every entry must be probed again (the
/// child says Hello again).
pub fn reset_in_child() {
    for e in &TABLE[..HIGH.load(Relaxed).min(MAX_FDS)] {
        e.clear_locks();
        e.reset();
    }
}
