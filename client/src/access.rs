//! The direct path: probe an fd, keep its map window fresh, and copy under
//! the control page's enter/exit rule.
//!
//! An access is all or nothing: the whole range must be below the file's
//! size as the map knows it, every block mapped (and, for a write, the
//! file's own writable block), and the map's generation still current at
//! `enter`; anything else takes the kernel path (the real system call),
//! which is always correct, and marks the map changed so that growth and
//! filled holes made through the kernel are seen later (a change that takes
//! a block away — truncate, punch, copy on write — is the daemon's to
//! recall: it bumps the generation and the next `enter` fails, so the
//! client's map is never trusted past it; growth needs no recall because
//! what the map does not hold goes to the kernel).

use std::sync::atomic::{AtomicU64, Ordering::*};

use daxlink_direct::persist;
use daxlink_direct::wire;
use libc::{c_int, iovec};

use crate::debug::debug;
use crate::fds::{
    self, Entry, DIRECT, F_APPEND, F_WRITE, F_WROTE, KERNEL, PROBING, UNKNOWN, WINDOWS,
};
use crate::mount::{self, Mount};
use crate::sys;

/// fstatfs's f_type of a FUSE file system.
pub const FUSE_MAGIC: i64 = 0x6573_5546;
/// A direct writer reports its writes (TOUCH) at most this often per open file.
pub const TOUCH_EVERY_MS: u64 = 10;
/// Direct writes of at least this many bytes use non-temporal stores
/// (nobody reads them back from the cache right away; 1.9x store + clwb for
/// 4 KiB random writes, see `persist::store_flushed_nt_from`).
const NT_FROM: usize = 4096;
/// A map marked `changed` is fetched again once it is this old (so a
/// program filling a sparse file through the kernel path does not pay a
/// MAP per write).
pub const REFETCH_MS: u64 = 10;
/// Tries of an access whose map went stale under it before the kernel path.
const TRIES: usize = 3;

/// Counters of this process, printed at exit under DAXLINK_DIRECT_DEBUG or
/// DAXLINK_DIRECT_STATS.
pub static DIRECT_READS: AtomicU64 = AtomicU64::new(0);
pub static DIRECT_WRITES: AtomicU64 = AtomicU64::new(0);
pub static KERNEL_RW: AtomicU64 = AtomicU64::new(0);
pub static MAPS: AtomicU64 = AtomicU64::new(0);

/// The entry of a direct fd (probed at its first use) and its mount.
pub fn probe(fd: c_int) -> Option<(&'static Entry, Mount)> {
    let e = fds::entry(fd)?;
    match e.state.load(Acquire) {
        DIRECT => return Some((e, mount::ready(e.dev.load(Relaxed))?)),
        UNKNOWN => {}
        _ => return None,
    }
    if e.state
        .compare_exchange(UNKNOWN, PROBING, Acquire, Relaxed)
        .is_err()
    {
        return None;
    }
    let (next, m) = decide(fd, e);
    e.state.store(next, Release);
    if next == DIRECT {
        fds::note_direct(fd);
    }
    Some((e, m?))
}

fn decide(fd: c_int, e: &Entry) -> (u32, Option<Mount>) {
    // SAFETY: plain data, filled by the kernel.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    if sys::fstatfs(fd, &mut sfs).is_err() {
        return (UNKNOWN, None);
    }
    if sfs.f_type as i64 != FUSE_MAGIC {
        return (KERNEL, None);
    }
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if sys::fstat(fd, &mut st).is_err() {
        return (UNKNOWN, None);
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return (KERNEL, None);
    }
    let fl = match sys::fcntl(fd, libc::F_GETFL, 0) {
        Ok(f) => f as c_int,
        Err(_) => return (UNKNOWN, None),
    };
    if fl & libc::O_PATH != 0 {
        return (KERNEL, None);
    }
    let mut flags = 0;
    if fl & libc::O_ACCMODE != libc::O_RDONLY {
        flags |= F_WRITE;
    }
    if fl & libc::O_APPEND != 0 {
        flags |= F_APPEND;
    }
    let Some(m) = mount::get(fd, st.st_dev) else {
        // Busy setup: ask again next time; refused or another mount: never.
        return if mount::busy() {
            (UNKNOWN, None)
        } else {
            debug!("fd {fd}: kernel path (not the process's direct mount)");
            (KERNEL, None)
        };
    };
    e.dev.store(st.st_dev, Relaxed);
    e.ino.store(st.st_ino, Relaxed);
    e.flags.store(flags, Relaxed);
    e.valid.store(0, Relaxed);
    e.stale.store(false, Relaxed);
    e.changed.store(false, Relaxed);
    e.pending.store(false, Relaxed);
    e.uncached.store(false, Relaxed);
    e.others.store(false, Relaxed);
    e.touched.store(0, Relaxed);
    debug!(
        "fd {fd}: direct (ino {}{}{})",
        st.st_ino,
        if flags & F_WRITE != 0 {
            ", writable"
        } else {
            ""
        },
        if flags & F_APPEND != 0 {
            ", O_APPEND: writes by the kernel"
        } else {
            ""
        }
    );
    (DIRECT, Some(m))
}

