//! The interposed C symbols of the LD_PRELOAD shim. Each either serves the
//! call directly or makes the real system call itself (`syscall(2)`: no
//! dlsym, no allocation before the shim is ready); a panic never unwinds
//! into C: it is caught and the call takes the kernel path.
//!
//! `fcntl` and `open*` are variadic in C; they are defined here with their
//! widest fixed form (one trailing integer/pointer argument). That is sound
//! on x86_64 SysV: the first six integer or pointer arguments of a variadic
//! call travel in the same registers (rdi, rsi, rdx, rcx, r8, r9) as those
//! of a fixed one, and the callee reads the third from rdx either way;
//! a caller that passed no third argument leaves garbage there, which the
//! kernel ignores for the commands and flags that take none (and %al, the
//! vector-register count of a variadic call, is ignored by a fixed callee).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};

use libc::{c_char, c_int, c_long, c_uint, c_void, iovec, off_t, size_t, ssize_t};

use crate::access::{self, at_offset, try_rw};
use crate::fds;
use crate::mount;
use crate::sys::{self, raw};

/// Run `direct`, or `kernel` when it declines or panics.
fn guard<T>(direct: impl FnOnce() -> Option<T>, kernel: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(direct)) {
        Ok(Some(v)) => v,
        _ => kernel(),
    }
}

fn one(buf: *const c_void, n: size_t) -> [iovec; 1] {
    [iovec {
        iov_base: buf as *mut c_void,
        iov_len: n,
    }]
}

fn iovs<'a>(iov: *const iovec, cnt: c_int) -> Option<&'a [iovec]> {
    if iov.is_null() || !(1..=libc::UIO_MAXIOV).contains(&cnt) {
        return None;
    }
    // SAFETY: the caller's array of `cnt` iovecs (as the kernel would read it).
    Some(unsafe { std::slice::from_raw_parts(iov, cnt as usize) })
}

fn positioned(fd: c_int, iov: &[iovec], off: i64, write: bool) -> Option<isize> {
    let r = try_rw(fd, off, iov, write).map(|n| n as isize);
    if r.is_none() {
        access::KERNEL_RW.fetch_add(1, Relaxed);
    }
    r
}

/// Before a read through the kernel: see `access::before_kernel_read`.
fn kernel_read(fd: c_int) {
    let _ = catch_unwind(|| access::before_kernel_read(fd));
}

fn after_kernel_write(fd: c_int, r: isize) -> isize {
    if r > 0 {
        access::kernel_changed(fd);
    }
    r
}

#[no_mangle]
pub extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    guard(
        || positioned(fd, &one(buf, n), off, false),
        || {
            kernel_read(fd);
            raw!(libc::SYS_pread64, fd, buf, n, off) as ssize_t
        },
    )
}

#[no_mangle]
pub extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    pread64(fd, buf, n, off)
}

#[no_mangle]
pub extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    guard(
        || positioned(fd, &one(buf, n), off, true),
        || after_kernel_write(fd, raw!(libc::SYS_pwrite64, fd, buf, n, off) as ssize_t),
    )
}

#[no_mangle]
pub extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    pwrite64(fd, buf, n, off)
}

#[no_mangle]
pub extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    let k = || raw!(libc::SYS_read, fd, buf, n) as ssize_t;
    guard(
        || at_offset(fd, &one(buf, n), false, &mut { k }),
        || {
            kernel_read(fd);
            k()
        },
    )
}

#[no_mangle]
pub extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    let k = || raw!(libc::SYS_write, fd, buf, n) as ssize_t;
    guard(
        || at_offset(fd, &one(buf, n), true, &mut { k }),
        || after_kernel_write(fd, k()),
    )
}

#[no_mangle]
pub extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    let k = || raw!(libc::SYS_readv, fd, iov, cnt) as ssize_t;
    guard(
        || at_offset(fd, iovs(iov, cnt)?, false, &mut { k }),
        || {
            kernel_read(fd);
            k()
        },
    )
}

#[no_mangle]
pub extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    let k = || raw!(libc::SYS_writev, fd, iov, cnt) as ssize_t;
    guard(
        || at_offset(fd, iovs(iov, cnt)?, true, &mut { k }),
        || after_kernel_write(fd, k()),
    )
}

fn kernel_preadv(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t {
    // x86_64: the offset in one register, the high half argument 0.
    raw!(libc::SYS_preadv2, fd, iov, cnt, off, 0 as c_long, flags) as ssize_t
}

fn kernel_pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t {
    raw!(libc::SYS_pwritev2, fd, iov, cnt, off, 0 as c_long, flags) as ssize_t
}

#[no_mangle]
pub extern "C" fn preadv2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    let k = || kernel_preadv(fd, iov, cnt, off, flags);
    guard(
        || {
            if flags != 0 {
                return None;
            }
            let v = iovs(iov, cnt)?;
            if off == -1 {
                at_offset(fd, v, false, &mut { k })
            } else {
                positioned(fd, v, off, false)
            }
        },
        || {
            kernel_read(fd);
            k()
        },
    )
}

