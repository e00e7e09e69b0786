//! The filesystem side of direct access: the map a lease is
//! granted on, the times of a direct write, and the recall hook.
//!
//! The core knows nothing of sockets or of the control page: the FUSE edge
//! installs a [`Recall`] and the core calls it, holding the inode's lock,
//! wherever a file's layout changes under its leases (`break_layouts`, the
//! write engine's copy-on-write and unshare, freeing an inode), and with the
//! whole filesystem's state at remount read-only and shutdown.

use std::sync::Arc;

use super::*;

/// What the FUSE edge does when a leased layout changes.
pub trait Recall: Send + Sync {
    /// Every direct access to `ino` through a map granted before now is
    /// over when this returns (and later ones see a new generation).
    /// Called with `ino`'s lock held.
    fn recall(&self, ino: u64);
    /// The whole filesystem changed state: clients may go on only if
    /// `open` (and store only if `writable`); every access begun under the
    /// old state is over when this returns.
    fn recall_all(&self, open: bool, writable: bool);
}

/// A file's map for a lease, read under its inode lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseMap {
    pub size: u64,
    /// What `gen` returned under the lock.
    pub gen: u64,
    /// (logical block, physical block, blocks, writable in place).
    pub extents: Vec<(u64, u64, u64, bool)>,
    /// First logical block not listed, if the page is full.
    pub next: Option<u64>,
}

impl Fs {
    /// Install the recall hook (once; later calls are ignored).
    pub fn set_recall(&self, r: Arc<dyn Recall>) {
        let _ = self.recall.set(r);
    }

    /// Recall the leases of `ino` (its lock held by the caller).
    pub(super) fn recall_layout(&self, ino: u64) {
        if let Some(r) = self.recall.get() {
            r.recall(ino);
        }
    }

    /// Recall every lease and publish the filesystem's new state.
    pub(super) fn recall_everything(&self, open: bool, writable: bool) {
        if let Some(r) = self.recall.get() {
            r.recall_all(open, writable);
        }
    }

    /// The extents of `ino` from logical block `from` on (at most `max`
    /// pieces), each marked writable in place when `write` is asked, the
    /// filesystem is writable, the file has no set-ID bits and is not
    /// append-only or immutable, and the piece is the file's own
    /// (unshared), allocated and wholly below EOF. `gen` is called while the
    /// inode's lock is held, so no layout change can fall between the map
    /// and the generation it is valid for.
    pub fn lease_map(
        &self,
        ino: u64,
        from: u64,
        max: usize,
        write: bool,
        gen: &mut dyn FnMut() -> u64,
    ) -> FsResult<LeaseMap> {
        let r = self.get(ino)?;
        let g = r.read()?;
        if g.ftype() != libc::S_IFREG {
            return Err(FsError::Invalid);
        }
        let gen = gen();
        let size = g.rec.size;
        let may_write = write
            && !self.read_only()
            && g.rec.mode & (libc::S_ISUID | libc::S_ISGID) == 0
            && !g.immutable()
            && !g.append_only();
        let whole = size / BS;
        let m = self.meta.lock();
        let first = g.find(from).map_or(from, |(s, _)| s);
        let mut extents = Vec::new();
        // Push a run of the file's blocks, split at the last whole block
        // below EOF; `Some(next)` when the page is full.
        let mut emit = |lo: u64, po: u64, n: u64, own: bool| -> Option<u64> {
            let w = if own {
                whole.saturating_sub(lo).min(n)
            } else {
                0
            };
            for (l, p, k, wr) in [(lo, po, w, true), (lo + w, po + w, n - w, false)] {
                if k == 0 {
                    continue;
                }
                if extents.len() == max {
                    return Some(l);
                }
                extents.push((l, p, k, wr));
            }
            None
        };
        let poison = self.pages.any_poisoned();
        let mut next = None;
        'outer: for (l, e) in g.extents.range(first, u64::MAX) {
            for (p, n, c) in ctx::ref_pieces(&m.refs, e.phys, e.len) {
                let (mut lo, mut po, mut n) = (l + (p - e.phys), p, n);
                if lo + n <= from {
                    continue;
                }
                if lo < from {
                    let skip = from - lo;
                    (lo, po, n) = (from, po + skip, n - skip);
                }
                let own = may_write && c < 2;
                // A poisoned block whose read this file is refused is left
                // out, a hole to the client, which then reads it through
                // the kernel and gets EIO as the page model says.
                let mut runs = vec![(lo, po, n)];
                if poison {
                    runs.clear();
                    let (mut l, mut p) = (lo, po);
                    for b in self.pages.poisoned_in(po, n) {
                        if !self.pages.poison_check(b, ino).0 {
                            continue;
                        }
                        if b > p {
                            runs.push((l, p, b - p));
                        }
                        (l, p) = (l + (b + 1 - p), b + 1);
                    }
                    if po + n > p {
                        runs.push((l, p, po + n - p));
                    }
                }
                for (lo, po, n) in runs {
                    next = emit(lo, po, n, own);
                    if next.is_some() {
                        break 'outer;
                    }
                }
            }
        }
        Ok(LeaseMap {
            size,
            gen,
            extents,
            next,
        })
    }

    /// A direct write happened to `ino`: set its mtime and ctime as the
    /// write engine's overwrite in place does (in DRAM, written lazily).
    pub fn touch_direct(&self, ino: u64) -> FsResult<()> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let r = self.get(ino)?;
        let mut g = r.write()?;
        let t = now();
        g.rec.mtime = t;
        g.rec.ctime = t;
        self.lazy_time(ino);
        Ok(())
    }
}
