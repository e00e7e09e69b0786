//! Thin wrappers over the libc calls the exerciser makes. They are libc's
//! own symbols, so under `daxlink run` the preloaded shim serves what it
//! can; errors come back as the errno.

use std::ffi::CString;
use std::path::Path;

use libc::{c_int, c_void, iovec};

pub type R<T> = Result<T, i32>;

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn chk(r: isize) -> R<usize> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

fn chk0(r: c_int) -> R<()> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
}

pub fn open(p: &Path, flags: c_int) -> R<c_int> {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path; the mode is read only with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

pub fn close(fd: c_int) -> R<()> {
    // SAFETY: closes a descriptor this program opened.
    chk0(unsafe { libc::close(fd) })
}

pub fn pread(fd: c_int, buf: &mut [u8], off: u64) -> R<usize> {
    // SAFETY: reads into `buf`, of buf.len() bytes.
    chk(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as i64) })
}

pub fn pwrite(fd: c_int, buf: &[u8], off: u64) -> R<usize> {
    // SAFETY: writes from `buf`.
    chk(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as i64) })
}

pub fn read(fd: c_int, buf: &mut [u8]) -> R<usize> {
    // SAFETY: as pread.
    chk(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn write(fd: c_int, buf: &[u8]) -> R<usize> {
    // SAFETY: as pwrite.
    chk(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

pub fn lseek(fd: c_int, off: i64, whence: c_int) -> R<u64> {
    // SAFETY: no memory is passed.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as u64)
    }
}

/// `buf` cut at `cuts` (increasing offsets inside it) into iovecs.
pub fn pieces(buf: *mut u8, len: usize, cuts: &[usize]) -> Vec<iovec> {
    let mut v = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&len)) {
        v.push(iovec {
            iov_base: buf.wrapping_add(at).cast(),
            iov_len: c - at,
        });
        at = c;
    }
    v
}

pub fn preadv(fd: c_int, iov: &[iovec], off: u64) -> R<usize> {
    // SAFETY: each iovec points into a live buffer of the caller.
    chk(unsafe { libc::preadv(fd, iov.as_ptr(), iov.len() as c_int, off as i64) })
}

pub fn pwritev(fd: c_int, iov: &[iovec], off: u64) -> R<usize> {
    // SAFETY: as preadv.
    chk(unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as c_int, off as i64) })
}

pub fn readv(fd: c_int, iov: &[iovec]) -> R<usize> {
    // SAFETY: as preadv.
    chk(unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as c_int) })
}

pub fn writev(fd: c_int, iov: &[iovec]) -> R<usize> {
    // SAFETY: as preadv.
    chk(unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as c_int) })
}

pub fn ftruncate(fd: c_int, size: u64) -> R<()> {
    // SAFETY: no memory is passed.
    chk0(unsafe { libc::ftruncate(fd, size as i64) })
}

pub fn fallocate(fd: c_int, mode: c_int, off: u64, len: u64) -> R<()> {
    // SAFETY: no memory is passed.
    chk0(unsafe { libc::fallocate(fd, mode, off as i64, len as i64) })
}

pub fn fsync(fd: c_int) -> R<()> {
    // SAFETY: no memory is passed.
    chk0(unsafe { libc::fsync(fd) })
}

pub fn fdatasync(fd: c_int) -> R<()> {
    // SAFETY: no memory is passed.
    chk0(unsafe { libc::fdatasync(fd) })
}

pub fn fsize(fd: c_int) -> R<u64> {
    // SAFETY: plain data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer.
    chk0(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_size as u64)
}

/// fstatfs's f_type of a FUSE file system.
const FUSE_MAGIC: i64 = 0x6573_5546;

pub fn is_fuse(fd: c_int) -> bool {
    // SAFETY: plain data filled by the kernel.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a valid statfs buffer.
    unsafe { libc::fstatfs(fd, &mut s) == 0 && s.f_type as i64 == FUSE_MAGIC }
}

pub fn copy_file_range(fin: c_int, soff: u64, fout: c_int, doff: u64, len: usize) -> R<usize> {
    let (mut s, mut d) = (soff as i64, doff as i64);
    // SAFETY: the offsets are this frame's; the descriptors are ours.
    chk(unsafe { libc::copy_file_range(fin, &mut s, fout, &mut d, len, 0) })
}

pub fn ioctl(fd: c_int, req: u64, arg: *mut c_void) -> R<c_int> {
    // SAFETY: the caller passes the buffer the command expects.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// A shared mapping of `len` bytes of `fd` at `off` (page-aligned).
pub struct Map {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Map {
    pub fn new(fd: c_int, off: u64, len: usize, write: bool) -> R<Map> {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a new mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                off as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Map { ptr: p.cast(), len })
    }

    pub fn msync(&self) -> R<()> {
        // SAFETY: the mapping is ours and live.
        chk0(unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) })
    }

    pub fn unmap(self) -> R<()> {
        let (p, n) = (self.ptr, self.len);
        std::mem::forget(self);
        // SAFETY: the mapping is ours and no longer used.
        chk0(unsafe { libc::munmap(p.cast(), n) })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: as unmap (a failure path).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
