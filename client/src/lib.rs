//! daxlink's direct-access client: serves reads and in-place overwrites of
//! files on a daxlink mount with loads and stores into a mapping of the
//! image, under the daemon's leases (the protocol is the crate
//! `daxlink-direct`); everything else takes the kernel path unchanged.
//!
//! Two faces:
//! - a Rust API, [`Direct`]: each call returns `None` when it does not
//!   handle the request (the caller makes the system call itself);
//! - an LD_PRELOAD shim (`libdaxlink_client.so`, started by `daxlink run`),
//!   which defines `pread`, `pwrite`, `read`, `write`, the vectored forms,
//!   `close`, `dup*`, `fcntl`, ... (module `shim`, feature `shim`).
//!
//! How it decides, per descriptor, at its first use: fstatfs says FUSE;
//! HELLO (an ioctl on the file) says the mount offers direct access; this
//! process can open the image read-write (the kernel decides trust: a
//! process that may not gets EACCES and keeps the kernel path silently,
//! one line under `DAXLINK_DIRECT_DEBUG=1`); the daemon admits it over its
//! socket. One mount per process. Then MAP (an ioctl on the open file)
//! gives the file's extents and generation, and each access enters the
//! control page's rule (`enter` → copy → `exit`).
//!
//! Hot-path rules: no allocation, no lock a signal handler could hold
//! (per-fd state is a fixed array of atomics; a thread's access claims a
//! slot of the process's range with one atomic operation), raw system calls
//! only (the shim's own names would otherwise resolve to itself).
//!
//! Known limits: descriptors at or above [`fds::MAX_FDS`] take the kernel
//! path; a descriptor closed behind the shim's back (a raw `syscall(SYS_close)`)
//! and reused by another regular file through a raw syscall too is not
//! noticed by `pread`/`pwrite` (read/write notice a non-seekable reuse);
//! raw system calls, io_uring and libaio bypass the shim and work through the
//! kernel; the kernel-path fallbacks are not pthread cancellation points.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod access;
mod debug;
mod fault;
pub mod fds;
pub mod mmap;
pub mod mount;
#[cfg(all(feature = "shim", not(test)))]
mod shim;
mod sys;

use std::io;

use libc::{c_int, iovec};

/// The Rust API. Each method serves the call directly and returns
/// `Some(result)`, or returns `None`: not handled, make the system call
/// (and, after a write of yours through the kernel, call
/// [`Direct::kernel_changed`]).
pub struct Direct;

impl Direct {
    pub fn pread(fd: c_int, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        let v = [iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        access::try_rw(fd, i64::try_from(off).ok()?, &v, false).map(Ok)
    }

    pub fn pwrite(fd: c_int, buf: &[u8], off: u64) -> Option<io::Result<usize>> {
        let v = [iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        }];
        access::try_rw(fd, i64::try_from(off).ok()?, &v, true).map(Ok)
    }

    /// `read` at the file offset (which it moves), under the fd's offset
    /// lock; for a direct fd the kernel path is taken inside, so the answer
    /// is `Some` for every fd the library handles.
    pub fn read(fd: c_int, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let v = [iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        let r = access::at_offset(fd, &v, false, &mut || {
            // SAFETY: a read into the caller's buffer.
            unsafe { libc::syscall(libc::SYS_read, fd, v[0].iov_base, v[0].iov_len) as isize }
        })?;
        Some(result(r))
    }

    /// `write` at the file offset; as [`Direct::read`].
    pub fn write(fd: c_int, buf: &[u8]) -> Option<io::Result<usize>> {
        let v = [iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        }];
        let r = access::at_offset(fd, &v, true, &mut || {
            // SAFETY: a write from the caller's buffer.
            unsafe { libc::syscall(libc::SYS_write, fd, v[0].iov_base, v[0].iov_len) as isize }
        })?;
        Some(result(r))
    }

    /// Before `fsync`/`fdatasync`/`close` of `fd`: report direct writes
    /// (TOUCH), so the file's times are the daemon's to make durable.
    pub fn before_sync(fd: c_int) {
        access::flush_touches(fd)
    }

    /// Before a read of yours through the kernel (`pread` answered None):
    /// drops the file's cached pages, which direct writes do not update.
    pub fn before_kernel_read(fd: c_int) {
        access::before_kernel_read(fd)
    }

    /// After a write, truncate or fallocate of yours through the kernel.
    pub fn kernel_changed(fd: c_int) {
        access::kernel_changed(fd)
    }

    /// `fd` is closed or replaced: forget it.
    pub fn forget(fd: c_int) {
        access::flush_touches(fd);
        if let Some(e) = fds::entry(fd) {
            e.reset();
        }
    }
}

fn result(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
