//! Whole-filesystem states: read-only by remount, and shut down (FS_IOC_SHUTDOWN).
//!
//! Remount to read-only quiesces the filesystem (the namespace lock and the
//! meta lock: no transaction is half done), writes back device writes still
//! in the CPU cache and marks the superblock clean, as unmount does, so that
//! a crash while read-only needs no recovery. Back to read-write marks it not
//! clean again (generation + 1), as mount does. Every transaction checks the
//! state under the meta lock (`Fs::ctx`).
//!
//! Shutdown is one way: the media refuses every later store and flush
//! (`Media::shut_down`), so nothing more reaches it, exactly as if the power
//! had gone; the next mount recovers through the journal.

use std::sync::atomic::Ordering;

use super::{read_superblock, write_superblocks, Fs, BS};
use crate::error::{FsError, FsResult};

/// What FS_IOC_SHUTDOWN (XFS_IOC_GOINGDOWN) asks for before stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// 0, FS_SHUTDOWN_FLAGS_DEFAULT: "freeze" first: wait for the operations
    /// in progress, write back all data (device writes through pins too).
    Default,
    /// 1, FS_SHUTDOWN_FLAGS_LOGFLUSH: make the log durable (let the
    /// transaction in progress finish), but not unsynced data.
    LogFlush,
    /// 2, FS_SHUTDOWN_FLAGS_NOLOGFLUSH: stop now.
    NoLogFlush,
}

impl ShutdownMode {
    pub fn from_flags(flags: u32) -> Option<ShutdownMode> {
        match flags {
            0 => Some(ShutdownMode::Default),
            1 => Some(ShutdownMode::LogFlush),
            2 => Some(ShutdownMode::NoLogFlush),
            _ => None,
        }
    }
}

impl Fs {
    /// Write back device writes (through pins) still in the CPU cache, then fence.
    fn flush_all_dirty(&self) -> FsResult<()> {
        for b in self.pages.all_dirty() {
            self.media.flush(b * BS, BS)?;
        }
        self.media.fence();
        Ok(())
    }

    /// Switch between read-write and read-only (remount). Going read-only
    /// waits for every transaction in progress, writes back all data and marks
    /// the superblock clean. Going read-write is refused (EROFS) when the
    /// image was opened read-only (a `-o ro` mount of a clean image; an
    /// unclean one is recovered read-write first, see `mount::open_fs`) or
    /// its superblock needs read-only,
    /// and (EIO) after an I/O error or a shutdown.
    pub fn set_read_only(&self, ro: bool) -> FsResult<()> {
        if ro && !self.read_only() {
            // Access times kept in DRAM reach the media first (they take
            // inode locks before `meta`, so not under the locks below).
            self.flush_lazy_times(None)?;
        }
        let _ns = self.ns.write();
        let meta = self.meta.lock();
        if self.media.is_shut_down() {
            return Err(FsError::Io("the filesystem was shut down".into()));
        }
        if ro == self.read_only() {
            return Ok(());
        }
        if ro {
            self.ro.store(true, Ordering::SeqCst);
            // No direct store may land after the image is marked clean.
            self.recall_everything(true, false);
            self.flush_all_dirty()?;
            let (mut sb, _) = read_superblock(&self.media)?;
            sb.clean = !meta.broken;
            sb.next_generation();
            write_superblocks(&self.media, &sb)?;
            log::info!("remounted read-only; the image is marked clean");
        } else {
            // `opts.read_only`: read-only since mount (the image is open
            // read-only, its journal was not replayed).
            if self.opts.read_only || self.media.read_only() || self.sb.needs_read_only() {
                return Err(FsError::ReadOnly);
            }
            if meta.broken {
                return Err(FsError::Io(
                    "a transaction failed earlier; unmount and run fsck".into(),
                ));
            }
            let (mut sb, _) = read_superblock(&self.media)?;
            sb.clean = false;
            sb.next_generation();
            write_superblocks(&self.media, &sb)?;
            self.ro.store(false, Ordering::SeqCst);
            self.recall_everything(true, true);
            log::info!("remounted read-write");
        }
        Ok(())
    }

