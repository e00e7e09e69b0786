//! Access times, as Linux keeps them (`relatime` by default, `strictatime`,
//! `noatime`, `nodiratime`, and the `noatime` inode flag), without a journal
//! commit per read.
//!
//! The kernel's FUSE client never updates atime itself; the daemon does, on
//! a READ (file data) and on the first READDIR of a listing. The new atime
//! lives in DRAM only, in the inode's record, as `lazytime` does on ext4:
//! it reaches the media with the next transaction that writes that inode
//! (any metadata change of the file), at fsync of the file, or at unmount,
//! which writes every inode still pending. A crash loses atime updates since
//! those points, never anything else; the crash oracle does not check atime.

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

/// Inodes whose access time changed in DRAM only, to write at fsync or
/// unmount. Inodes to write per transaction.
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
                self.atime_pending.inos.lock().insert(ino);
            }
        }
    }

    /// Write the DRAM access times of `inos` (or of every pending inode) to
    /// the media, a batch of inodes per transaction.
    pub(super) fn flush_atimes(&self, only: Option<u64>) -> FsResult<()> {
        if self.read_only() {
            return Ok(());
        }
        let todo: Vec<u64> = {
            let mut p = self.atime_pending.inos.lock();
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