#[no_mangle]
pub extern "C" fn pwritev2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    let k = || kernel_pwritev(fd, iov, cnt, off, flags);
    guard(
        || {
            if flags != 0 {
                return None;
            }
            let v = iovs(iov, cnt)?;
            if off == -1 {
                at_offset(fd, v, true, &mut { k })
            } else {
                positioned(fd, v, off, true)
            }
        },
        || after_kernel_write(fd, k()),
    )
}

#[no_mangle]
pub extern "C" fn preadv64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    preadv2(fd, iov, cnt, off, flags)
}

#[no_mangle]
pub extern "C" fn pwritev64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    pwritev2(fd, iov, cnt, off, flags)
}

#[no_mangle]
pub extern "C" fn preadv(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    if off < 0 {
        return sys::fail(libc::EINVAL) as ssize_t;
    }
    preadv2(fd, iov, cnt, off, 0)
}

#[no_mangle]
pub extern "C" fn preadv64(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    preadv(fd, iov, cnt, off)
}

#[no_mangle]
pub extern "C" fn pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    if off < 0 {
        return sys::fail(libc::EINVAL) as ssize_t;
    }
    pwritev2(fd, iov, cnt, off, 0)
}

#[no_mangle]
pub extern "C" fn pwritev64(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    pwritev(fd, iov, cnt, off)
}

/// The offset is the kernel's own (direct read/write move it with lseek),
/// so lseek needs nothing from the shim; it is defined so that a future
/// cache of the offset cannot be bypassed, and makes the raw call.
#[no_mangle]
pub extern "C" fn lseek64(fd: c_int, off: off_t, whence: c_int) -> off_t {
    raw!(libc::SYS_lseek, fd, off, whence) as off_t
}

#[no_mangle]
pub extern "C" fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    lseek64(fd, off, whence)
}

/// The process the descriptor table describes (0: not known yet).
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Are we a vfork child (posix_spawn, python's subprocess), running in the
/// parent's memory until it execs? Its close/dup2 of its own descriptors
/// must not touch the parent's table: the parent's descriptors stay open.
fn borrowed() -> bool {
    let o = OWNER.load(Relaxed);
    o != 0 && o != sys::getpid()
}

/// Forget `fd` (it is being closed or replaced), reporting its direct
/// writes first.
fn forget(fd: c_int) {
    if borrowed() {
        return;
    }
    let _ = catch_unwind(|| {
        access::flush_touches(fd);
        if let Some(e) = fds::entry(fd) {
            e.reset();
        }
        mount::forget_socket(fd);
    });
}

/// A descriptor the kernel just handed out: whatever the table said about
/// that number is about a file that is gone.
fn fresh(fd: c_long) -> c_int {
    if fd >= 0 && !borrowed() {
        if let Some(e) = fds::entry(fd as c_int) {
            e.reset();
        }
    }
    fd as c_int
}

#[no_mangle]
pub extern "C" fn close(fd: c_int) -> c_int {
    if crate::mmap::holds_fd(fd) {
        return sys::fail(libc::EBADF) as c_int;
    }
    forget(fd);
    raw!(libc::SYS_close, fd) as c_int
}

#[no_mangle]
pub extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags as c_uint & libc::CLOSE_RANGE_CLOEXEC == 0 && first <= last && !borrowed() {
        let hi = (last as usize).min(fds::MAX_FDS - 1);
        for fd in first as usize..=hi {
            forget(fd as c_int);
        }
        if last as usize > hi {
            // Our socket may be above the table.
            let _ = catch_unwind(|| mount::forget_socket_range(first, last));
        }
    }
    crate::mmap::close_range_sparing(first, last, flags)
}

#[no_mangle]
pub extern "C" fn closefrom(first: c_int) {
    let _ = close_range(first.max(0) as c_uint, c_uint::MAX, 0);
}

#[no_mangle]
pub extern "C" fn dup(fd: c_int) -> c_int {
    fresh(raw!(libc::SYS_dup, fd))
}

#[no_mangle]
pub extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        forget(new);
    }
    fresh(raw!(libc::SYS_dup2, old, new))
}

#[no_mangle]
pub extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new {
        forget(new);
    }
    fresh(raw!(libc::SYS_dup3, old, new, flags))
}

#[no_mangle]
pub extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => fresh(raw!(libc::SYS_fcntl, fd, cmd, arg)),
        libc::F_SETFL => {
            // O_APPEND may change: probe the flags again.
            let r = raw!(libc::SYS_fcntl, fd, cmd, arg) as c_int;
            fresh(fd as c_long);
            r
        }
        _ => raw!(libc::SYS_fcntl, fd, cmd, arg) as c_int,
    }
}