    /// FS_IOC_SHUTDOWN: after this, nothing reaches the media (see
    /// [`crate::media::Media::shut_down`]). Every operation is synchronous,
    /// so whatever returned before is durable in every mode, except the
    /// times kept lazily in DRAM (`atime.rs`), which only `Default` writes;
    /// the modes differ in what is still in progress: `Default` waits for it
    /// and writes back device writes through pins, `LogFlush` lets the transaction being
    /// committed finish, `NoLogFlush` cuts everything where it stands.
    pub fn shutdown(&self, mode: ShutdownMode) {
        // Direct clients stop first: nothing reaches the image after the cut.
        self.recall_everything(false, false);
        match mode {
            ShutdownMode::Default => {
                // As sync(2) before the cut: lazy times first (they take inode
                // locks before `meta`).
                if let Err(e) = self.flush_lazy_times(None) {
                    log::error!("shutdown: writing back times: {e}");
                }
                let _ns = self.ns.write();
                let _meta = self.meta.lock();
                if let Err(e) = self.flush_all_dirty() {
                    log::error!("shutdown: writing back data: {e}");
                }
                self.media.shut_down();
            }
            ShutdownMode::LogFlush => {
                let _meta = self.meta.lock();
                self.media.fence();
                self.media.shut_down();
            }
            ShutdownMode::NoLogFlush => self.media.shut_down(),
        }
        log::warn!("filesystem shut down ({mode:?}); every request now fails with EIO");
    }

    /// Every inode number in the table (to drop the kernel's caches of them).
    pub fn inode_numbers(&self) -> Vec<u64> {
        self.inodes.read().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Cred, FsOptions};
    use crate::media::Media;

    fn fresh() -> Fs {
        let media = Media::anonymous(32 << 20).unwrap();
        crate::fs::make::mkfs(&media, &Default::default()).unwrap();
        Fs::mount(media, FsOptions::default()).unwrap()
    }

    fn cred() -> Cred {
        Cred {
            uid: 0,
            gid: 0,
            umask: 0o022,
        }
    }

    #[test]
    fn remount_read_only_marks_clean_and_back() {
        let fs = fresh();
        let a = fs.mknod(1, b"a", libc::S_IFREG | 0o644, 0, cred()).unwrap();
        fs.write(a.ino, 0, b"hello", false).unwrap();
        assert!(!read_superblock(&fs.media).unwrap().0.clean);
        fs.set_read_only(true).unwrap();
        assert!(read_superblock(&fs.media).unwrap().0.clean);
        assert!(matches!(
            fs.write(a.ino, 0, b"x", false),
            Err(FsError::ReadOnly)
        ));
        assert!(matches!(
            fs.mknod(1, b"b", libc::S_IFREG | 0o644, 0, cred()),
            Err(FsError::ReadOnly)
        ));
        assert_eq!(fs.read(a.ino, 0, 5).unwrap(), b"hello");
        fs.set_read_only(false).unwrap();
        assert!(!read_superblock(&fs.media).unwrap().0.clean);
        fs.write(a.ino, 5, b" again", false).unwrap();
        assert_eq!(fs.read(a.ino, 0, 11).unwrap(), b"hello again");
        fs.unmount().unwrap();
        assert!(read_superblock(&fs.media).unwrap().0.clean);
    }

    #[test]
    fn shutdown_stops_every_store() {
        let fs = fresh();
        let a = fs.mknod(1, b"a", libc::S_IFREG | 0o644, 0, cred()).unwrap();
        fs.shutdown(ShutdownMode::NoLogFlush);
        assert!(fs.write(a.ino, 0, b"x", false).is_err());
        assert!(fs.mknod(1, b"b", libc::S_IFREG | 0o644, 0, cred()).is_err());
        assert!(fs.set_read_only(true).is_err());
        fs.unmount().unwrap();
        assert!(!read_superblock(&fs.media).unwrap().0.clean);
    }
}