/// Fetch a map window from logical block `from` (MAP on the fd). `all`:
/// every other window is dropped (they are stale, or the file changed);
/// else the new window replaces an invalid one, or the oldest.
fn refresh(fd: c_int, e: &Entry, m: &Mount, from: u64, all: bool) -> bool {
    if !e.write_lock() {
        return false;
    }
    let ok = (|| {
        if all {
            e.valid.store(0, Relaxed);
        }
        let valid = e.valid.load(Relaxed);
        let i = (0..WINDOWS)
            .find(|&i| valid & (1 << i) != 0 && e.from[i].load(Relaxed) == from)
            .or_else(|| (0..WINDOWS).find(|&i| valid & (1 << i) == 0))
            .unwrap_or_else(|| e.victim.fetch_add(1, Relaxed) as usize % WINDOWS);
        e.valid.fetch_and(!(1 << i), Relaxed);
        let win = e.window(i)?;
        // SAFETY: the window is WIN_LEN >= MAP_SIZE bytes, mapped for the
        // process's life, and this thread holds it exclusively.
        let buf = unsafe { &mut *(win as *mut [u8; wire::MAP_SIZE]) };
        let want = if m.writable && e.flags.load(Relaxed) & (F_WRITE | F_WROTE) == F_WRITE | F_WROTE
        {
            wire::MAP_WANT_WRITE
        } else {
            0
        };
        wire::map_request(buf, from, want);
        match sys::ioctl(fd, wire::MAP, win.cast()) {
            Ok(_) => {}
            Err(err) => {
                debug!("fd {fd}: MAP failed (errno {err}): kernel path");
                if err == libc::ENOTTY || err == libc::EINVAL || err == libc::EOPNOTSUPP {
                    e.state.store(KERNEL, Release);
                }
                return None;
            }
        }
        let v = wire::MapView::decode(&buf[..]).ok()?;
        MAPS.fetch_add(1, Relaxed);
        debug!(
            "fd {fd}: map from block {from}: size {}, gen {}, {} extents{}",
            v.size(),
            v.gen(),
            v.count(),
            if v.flags() & wire::MAP_WRITE != 0 {
                ", writable"
            } else {
                ""
            }
        );
        e.from[i].store(from, Relaxed);
        e.others.store(v.flags() & wire::MAP_OTHERS != 0, Release);
        if all {
            e.stale.store(false, Relaxed);
            e.changed.store(false, Relaxed);
            e.mapped.store(sys::now_ms(), Relaxed);
        }
        e.valid.fetch_or(1 << i, Relaxed);
        Some(())
    })()
    .is_some();
    e.write_unlock();
    ok
}

/// Why a range cannot be served from the window.
#[derive(PartialEq)]
enum Cover {
    Yes,
    /// Outside the window: fetch the window from this block and look again.
    Window(u64),
    /// Hole, beyond the size, not writable in place: kernel path.
    No,
}

