//! Direct mmap: `mmap(MAP_SHARED)` of a file of the direct mount maps the
//! image's blocks themselves, and that mapping is a pin for its life.
//!
//! At mmap time: a private open file of the same file (a reopen through
//! `/proc/self/fd`, close-on-exec) pins the range with daxlink's `PIN`
//! (PIN_WRITE with PROT_WRITE, PIN_LONGTERM; the upstream model refuses
//! long-term pins on fsdax, as check_vma_flags does, so there the pin is an
//! ordinary one, which its layout changes wait for); `PINMAP` gives the
//! physical blocks the pin holds (fixed at pin time, as GUP's result); the
//! range is reserved (PROT_NONE, anonymous) and each run of blocks is
//! mapped at its place as a new mapping of the image mapping's pages
//! (mremap with old size 0: the same shared pages, no descriptor needed);
//! the holes of a read pin get anonymous read-only zero pages. The private
//! open file holds the pin: `close(fd)` does not end it; `munmap` of the
//! whole mapping does (UNPIN, close), or the process's death (the kernel
//! closes the open file, the daemon's RELEASE drops its pins).
//!
//! Its own open file rather than a dup: a dup shares the open file, whose
//! next MAP (a `pread` of the program's) would replace the lease PINMAP
//! recorded for the mapping.
//!
//! Anything unusual takes the kernel path (the real mmap): MAP_PRIVATE,
//! MAP_FIXED, PROT_EXEC, a range past the page of EOF, a block size other
//! than the page size, a mount not reached directly, a failed pin (the pin
//! caps, upstream's read-only descriptors), a failed remap.
//!
//! Not followed (docs/USAGE.md): mremap, mprotect and madvise of a direct
//! mapping; a forked child inherits the mapping but not the pin's end (its
//! munmap leaves the parent's pin alone).

use std::sync::Mutex;

use daxlink_direct::wire;
use libc::{c_int, c_void};

use crate::access;
use crate::debug::debug;
use crate::sys::{self, raw};

const PAGE: usize = 4096;
/// Direct mappings a process may hold at once (more take the kernel path).
pub const MAX_MAPS: usize = 256;

#[derive(Clone, Copy)]
struct Mapping {
    addr: usize,
    len: usize,
    /// The private open file holding the pin.
    fd: c_int,
    pin: u64,
    write: bool,
    /// The process that made it (a forked child's copy is not its own).
    pid: c_int,
}

