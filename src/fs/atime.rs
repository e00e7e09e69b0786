//! Access times, as Linux keeps them (`relatime` by default, `strictatime`,
//! `noatime`, `nodiratime`, and the `noatime` inode flag), without a journal
//! commit per read; and the lazily written times of in-place overwrites.
//!
//! The kernel's FUSE client never updates atime itself; the daemon does, on
//! a READ (file data) and on the first READDIR of a listing. The new atime
//! lives in DRAM only, in the inode's record, as `lazytime` does on ext4.
//! So do the mtime and ctime of a write that only overwrites private blocks
//! already mapped below EOF (`data.rs`): its data is flushed before the
//! write returns, but no transaction runs for the times. Lazy times reach
//! the media with the next transaction that writes that inode (any metadata
//! change of the file), at fsync of the file, at remount read-only, at a
//! DEFAULT shutdown, or at unmount, which writes every inode still pending.
//! A crash loses the lazy times since those points, never anything else;
//! the crash oracle checks that a recovered time is never later than the
//! last one the file had before the crash.

use std::collections::BTreeSet;

use super::*;

/// When a read updates the access time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// Never (`noatime`, and the core's default when used without a mount).
    #[default]
    Never,
    /// When the access time is not after the modification or change time,
    /// or is a day old (`relatime`, the mount default).
    Relative,
    /// At every read (`strictatime`).
    Strict,
}

/// Inodes to write per transaction when lazy times are flushed.
const ATIME_BATCH: usize = 64;

#[derive(Default)]
pub(super) struct Pending {
    inos: parking_lot::Mutex<BTreeSet<u64>>,
}

impl Fs {
    /// Does a read of `g` now (at `t`) update its access time?
    fn wants_atime(&self, g: &Inode, t: Timespec) -> bool {
        if self.read_only() || g.rec.flags & flags::FL_NOATIME != 0 || g.rec.nlink == 0 {
            return false;
        }
        if g.is_dir() && self.opts.nodiratime {
            return false;
        }
        let a = g.rec.atime;
        match self.opts.atime {
            AtimeMode::Never => false,
            AtimeMode::Strict => a != t,
            AtimeMode::Relative => {
                a <= g.rec.mtime || a <= g.rec.ctime || t.sec - a.sec >= 24 * 3600
            }
        }
    }

    /// Would a read of `ino` now update its access time? (An open asks, to
    /// let the kernel keep cached pages only when no read needs to reach
    /// the daemon for the access time.)
    /// In no-wait mode a busy inode is WouldBlock, not an answer.
    pub fn read_would_touch_atime(&self, ino: u64) -> FsResult<bool> {
        if self.opts.atime == AtimeMode::Never {
            return Ok(false);
        }
        let Ok(r) = self.get(ino) else {
            return Ok(false);
        };
        match r.read() {
            Ok(g) => Ok(self.wants_atime(&g, now())),
            Err(FsError::WouldBlock) => Err(FsError::WouldBlock),
            Err(_) => Ok(false),
        }
    }

    /// The read lock of `r` for a read of its data, its access time
    /// updated first when due: under the write lock, then downgraded with
    /// no writer in between (so that once the reply is out, the reader may
    /// stat the file at once and see it).
    pub(super) fn read_lock_for_data(&self, r: &InodeRef) -> FsResult<RGuard> {
        if self.opts.atime == AtimeMode::Never {
            return r.read();
        }
        let t = now();
        let g = r.read()?;
        if !self.wants_atime(&g, t) {
            return Ok(g);
        }
        drop(g);
        let mut w = r.write()?;
        if self.wants_atime(&w, t) {
            nowait::changing();
            w.rec.atime = t;
            self.lazy_time(w.ino);
        }
        Ok(w.downgrade())
    }

    /// After a read of `ino` (data, or a directory listing from its start).
    /// Takes the inode's write lock only when the time changes.
    pub(super) fn touch_atime(&self, ino: u64) {
        // noatime (and the core's default): no lookup, no lock, on every read.
        if self.opts.atime == AtimeMode::Never {
            return;
        }
        let t = now();
        let Ok(r) = self.get(ino) else { return };
        match r.read() {
            Ok(g) if self.wants_atime(&g, t) => {}
            _ => return,
        }
        if let Ok(mut g) = r.write() {
            if self.wants_atime(&g, t) {
                g.rec.atime = t;
                self.lazy_time(ino);
            }
        }
    }

    /// `ino`'s times changed in DRAM only: write them at its next
    /// transaction, fsync or unmount.
    pub(super) fn lazy_time(&self, ino: u64) {
        self.lazy_times.inos.lock().insert(ino);
    }

    /// Write the DRAM access times of `inos` (or of every pending inode) to
    /// the media, a batch of inodes per transaction.
    pub(super) fn flush_lazy_times(&self, only: Option<u64>) -> FsResult<()> {
        if self.read_only() {
            return Ok(());
        }
        let todo: Vec<u64> = {
            let mut p = self.lazy_times.inos.lock();
            match only {
                Some(i) => p.take(&i).into_iter().collect(),
                None => std::mem::take(&mut *p).into_iter().collect(),
            }
        };
        for chunk in todo.chunks(ATIME_BATCH) {
            // Locks in ascending order (the set is sorted), then `meta`.
            let mut guards = Vec::new();
            for &ino in chunk {
                if let Ok(r) = self.get(ino) {
                    guards.push(r.write()?);
                }
            }
            let mut ctx = self.ctx()?;
            for g in &guards {
                if !g.rec.is_free() {
                    ctx.put_inode(g.ino, &g.rec);
                }
            }
            ctx.commit()?;
        }
        Ok(())
    }
}