/// Walk the file range `off..off+len` through the window, calling `f(image
/// offset, bytes)` for each physically contiguous piece.
fn walk(
    v: &wire::MapView,
    from: u64,
    m: &Mount,
    off: u64,
    len: u64,
    write: bool,
    f: &mut dyn FnMut(usize, usize),
) -> Cover {
    let bs = m.block;
    let end = off + len;
    let mut p = off;
    while p < end {
        let lb = p / bs;
        if lb < from || (v.next() != u64::MAX && lb >= v.next()) {
            return Cover::Window(lb);
        }
        let Some((pb, left, flags)) = v.find(lb) else {
            return Cover::No;
        };
        if write && flags & wire::EXT_WRITE == 0 {
            return Cover::No;
        }
        let within = p % bs;
        let n = (left.saturating_mul(bs) - within).min(end - p);
        let Some(img) = pb
            .checked_mul(bs)
            .and_then(|x| x.checked_add(within))
            .filter(|&x| x.checked_add(n).is_some_and(|e| e <= m.image_len as u64))
        else {
            return Cover::No;
        };
        f(img as usize, n as usize);
        p += n;
    }
    Cover::Yes
}

/// Serve `iov` at file offset `off` directly. None: take the kernel path.
pub fn try_rw(fd: c_int, off: i64, iov: &[iovec], write: bool) -> Option<usize> {
    let (e, m) = probe(fd)?;
    let off = u64::try_from(off).ok()?;
    let mut total = 0u64;
    for v in iov {
        total = total.checked_add(v.iov_len as u64)?;
    }
    if total == 0 || off.checked_add(total)? > i64::MAX as u64 {
        return None;
    }
    if write {
        let fl = e.flags.load(Relaxed);
        if fl & F_APPEND != 0 || fl & F_WRITE == 0 || !m.writable {
            return None;
        }
        // The first write: from now on ask for writable maps.
        if fl & F_WROTE == 0 && e.flags.fetch_or(F_WROTE, AcqRel) & F_WROTE == 0 {
            e.stale.store(true, Release);
        }
    }
    // A full refresh starts the chain of windows at block 0.
    let mut from = 0;
    // A window to add (the range starts outside every window held).
    let mut add = false;
    for _ in 0..TRIES {
        let all = e.valid.load(Acquire) == 0
            || e.stale.load(Acquire)
            || (e.changed.load(Acquire)
                && sys::now_ms().saturating_sub(e.mapped.load(Relaxed)) >= REFETCH_MS);
        if (all || add) && !refresh(fd, e, &m, from, all) {
            return None;
        }
        add = false;
        if !e.read_lock() {
            return None;
        }
        let r = access(e, &m, off, total, iov, write);
        e.read_unlock();
        match r {
            Step::Done => {
                if write {
                    DIRECT_WRITES.fetch_add(1, Relaxed);
                    e.uncached.store(true, Release);
                    touch_after_write(fd, e);
                } else {
                    DIRECT_READS.fetch_add(1, Relaxed);
                }
                return Some(total as usize);
            }
            Step::Window(start) => {
                from = start;
                add = true;
            }
            Step::Spans => return None,
            Step::Stale => e.stale.store(true, Release),
            Step::Kernel(why) => {
                debug!(
                    "fd {fd}: kernel path for {} {total} at {off}: {why}",
                    if write { "write" } else { "read" }
                );
                e.changed.store(true, Release);
                return None;
            }
        }
    }
    debug!("fd {fd}: kernel path after {TRIES} stale maps");
    None
}