#[no_mangle]
pub extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    fcntl(fd, cmd, arg)
}

#[no_mangle]
pub extern "C" fn fsync(fd: c_int) -> c_int {
    let _ = catch_unwind(|| access::flush_touches(fd));
    raw!(libc::SYS_fsync, fd) as c_int
}

#[no_mangle]
pub extern "C" fn fdatasync(fd: c_int) -> c_int {
    let _ = catch_unwind(|| access::flush_touches(fd));
    raw!(libc::SYS_fdatasync, fd) as c_int
}

fn changed(fd: c_int, r: c_long) -> c_int {
    let _ = catch_unwind(|| access::kernel_changed(fd));
    r as c_int
}

#[no_mangle]
pub extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    changed(fd, raw!(libc::SYS_ftruncate, fd, len))
}

#[no_mangle]
pub extern "C" fn ftruncate64(fd: c_int, len: off_t) -> c_int {
    ftruncate(fd, len)
}

#[no_mangle]
pub extern "C" fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    changed(fd, raw!(libc::SYS_fallocate, fd, mode, off, len))
}

#[no_mangle]
pub extern "C" fn fallocate64(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    fallocate(fd, mode, off, len)
}

#[no_mangle]
pub extern "C" fn openat(dir: c_int, path: *const c_char, flags: c_int, mode: c_long) -> c_int {
    fresh(raw!(libc::SYS_openat, dir, path, flags, mode))
}

#[no_mangle]
pub extern "C" fn openat64(dir: c_int, path: *const c_char, flags: c_int, mode: c_long) -> c_int {
    openat(dir, path, flags, mode)
}

#[no_mangle]
pub extern "C" fn open(path: *const c_char, flags: c_int, mode: c_long) -> c_int {
    openat(libc::AT_FDCWD, path, flags, mode)
}

#[no_mangle]
pub extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_long) -> c_int {
    openat(libc::AT_FDCWD, path, flags, mode)
}

/// The fortified forms (`_FORTIFY_SOURCE`): no mode argument.
#[no_mangle]
pub extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    openat(libc::AT_FDCWD, path, flags, 0)
}

#[no_mangle]
pub extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    openat(libc::AT_FDCWD, path, flags, 0)
}

#[no_mangle]
pub extern "C" fn __openat_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int {
    openat(dir, path, flags, 0)
}

#[no_mangle]
pub extern "C" fn __openat64_2(dir: c_int, path: *const c_char, flags: c_int) -> c_int {
    openat(dir, path, flags, 0)
}

#[no_mangle]
pub extern "C" fn creat(path: *const c_char, mode: c_long) -> c_int {
    openat(
        libc::AT_FDCWD,
        path,
        libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
        mode,
    )
}

#[no_mangle]
pub extern "C" fn creat64(path: *const c_char, mode: c_long) -> c_int {
    creat(path, mode)
}

/// stdio closes its descriptor through libc's internal close, which the
/// shim cannot see: forget it here, then call the real fclose.
#[no_mangle]
pub extern "C" fn fclose(fp: *mut libc::FILE) -> c_int {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    if !fp.is_null() {
        // SAFETY: fileno reads the FILE's descriptor (not interposed).
        let fd = unsafe { libc::fileno(fp) };
        if fd >= 0 {
            forget(fd);
        }
    }
    let mut f = REAL.load(Relaxed);
    if f == 0 {
        // SAFETY: a lookup of the next definition of fclose; fclose is
        // not called from signal handlers, so dlsym's allocation is fine.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"fclose".as_ptr()) } as usize;
        if f == 0 {
            return sys::fail(libc::ENOSYS) as c_int;
        }
        REAL.store(f, Relaxed);
    }
    // SAFETY: `f` is libc's fclose.
    let real: extern "C" fn(*mut libc::FILE) -> c_int = unsafe { std::mem::transmute(f) };
    real(fp)
}

extern "C" fn in_child() {
    OWNER.store(sys::getpid(), Relaxed);
    fds::reset_in_child();
    mount::drop_in_child();
}

extern "C" fn init() {
    // SAFETY: registers a child handler that only touches this crate's
    // atomics and makes raw system calls (safe after fork).
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    OWNER.store(sys::getpid(), Relaxed);
    crate::debug::enabled();
    crate::debug::stats();
}

extern "C" fn fini() {
    let (r, w, k) = (
        access::DIRECT_READS.load(Relaxed),
        access::DIRECT_WRITES.load(Relaxed),
        access::KERNEL_RW.load(Relaxed),
    );
    if (r + w == 0 && access::MAPS.load(Relaxed) == 0) || !crate::debug::stats() {
        return;
    }
    crate::debug::emit(format_args!(
        "exit: {} direct reads, {} direct writes, {} kernel-path reads/writes, {} maps",
        r,
        w,
        k,
        access::MAPS.load(Relaxed)
    ));
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;
