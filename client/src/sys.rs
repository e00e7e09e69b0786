//! Raw system calls. The shim defines `close`, `read`, `fcntl`, ... itself,
//! so nothing in this crate may call libc's wrappers of those names (they
//! would resolve to the shim again): everything goes through `syscall(2)`,
//! which needs no symbol lookup and allocates nothing.

use libc::{c_int, c_long, c_void};

/// The result of a raw system call: the value, or the errno.
pub type Sys = Result<c_long, c_int>;

fn ret(r: c_long) -> Sys {
    if r < 0 {
        // SAFETY: __errno_location returns the calling thread's errno slot.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(r)
    }
}

/// Put `e` in errno and return -1 (the C convention of the wrappers).
#[cfg_attr(any(test, not(feature = "shim")), allow(dead_code))]
pub fn fail(e: c_int) -> c_long {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e };
    -1
}

/// A raw call returning its value, -1 with errno set on failure (what the C
/// functions the shim replaces return).
macro_rules! raw {
    ($nr:expr $(, $a:expr)*) => {
        // SAFETY: the caller passes the kernel's argument types for $nr; the
        // kernel checks every pointer it is given.
        unsafe { libc::syscall($nr $(, $a)*) }
    };
}
#[cfg_attr(any(test, not(feature = "shim")), allow(unused_imports))]
pub(crate) use raw;

pub fn lseek(fd: c_int, off: i64, whence: c_int) -> Sys {
    ret(raw!(libc::SYS_lseek, fd, off, whence))
}
pub fn close(fd: c_int) -> Sys {
    ret(raw!(libc::SYS_close, fd))
}
pub fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> Sys {
    ret(raw!(libc::SYS_fcntl, fd, cmd, arg))
}
pub fn ioctl(fd: c_int, req: u32, arg: *mut c_void) -> Sys {
    ret(raw!(libc::SYS_ioctl, fd, req as c_long, arg))
}
pub fn fstat(fd: c_int, st: &mut libc::stat) -> Sys {
    ret(raw!(libc::SYS_fstat, fd, st as *mut libc::stat))
}
pub fn fstatfs(fd: c_int, st: &mut libc::statfs) -> Sys {
    ret(raw!(libc::SYS_fstatfs, fd, st as *mut libc::statfs))
}
pub fn openat(dir: c_int, path: *const libc::c_char, flags: c_int, mode: c_long) -> Sys {
    ret(raw!(libc::SYS_openat, dir, path, flags, mode))
}
pub fn mmap(len: usize, prot: c_int, flags: c_int, fd: c_int) -> Result<*mut u8, c_int> {
    let r = raw!(
        libc::SYS_mmap,
        std::ptr::null_mut::<c_void>(),
        len,
        prot,
        flags,
        fd,
        0 as c_long
    );
    // mmap's failures are -4095..-1 as addresses.
    if (r as usize) > (-4096isize) as usize {
        // SAFETY: as in `ret`.
        return Err(unsafe { *libc::__errno_location() });
    }
    Ok(r as *mut u8)
}
pub fn munmap(p: *mut u8, len: usize) {
    let _ = raw!(libc::SYS_munmap, p, len);
}
pub fn socket(domain: c_int, ty: c_int) -> Sys {
    ret(raw!(libc::SYS_socket, domain, ty, 0))
}
pub fn connect(fd: c_int, addr: *const libc::sockaddr_un, len: u32) -> Sys {
    ret(raw!(libc::SYS_connect, fd, addr, len))
}
pub fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> Sys {
    ret(raw!(libc::SYS_sendmsg, fd, msg, flags))
}
pub fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> Sys {
    ret(raw!(libc::SYS_recvmsg, fd, msg, flags))
}
pub fn setsockopt_timeo(fd: c_int, opt: c_int, secs: i64) {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    let _ = raw!(
        libc::SYS_setsockopt,
        fd,
        libc::SOL_SOCKET,
        opt,
        &tv as *const libc::timeval,
        std::mem::size_of::<libc::timeval>() as u32
    );
}
pub fn sched_yield() {
    let _ = raw!(libc::SYS_sched_yield);
}
pub fn write_all(fd: c_int, mut b: &[u8]) {
    while !b.is_empty() {
        match ret(raw!(libc::SYS_write, fd, b.as_ptr(), b.len())) {
            Ok(n) if n > 0 => b = &b[n as usize..],
            Err(libc::EINTR) => {}
            _ => return,
        }
    }
}
pub fn getpid() -> c_int {
    raw!(libc::SYS_getpid) as c_int
}

/// CLOCK_MONOTONIC in milliseconds (the daemon's heartbeat clock).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec (vDSO, async-signal-safe).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// An identity of the calling thread without a system call (the same in a
/// forked child as in the thread that forked, which is fine: a child starts
/// with every lock reset).
pub fn thread_id() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}