enum Step {
    Done,
    /// No window holds the range's start: fetch one from this block.
    Window(u64),
    /// The range runs past the end of its window: kernel path.
    Spans,
    Stale,
    Kernel(&'static str),
}

fn access(e: &Entry, m: &Mount, off: u64, total: u64, iov: &[iovec], write: bool) -> Step {
    let valid = e.valid.load(Acquire);
    if valid == 0 {
        return Step::Stale;
    }
    // The window holding the range's first block.
    let lb = off / m.block;
    let mut found = None;
    for i in (0..WINDOWS).filter(|&i| valid & (1 << i) != 0) {
        let Some(win) = e.window(i) else {
            return Step::Kernel("no window");
        };
        // SAFETY: the windows are mapped for the process's life; this
        // thread holds them shared, so no refresh writes them meanwhile.
        let buf = unsafe { std::slice::from_raw_parts(win, wire::MAP_SIZE) };
        let Some(v) = wire::MapView::decode(buf).ok() else {
            return Step::Kernel("bad map");
        };
        let from = e.from[i].load(Relaxed);
        if from <= lb && (lb < v.next() || v.next() == u64::MAX) {
            found = Some((v, from));
            break;
        }
    }
    let Some((v, from)) = found else {
        // Windows chain: the next one starts where a held one ends, so a
        // file of up to WINDOWS * MAP_MAX extents ends up wholly held; once
        // every window is in use, a miss fetches from the block itself.
        let mut start = 0;
        let mut held = 0;
        for i in (0..WINDOWS).filter(|&i| valid & (1 << i) != 0) {
            held += 1;
            if let Some(buf) = e.window(i) {
                // SAFETY: as above.
                let b = unsafe { std::slice::from_raw_parts(buf, wire::MAP_SIZE) };
                if let Ok(v) = wire::MapView::decode(b) {
                    if v.next() <= lb && v.next() > start {
                        start = v.next();
                    }
                }
            }
        }
        return Step::Window(if held < WINDOWS { start } else { lb });
    };
    if off + total > v.size() {
        return Step::Kernel("beyond the size the map knows");
    }
    if write && v.flags() & wire::MAP_WRITE == 0 {
        return Step::Kernel("the lease is read-only");
    }
    match walk(&v, from, m, off, total, write, &mut |_, _| {}) {
        Cover::Yes => {}
        // The range runs past its window: rare, not worth a second one.
        Cover::Window(_) => return Step::Spans,
        Cover::No => {
            return Step::Kernel(if write {
                "a hole or a block not writable in place"
            } else {
                "a hole"
            })
        }
    }
    let c = m.control();
    if let Err(why) = mount::live(&c, write) {
        return Step::Kernel(why);
    }
    let Some((slot, bit)) = mount::claim_slot() else {
        return Step::Kernel("all slots busy");
    };
    if !c.enter(slot, v.bucket(), v.gen()) {
        mount::release_slot(bit);
        return Step::Stale;
    }
    crate::fault::in_access(slot, write);
    let mut cur = Cursor { iov, i: 0, o: 0 };
    walk(&v, from, m, off, total, write, &mut |img, n| {
        cur.copy(m, img, n, write)
    });
    if write {
        persist::fence();
    }
    c.exit(slot);
    mount::release_slot(bit);
    Step::Done
}

struct Cursor<'a> {
    iov: &'a [iovec],
    i: usize,
    o: usize,
}

impl Cursor<'_> {
    /// Copy `n` bytes between the image at `img` and the next bytes of the
    /// caller's buffers.
    fn copy(&mut self, m: &Mount, mut img: usize, mut n: usize, write: bool) {
        while n > 0 && self.i < self.iov.len() {
            let v = &self.iov[self.i];
            let k = (v.iov_len - self.o).min(n);
            if k > 0 {
                let user = (v.iov_base as *mut u8).wrapping_add(self.o);
                // SAFETY: img..img+k is inside the image mapping (walk checked
                // it against image_len) and the access holds a slot entered
                // under the map's generation, so the blocks are the file's;
                // the user buffer is the caller's, of iov_len bytes.
                unsafe {
                    let dst = m.image.add(img);
                    if write {
                        persist::store_flushed_nt_from(
                            m.flush,
                            dst,
                            std::slice::from_raw_parts(user, k),
                            NT_FROM,
                        );
                    } else {
                        std::ptr::copy_nonoverlapping(dst as *const u8, user, k);
                    }
                }
            }
            img += k;
            n -= k;
            self.o += k;
            if self.o == v.iov_len {
                self.i += 1;
                self.o = 0;
            }
        }
    }
}

/// TOUCH at the first direct write of an open file, then at most every
/// TOUCH_EVERY_MS of writing; writes in between are reported by the next
/// TOUCH, fsync, fdatasync or close.
fn touch_after_write(fd: c_int, e: &Entry) {
    let now = sys::now_ms();
    let last = e.touched.load(Relaxed);
    if last == 0 || now.saturating_sub(last) >= TOUCH_EVERY_MS {
        touch(fd, e);
    } else {
        e.pending.store(true, Release);
    }
}

pub fn touch(fd: c_int, e: &Entry) {
    e.pending.store(false, Release);
    e.touched.store(sys::now_ms().max(1), Relaxed);
    let mut flags = wire::TOUCH_MTIME.to_le_bytes();
    if let Err(err) = sys::ioctl(fd, wire::TOUCH, flags.as_mut_ptr().cast()) {
        debug!("fd {fd}: TOUCH failed (errno {err})");
    }
}