static MAPS: Mutex<[Option<Mapping>; MAX_MAPS]> = Mutex::new([None; MAX_MAPS]);
/// Entries in MAPS (of any process: a forked child's copies too).
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Direct mappings made and ended by this process (debug counters).
pub static MAPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn table() -> std::sync::MutexGuard<'static, [Option<Mapping>; MAX_MAPS]> {
    MAPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A raw anonymous or fixed mmap (the shim's own `mmap` would be itself).
fn raw_mmap(
    addr: usize,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> Option<usize> {
    let r = raw!(libc::SYS_mmap, addr, len, prot, flags, fd, off);
    if (r as usize) > (-4096isize) as usize {
        None
    } else {
        Some(r as usize)
    }
}

fn raw_munmap(addr: usize, len: usize) -> c_int {
    raw!(libc::SYS_munmap, addr, len) as c_int
}

/// The pin's end: UNPIN through its open file, then close that file.
fn unpin(fd: c_int, pin: u64) {
    let mut b = pin.to_le_bytes();
    let _ = sys::ioctl(fd, wire::UNPIN, b.as_mut_ptr().cast());
    let _ = sys::close(fd);
}

/// Things to undo when a direct mapping cannot be completed.
struct Undo {
    fd: c_int,
    pin: Option<u64>,
    reserved: Option<(usize, usize)>,
    buf: Option<usize>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(b) = self.buf {
            raw_munmap(b, wire::PINMAP_SIZE);
        }
        if let Some((a, l)) = self.reserved {
            raw_munmap(a, l);
        }
        match self.pin {
            Some(p) => unpin(self.fd, p),
            None if self.fd >= 0 => {
                let _ = sys::close(self.fd);
            }
            None => {}
        }
    }
}

/// `mmap(NULL, len, prot, flags, fd, off)` served directly: the address of
/// a mapping of the image's blocks under a pin, or `None` (make the real
/// call; nothing was changed).
pub fn map(
    addr: usize,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> Option<usize> {
    if fd < 0 || len == 0 || addr != 0 || off < 0 || !(off as usize).is_multiple_of(PAGE) {
        return None;
    }
    let extra = flags & !libc::MAP_SHARED;
    if flags & 0x0f != libc::MAP_SHARED || extra & !(libc::MAP_POPULATE | libc::MAP_NORESERVE) != 0
    {
        return None;
    }
    if prot & !(libc::PROT_READ | libc::PROT_WRITE) != 0 || prot & libc::PROT_READ == 0 {
        return None;
    }
    let write = prot & libc::PROT_WRITE != 0;
    let (_, m) = access::probe(fd)?;
    if m.block as usize != PAGE || (write && !m.writable) {
        return None;
    }
    if let Err(why) = crate::mount::live(&m.control(), write) {
        debug!("mmap of fd {fd}: kernel path ({why})");
        return None;
    }
    let fl = sys::fcntl(fd, libc::F_GETFL, 0).ok()? as c_int;
    let acc = fl & libc::O_ACCMODE;
    if acc == libc::O_WRONLY || (write && acc != libc::O_RDWR) {
        return None;
    }
    // SAFETY: plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys::fstat(fd, &mut st).ok()?;
    let (off, size) = (off as u64, st.st_size as u64);
    let pages = len.div_ceil(PAGE) as u64;
    if off >= size || off / PAGE as u64 + pages > size.div_ceil(PAGE as u64) {
        // Pages wholly past EOF: the kernel's SIGBUS is not ours to give.
        return None;
    }
    let pin_len = (len as u64).min(size - off);
    // The private open file: /proc/self/fd/N, formatted without allocating.
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 10];
    let (mut v, mut n) = (fd as u32, 0);
    loop {
        digits[9 - n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    path[14..14 + n].copy_from_slice(&digits[10 - n..]);
    let own = sys::openat(
        libc::AT_FDCWD,
        path.as_ptr().cast(),
        acc | libc::O_CLOEXEC,
        0,
    )
    .ok()? as c_int;
    let mut undo = Undo {
        fd: own,
        pin: None,
        reserved: None,
        buf: None,
    };
    let mut b = [0u8; wire::PIN_SIZE];
    b[0..8].copy_from_slice(&off.to_le_bytes());
    b[8..16].copy_from_slice(&pin_len.to_le_bytes());
    let base = if write { wire::PIN_WRITE } else { 0 };
    let mut pin = None;
    for flags in [base | wire::PIN_LONGTERM, base] {
        b[16..20].copy_from_slice(&flags.to_le_bytes());
        match sys::ioctl(own, wire::PIN, b.as_mut_ptr().cast()) {
            Ok(_) => {
                pin = Some(u64::from_le_bytes(b[24..32].try_into().ok()?));
                break;
            }
            // Upstream: no FOLL_LONGTERM on fsdax; an ordinary pin it waits for.
            Err(libc::EOPNOTSUPP) => continue,
            Err(e) => {
                debug!("mmap of fd {fd}: kernel path (PIN: errno {e})");
                return None;
            }
        }
    }
    let pin = pin?;
    undo.pin = Some(pin);
    let total = pages as usize * PAGE;
    let start = raw_mmap(
        0,
        total,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    )?;
    undo.reserved = Some((start, total));
    let buf = raw_mmap(
        0,
        wire::PINMAP_SIZE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )?;
    undo.buf = Some(buf);
    // SAFETY: a fresh private mapping of PINMAP_SIZE bytes, ours alone.
    let rb = unsafe { &mut *(buf as *mut [u8; wire::PINMAP_SIZE]) };
    let image_blocks = (m.image_len / PAGE) as u64;
    let mut from = 0u64;
    while from != u64::MAX {
        wire::pinmap_request(rb, pin, from);
        if let Err(e) = sys::ioctl(own, wire::PINMAP, buf as *mut c_void) {
            debug!("mmap of fd {fd}: kernel path (PINMAP: errno {e})");
            return None;
        }
        let r = wire::PinMapReply::decode(&rb[..]).ok()?;
        if r.index != off / PAGE as u64 || r.pages != pages {
            return None;
        }
        let mut at = from;
        for run in &r.runs {
            if run.count == 0 || at + run.count > pages {
                return None;
            }
            let dst = start + at as usize * PAGE;
            let n = run.count as usize * PAGE;
            if run.pblock == wire::PIN_ZERO {
                if write {
                    return None;
                }
                raw_mmap(
                    dst,
                    n,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )?;
            } else {
                if run.pblock.checked_add(run.count)? > image_blocks {
                    return None;
                }
                let src = m.image as usize + run.pblock as usize * PAGE;
                // A new mapping of the same shared pages (old size 0).
                let r = raw!(
                    libc::SYS_mremap,
                    src,
                    0usize,
                    n,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    dst
                );
                if r as usize != dst {
                    debug!("mmap of fd {fd}: kernel path (mremap of the image failed)");
                    return None;
                }
                if raw!(libc::SYS_mprotect, dst, n, prot) != 0 {
                    return None;
                }
            }
            at += run.count;
        }
        if r.next != u64::MAX && r.next != at {
            return None;
        }
        if r.next == u64::MAX && at != pages {
            return None;
        }
        from = r.next;
    }
    let me = sys::getpid();
    {
        let mut t = table();
        let slot = t.iter_mut().find(|s| s.is_none())?;
        LIVE.fetch_add(1, std::sync::atomic::Ordering::Release);
        *slot = Some(Mapping {
            addr: start,
            len: total,
            fd: own,
            pin,
            write,
            pid: me,
        });
    }
    undo.reserved = None;
    undo.pin = None;
    undo.fd = -1;
    drop(undo);
    MAPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    debug!(
        "mmap of fd {fd}: direct, {} pages at {start:#x}, pin {pin}{}",
        pages,
        if write { " (write)" } else { "" }
    );
    Some(start)
}

/// Is any page of `[addr, addr + len)` still mapped (by anything)?
fn any_mapped(addr: usize, len: usize) -> bool {
    let mut v = [0u8; 1];
    (0..len / PAGE).any(|i| {
        // mincore fails with ENOMEM on an unmapped page.
        raw!(libc::SYS_mincore, addr + i * PAGE, PAGE, v.as_mut_ptr()) == 0
    })
}

/// `munmap(addr, len)`: the real call, then the end of the pin of every
/// direct mapping of this process it leaves wholly unmapped. `None`: no
/// direct mapping is touched (make the real call).
pub fn unmap(addr: usize, len: usize) -> Option<c_int> {
    // Allocators munmap often: no lock, no system call while none is direct.
    if LIVE.load(std::sync::atomic::Ordering::Acquire) == 0 {
        return None;
    }
    let end = addr.checked_add(len)?;
    let me = sys::getpid();
    let mut t = table();
    let touches = |m: &Mapping| m.pid == me && m.addr < end && addr < m.addr + m.len;
    if !t.iter().flatten().any(touches) {
        return None;
    }
    let r = raw_munmap(addr, len);
    if r != 0 {
        return Some(r);
    }
    for s in t.iter_mut() {
        let Some(m) = *s else { continue };
        if !touches(&m) {
            continue;
        }
        let whole = addr <= m.addr && m.addr + m.len <= end;
        if whole || !any_mapped(m.addr, m.len) {
            if m.write {
                // Stores through the mapping changed the file: its times,
                // as the daemon's overwrite in place sets them (the kernel
                // sets them at the first write fault; see docs/USAGE.md).
                let mut t = wire::TOUCH_MTIME.to_le_bytes();
                let _ = sys::ioctl(m.fd, wire::TOUCH, t.as_mut_ptr().cast());
            }
            unpin(m.fd, m.pin);
            *s = None;
            LIVE.fetch_sub(1, std::sync::atomic::Ordering::Release);
            debug!(
                "munmap: direct mapping at {:#x} ended, pin {}",
                m.addr, m.pin
            );
        }
    }
    Some(0)
}

/// The pin of this process's direct mapping at `addr` (its start).
pub fn pin_of(addr: usize) -> Option<u64> {
    let me = sys::getpid();
    table()
        .iter()
        .flatten()
        .find(|m| m.pid == me && m.addr == addr)
        .map(|m| m.pin)
}

/// Store `data` at byte `off` of this process's writable direct mapping at
/// `addr` (a Rust program's safe way to write through it, for the demo's
/// real device): false, storing nothing, unless the mapping is there,
/// writable, and holds the whole range.
pub fn store(addr: usize, off: usize, data: &[u8]) -> bool {
    let me = sys::getpid();
    let t = table();
    let Some(m) = t.iter().flatten().find(|m| m.pid == me && m.addr == addr) else {
        return false;
    };
    if !m.write || off.checked_add(data.len()).is_none_or(|e| e > m.len) {
        return false;
    }
    // SAFETY: [addr + off, + len) lies in a writable shared mapping this
    // library made and has not unmapped (munmap, served here, removes it
    // under the table's lock, which we hold); it aliases no Rust object.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), (addr + off) as *mut u8, data.len()) };
    true
}

/// Is `fd` the private open file of one of this process's direct
/// mappings? Then the program's `close` of it is refused (EBADF: the
/// program never opened it) and its `close_range` spares it, so a program
/// closing descriptors it did not open cannot end a mapping's pin. Never
/// waits: a table busy (a signal handler interrupting an mmap) says no.
pub fn holds_fd(fd: c_int) -> bool {
    if LIVE.load(std::sync::atomic::Ordering::Acquire) == 0 || fd < 0 {
        return false;
    }
    let Ok(t) = MAPS.try_lock() else { return false };
    let me = sys::getpid();
    t.iter().flatten().any(|m| m.fd == fd && m.pid == me)
}

/// `close_range(first, last, flags)` that spares the mappings' own open
/// files (the range is closed around them).
pub fn close_range_sparing(first: u32, last: u32, flags: c_int) -> c_int {
    let whole = || raw!(libc::SYS_close_range, first, last, flags) as c_int;
    if flags as u32 & libc::CLOSE_RANGE_CLOEXEC != 0
        || LIVE.load(std::sync::atomic::Ordering::Acquire) == 0
    {
        return whole();
    }
    let mut own = [0u32; MAX_MAPS];
    let mut n = 0;
    {
        let Ok(t) = MAPS.try_lock() else {
            return whole();
        };
        let me = sys::getpid();
        for m in t.iter().flatten() {
            if m.pid == me && (first..=last).contains(&(m.fd as u32)) {
                own[n] = m.fd as u32;
                n += 1;
            }
        }
    }
    if n == 0 {
        return whole();
    }
    own[..n].sort_unstable();
    let mut from = first;
    for &fd in &own[..n] {
        if fd > from {
            let r = raw!(libc::SYS_close_range, from, fd - 1, flags) as c_int;
            if r != 0 {
                return r;
            }
        }
        from = fd + 1;
    }
    if from <= last && from != 0 {
        return raw!(libc::SYS_close_range, from, last, flags) as c_int;
    }
    0
}

/// How many direct mappings this process holds now.
pub fn count() -> usize {
    let me = sys::getpid();
    table().iter().flatten().filter(|m| m.pid == me).count()
}

#[cfg(all(feature = "shim", not(test)))]
mod shim {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn kernel_mmap(a: *mut c_void, l: usize, p: c_int, f: c_int, fd: c_int, o: i64) -> *mut c_void {
        raw!(libc::SYS_mmap, a, l, p, f, fd, o) as *mut c_void
    }

    #[no_mangle]
    pub extern "C" fn mmap(
        a: *mut c_void,
        l: usize,
        p: c_int,
        f: c_int,
        fd: c_int,
        o: i64,
    ) -> *mut c_void {
        // Anonymous mappings (allocators) go straight to the kernel.
        if fd < 0 || f & libc::MAP_ANONYMOUS != 0 {
            return kernel_mmap(a, l, p, f, fd, o);
        }
        match catch_unwind(AssertUnwindSafe(|| map(a as usize, l, p, f, fd, o))) {
            Ok(Some(at)) => at as *mut c_void,
            _ => kernel_mmap(a, l, p, f, fd, o),
        }
    }

    #[no_mangle]
    pub extern "C" fn mmap64(
        a: *mut c_void,
        l: usize,
        p: c_int,
        f: c_int,
        fd: c_int,
        o: i64,
    ) -> *mut c_void {
        mmap(a, l, p, f, fd, o)
    }

    #[no_mangle]
    pub extern "C" fn munmap(a: *mut c_void, l: usize) -> c_int {
        match catch_unwind(AssertUnwindSafe(|| unmap(a as usize, l))) {
            Ok(Some(r)) => r,
            _ => raw!(libc::SYS_munmap, a, l) as c_int,
        }
    }
}
