//! What both transports share beyond fuser's handlers: READ and WRITE as
//! plain functions (fuser's handlers and the io_uring queues call them),
//! and the twin `DaxFuse` the io_uring transport serves with.

use fuser::WriteFlags;
use parking_lot::Mutex;

use super::{guarded, uring, DaxFuse};

/// The FUSE transport (`transport=dev|uring`, see `uring`).
#[derive(Default)]
pub struct Transport {
    /// `transport=uring` was asked for and its rings could be made.
    pub want_uring: bool,
    /// FUSE_INIT: the kernel's offer (capabilities, ABI major, minor) and
    /// whether it granted FUSE_OVER_IO_URING.
    pub offer: std::sync::OnceLock<(u64, u32, u32)>,
    pub granted: std::sync::atomic::AtomicBool,
    /// The running io_uring transport, stopped at FUSE destroy.
    pub running: Mutex<Option<uring::Running>>,
}

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
            options: self.options.clone(),
            cache: self.cache,
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

    /// WRITE for either transport: bytes written or an errno. `write_flags`
    /// are FUSE's (FUSE_WRITE_KILL_SUIDGID), `open_flags` the file's.
    pub fn serve_write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: u32,
        open_flags: i32,
    ) -> Result<usize, i32> {
        let mut out = Err(libc::EIO);
        guarded("write", || {
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
            out = self
                .fs
                .write_killing(ino, offset, data, append, kill)
                .map_err(|e| e.errno());
        });
        out
    }
}