/// Before fsync/fdatasync/close of `fd`: report the direct writes not yet
/// reported through any fd of the same file.
pub fn flush_touches(fd: c_int) {
    let Some(e) = fds::entry(fd) else { return };
    if e.state.load(Acquire) != DIRECT {
        return;
    }
    let (dev, ino) = (e.dev.load(Relaxed), e.ino.load(Relaxed));
    let any = e.pending.load(Acquire) | fds::take_any(dev, ino, |o| &o.pending);
    if any {
        touch(fd, e);
    }
}

/// Before a read of `fd` through the kernel: drop the kernel's cached
/// pages of the file (TOUCH_INVAL) if they may be older than a direct
/// write: this process wrote the file directly since they were last
/// dropped, or another open file writes it directly (MAP_OTHERS), or a
/// recall made this fd's map stale (a writer may have arrived since). The
/// daemon grants a writable map only while every other open of the file
/// that uses the page cache is a direct client's, which does this.
pub fn before_kernel_read(fd: c_int) {
    let Some(e) = fds::entry(fd) else { return };
    if e.state.load(Acquire) != DIRECT {
        return;
    }
    let (dev, ino) = (e.dev.load(Relaxed), e.ino.load(Relaxed));
    // The own writes' flags are cleared whatever the rest says.
    let any =
        (e.others.load(Acquire) || map_outdated(e, dev)) | fds::take_any(dev, ino, |o| &o.uncached);
    if any {
        let mut flags = wire::TOUCH_INVAL.to_le_bytes();
        if let Err(err) = sys::ioctl(fd, wire::TOUCH, flags.as_mut_ptr().cast()) {
            debug!("fd {fd}: TOUCH_INVAL failed (errno {err})");
        }
    }
}

/// Is any map window of `e` older than its bucket's generation (or is
/// there none to tell)?
fn map_outdated(e: &Entry, dev: u64) -> bool {
    let Some(m) = mount::ready(dev) else {
        return true;
    };
    if !e.read_lock() {
        return true;
    }
    let c = m.control();
    let valid = e.valid.load(Acquire);
    let mut old = valid == 0;
    for i in (0..WINDOWS).filter(|&i| valid & (1 << i) != 0) {
        let Some(win) = e.window(i) else {
            old = true;
            continue;
        };
        // SAFETY: as in `access`: mapped for the process's life, held shared.
        let buf = unsafe { std::slice::from_raw_parts(win, wire::MAP_SIZE) };
        match wire::MapView::decode(buf) {
            Ok(v) if c.gen(v.bucket()) == v.gen() => {}
            _ => old = true,
        }
    }
    e.read_unlock();
    old
}

/// After a kernel-path write, truncate or fallocate on `fd`: every map of
/// that file is refetched before its next use.
pub fn kernel_changed(fd: c_int) {
    if let Some(e) = fds::entry(fd) {
        if e.state.load(Acquire) == DIRECT {
            fds::changed_file(e.dev.load(Relaxed), e.ino.load(Relaxed));
        }
    }
}

/// read/write/readv/writev: at the file offset, under the fd's offset
/// lock, with the kernel path inside the same lock (so a concurrent direct
/// access cannot interleave its lseek pair with a kernel read's update).
/// None: not a direct fd (the caller takes the kernel path itself).
pub fn at_offset(
    fd: c_int,
    iov: &[iovec],
    write: bool,
    kernel: &mut dyn FnMut() -> isize,
) -> Option<isize> {
    let (e, _) = probe(fd)?;
    if write && e.flags.load(Relaxed) & F_APPEND != 0 {
        return None;
    }
    if !e.pos_lock() {
        return None;
    }
    let r = match sys::lseek(fd, 0, libc::SEEK_CUR) {
        Ok(cur) => match try_rw(fd, cur, iov, write) {
            Some(n) => {
                let _ = sys::lseek(fd, cur + n as i64, libc::SEEK_SET);
                n as isize
            }
            None => {
                KERNEL_RW.fetch_add(1, Relaxed);
                if !write {
                    before_kernel_read(fd);
                }
                let r = kernel();
                if write {
                    kernel_changed(fd);
                }
                r
            }
        },
        // Not seekable after all (the fd was replaced behind the shim's back).
        Err(_) => {
            e.reset();
            kernel()
        }
    };
    e.pos_unlock();
    Some(r)
}
