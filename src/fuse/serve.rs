//! What both transports share beyond fuser's handlers: READ and WRITE as
//! plain functions (fuser's handlers and the io_uring queues call them),
//! and the twin `DaxFuse` the io_uring transport serves with.

use fuser::{FopenFlags, WriteFlags};

use super::{guarded, setid, DaxFuse};
use crate::error::FsError;
use crate::fs::{Attr, Cred};
use crate::fuse::caller::Origin;

impl DaxFuse {
    /// Another `DaxFuse` over the same filesystem, handles and settings,
    /// for the io_uring transport's threads and its second session.
    pub fn twin(&self) -> DaxFuse {
        DaxFuse {
            fs: self.fs.clone(),
            handles: self.handles.clone(),
            unmounted: self.unmounted.clone(),
            is_twin: true,
            transport: self.transport.clone(),
            notifier: self.notifier.clone(),
            dev: self.dev.clone(),
            panic_hook: self.panic_hook,
            hang_hook: self.hang_hook,
            slow_long_hook: self.slow_long_hook,
            slow_step_hook: self.slow_step_hook,
            options: self.options.clone(),
            cache: self.cache,
            long: self.long.clone(),
            direct: self.direct.clone(),
        }
    }

    /// READ for either transport: `send` gets the bytes (straight from the
    /// mapping when they can be) or an errno, exactly once.
    pub fn serve_read(
        &self,
        ino: u64,
        offset: u64,
        size: usize,
        send: impl FnOnce(Result<&[u8], i32>),
    ) {
        let mut slot = Some(send);
        guarded("read", || {
            let r = self.fs.read_with(ino, offset, size, |d| {
                if let Some(s) = slot.take() {
                    s(Ok(d))
                }
            });
            if let (Err(e), Some(s)) = (r, slot.take()) {
                s(Err(e.errno()));
            }
        });
        if let Some(s) = slot.take() {
            s(Err(libc::EIO));
        }
    }

    /// WRITE for either transport: bytes written or an errno. `o` is the
    /// request's sender, `write_flags` are FUSE's (FUSE_WRITE_KILL_SUIDGID),
    /// `open_flags` the file's.
    #[allow(clippy::too_many_arguments)]
    pub fn serve_write(
        &self,
        o: Origin,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: u32,
        open_flags: i32,
    ) -> Result<usize, i32> {
        self.serve("write", || {
            // Under the writeback cache the kernel places appends itself
            // (it owns the file size) and writes back whole pages later.
            let append = !self.cache.writeback
                && (open_flags & libc::O_APPEND != 0
                    || self
                        .handles
                        .lock()
                        .get(&fh)
                        .is_some_and(|h| h.flags & libc::O_APPEND != 0));
            // FUSE_HANDLE_KILLPRIV_V2: the kernel tells us when the writer
            // lacks CAP_FSETID instead of asking for security.capability and
            // sending a SETATTR before every write.
            let kill = write_flags & WriteFlags::FUSE_WRITE_KILL_SUIDGID.bits() != 0;
            let in_group = |g| setid::caller_in_group(&o, g);
            let kill = kill.then_some(&in_group as &dyn Fn(u32) -> bool);
            let (n, killed) = self.fs.write_killing(ino, offset, data, append, kill)?;
            if killed {
                // The kernel still caches the old mode: stat must not show
                // set-ID bits the file no longer has.
                self.invalidate_attrs(ino);
            }
            Ok(n)
        })
    }
}

/// What a LOOKUP of a missing name answers: inode 0, "no such name".
fn negative_entry() -> Attr {
    let t = crate::format::Timespec::default();
    Attr {
        ino: 0,
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        mode: libc::S_IFREG,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        generation: 0,
    }
}

/// Requests that both transports serve through these functions: each runs
/// in `guarded` (a panic or a shut-down filesystem fails it with EIO) and
/// returns what the reply carries, or an errno.
impl DaxFuse {
    fn serve<T>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> Result<T, FsError>,
    ) -> Result<T, i32> {
        let mut out = Err(libc::EIO);
        guarded(what, || out = f().map_err(|e| e.errno()));
        out
    }

    /// A name that does not exist is a negative entry (inode 0), which the
    /// kernel caches for `TTL` like a positive one: every create of a
    /// name comes through the kernel, which replaces it.
    pub fn serve_lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, i32> {
        self.serve("lookup", || match self.fs.lookup(parent, name) {
            Err(FsError::NotFound) => Ok(negative_entry()),
            r => r,
        })
    }

    pub fn serve_getattr(&self, ino: u64) -> Result<Attr, i32> {
        self.serve("getattr", || self.fs.getattr(ino))
    }

    /// GETXATTR: the whole value (the caller answers a size query, or
    /// ERANGE for a buffer too small, as `xattr_reply` does).
    pub fn serve_getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, i32> {
        self.serve("getxattr", || {
            if self.panic_hook && name == b"user.daxlink.inject-panic" {
                panic!("injected panic (DAXLINK_FAULT_INJECT)");
            }
            if self.hang_hook && name == b"user.daxlink.inject-hang" {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            if name == super::EXTENTS_XATTR {
                let e = self.fs.extents_detail(ino)?;
                return Ok(super::ioctl_handlers::extents_json(&e).into_bytes());
            }
            self.fs.getxattr(ino, name)
        })
    }

    /// A new handle and what the kernel may keep of the file's cached pages.
    pub fn serve_open(&self, ino: u64, flags: i32) -> Result<(u64, FopenFlags), i32> {
        self.serve("open", || {
            // The flags first: in no-wait mode (a ring thread) nothing may
            // change before the last lock that can be busy.
            let keep = self.open_flags(ino)?;
            let fh = self.open_handle(ino, flags)?;
            Ok((fh, self.settle_open(fh, ino, keep)))
        })
    }

    /// Create and open a regular file (a mode without a type is one).
    pub fn serve_create(
        &self,
        who: Cred,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, u64, FopenFlags), i32> {
        self.serve("create", || {
            let mode = if mode & libc::S_IFMT == 0 {
                mode | libc::S_IFREG
            } else {
                mode
            };
            let a = self.fs.mknod(parent, name, mode, 0, who)?;
            let fh = self.open_handle(a.ino, flags)?;
            let keep = self.open_flags(a.ino)?;
            let keep = self.settle_open(fh, a.ino, keep);
            Ok((a, fh, keep))
        })
    }

    pub fn serve_release(&self, ino: u64, fh: u64) -> Result<(), i32> {
        self.serve("release", || {
            // The handle goes last: in no-wait mode (a ring thread) a busy
            // lock below fails the release before anything changed, and
            // the bridge serves it again.
            let known = self.handles.lock().contains_key(&fh);
            // Pins end when the open file that made them is released.
            match self.fs.unpin_holder(fh) {
                Err(FsError::WouldBlock) => return Err(FsError::WouldBlock),
                Err(e) => log::error!("unpin at release: {e}"),
                Ok(()) => {}
            }
            let r = if known { self.fs.close(ino) } else { Ok(()) };
            if r != Err(FsError::WouldBlock) {
                self.handles.lock().remove(&fh);
                // So does its direct-access lease. A writer's open may have
                // cached pages its own direct writes then overwrote: the
                // file's next open drops them (`settle_open`).
                if self.fs.pages.leases.release(fh).is_some_and(|l| l.write) {
                    self.handles.lock().mark_stale(ino);
                }
            }
            r
        })
    }

    pub fn serve_unlink(&self, parent: u64, name: &[u8]) -> Result<(), i32> {
        self.serve("unlink", || self.fs.unlink(parent, name))
    }
}
