//! File data: open and close, read, and the write engine (copy-on-write of
//! shared blocks, allocation of holes, the extent-map updates of a write).

use super::counters::Counters;
use super::*;

impl Fs {
    // ------------------------------------------------------------------
    // Open files
    // ------------------------------------------------------------------

    pub fn open(&self, ino: u64) -> FsResult<u64> {
        let r = self.get(ino)?;
        let mut g = r.write()?;
        nowait::changing();
        g.open += 1;
        Ok(self.new_fh())
    }

    /// An open file or directory was closed; the last close of an unlinked
    /// inode frees it.
    pub fn close(&self, ino: u64) -> FsResult<()> {
        let r = self.get(ino)?;
        let mut g = r.write()?;
        nowait::changing();
        g.open = g.open.saturating_sub(1);
        if g.open == 0 && g.rec.nlink == 0 && g.orphan_slot.is_some() && !self.read_only() {
            self.free_inode(&mut g)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // File data
    // ------------------------------------------------------------------

    /// `read_with`, into a buffer (tests, the crash oracle, copy_file_range).
    pub fn read(&self, ino: u64, off: u64, size: usize) -> FsResult<Vec<u8>> {
        self.read_with(ino, off, size, <[u8]>::to_vec)
    }

    /// Read `size` bytes at `off` and hand them to `reply`: straight from
    /// the mapping when they lie in one mapped run that no pin lets a device
    /// write and no poison covers, else through a buffer.
    pub fn read_with<R>(
        &self,
        ino: u64,
        off: u64,
        size: usize,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let r = self.get(ino)?;
        // The access time first: once the reply is out, the reader may stat
        // the file at once and must see it.
        let g = self.read_lock_for_data(&r)?;
        if let Some((at, n)) = self.direct_run(&g, off, size) {
            Counters::bump(&self.counters.reads_direct);
            // The core's one `unsafe` call (fs/mod.rs denies the rest).
            #[allow(unsafe_code)]
            // SAFETY: `read_in_place`'s contract: `at..at+n` are data blocks
            // of `g`, whose read lock is held until `reply` returns, so no
            // write, truncate, punch, reflink or dedupe into `g` (which all
            // take its write lock) stores into them or frees them for
            // reuse; other files that share them copy on write and never
            // store into them in place; device stores (DMA through a pin,
            // poison) go through `device_write`, which `read_in_place`
            // excludes.
            return Ok(unsafe { self.media.read_in_place(at, n, reply) }?);
        }
        let data = self.read_locked(&g, off, size)?;
        Counters::bump(&self.counters.reads_buffered);
        Ok(reply(&data))
    }

    /// Where on media `[off, off+size)` of `g` (clipped at EOF) lies, when it
    /// is one mapped run with no pin or poison in the model.
    fn direct_run(&self, g: &Inode, off: u64, size: usize) -> Option<(u64, usize)> {
        if g.is_dir() || off >= g.rec.size || size == 0 {
            return None;
        }
        if self.pages.any_pins() || self.pages.any_poisoned() {
            return None;
        }
        let n = (g.rec.size - off).min(size as u64);
        let (s, e) = g.find(off / BS)?;
        let run_end = (s + e.len) * BS;
        if off + n > run_end {
            return None;
        }
        Some((e.phys * BS + (off - s * BS), n as usize))
    }

    pub(super) fn read_locked(&self, g: &Inode, off: u64, size: usize) -> FsResult<Vec<u8>> {
        if g.is_dir() {
            return Err(FsError::IsDir);
        }
        if off >= g.rec.size || size == 0 {
            return Ok(Vec::new());
        }
        let n = (g.rec.size - off).min(size as u64) as usize;
        let mut buf = vec![0u8; n];
        let first = off / BS;
        let end = (off + n as u64).div_ceil(BS);
        for (l, cnt, phys) in g.segments(first, end) {
            let Some(p) = phys else { continue };
            if self.pages.any_poisoned() {
                for b in p..p + cnt {
                    if self.pages.poison_check(b, g.ino).0 {
                        log::warn!("inode {}: read of poisoned block {b}: EIO", g.ino);
                        return Err(FsError::Io(format!("block {b} is poisoned")));
                    }
                }
            }
            let seg_start = (l * BS).max(off);
            let seg_end = ((l + cnt) * BS).min(off + n as u64);
            let media_off = p * BS + (seg_start - l * BS);
            self.media.read(
                media_off,
                &mut buf[(seg_start - off) as usize..(seg_end - off) as usize],
            )?;
        }
        Ok(buf)
    }

    /// The write lock of `ino` for a change of its data: not on a read-only
    /// filesystem (EROFS), a directory (EISDIR) or an immutable file (EPERM).
    pub(super) fn lock_data_change(&self, ino: u64) -> FsResult<WGuard> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let g = self.get(ino)?.write()?;
        if g.is_dir() {
            return Err(FsError::IsDir);
        }
        g.not_immutable()?;
        Ok(g)
    }

    /// Write `data` at `off` (or at EOF when `append`). Returns bytes written.
    pub fn write(&self, ino: u64, off: u64, data: &[u8], append: bool) -> FsResult<usize> {
        self.write_killing(ino, off, data, append, None)
            .map(|(n, _)| n)
    }

    /// `write`, which first clears what a write by this caller clears:
    /// `kill` (`Some` when the kernel said FUSE_WRITE_KILL_SUIDGID: a caller
    /// without CAP_FSETID) clears set-ID bits as
    /// [`setid_cleared_by_data_change`] says; any write drops a file
    /// capability (`security.capability`).
    /// As the VFS's `file_remove_privs`, this is its own transaction before
    /// the data's. Returns the bytes written and whether the mode changed
    /// (the kernel's cached attributes are then stale).
    pub fn write_killing(
        &self,
        ino: u64,
        off: u64,
        data: &[u8],
        append: bool,
        kill: Clearer,
    ) -> FsResult<(usize, bool)> {
        let mut g = self.lock_data_change(ino)?;
        let killed = !data.is_empty() && self.remove_privs_locked(&mut g, kill)?;
        let off = if append || g.append_only() {
            g.rec.size
        } else {
            off
        };
        if data.is_empty() {
            return Ok((0, false));
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        self.write_locked(&mut g, off, end, Fill::Data(data), true)?;
        Ok((data.len(), killed))
    }

    /// What any data change of `ino` clears first (write, truncate,
    /// fallocate in every mode, the destination of a clone or a copy): the
    /// VFS's `file_remove_privs`. `kill`: who changes the data ([`Clearer`]).
    /// Returns whether the mode changed.
    pub fn remove_privs(&self, ino: u64, kill: Clearer) -> FsResult<bool> {
        let mut g = self.lock_data_change(ino)?;
        self.remove_privs_locked(&mut g, kill)
    }

    fn remove_privs_locked(&self, g: &mut Inode, kill: Clearer) -> FsResult<bool> {
        const CAPS: &[u8] = b"security.capability";
        let mode = g.rec.mode;
        let clear = match kill {
            Some(in_group) => setid_cleared_by_data_change(mode, g.rec.gid, in_group),
            None => 0,
        };
        let caps = g.rec.xattr_blocks != 0 && {
            self.load_xattrs(g)?;
            g.xattrs.as_ref().is_some_and(|m| m.contains_key(CAPS))
        };
        if clear == 0 && !caps {
            return Ok(false);
        }
        let mut rec = g.rec.clone();
        rec.mode &= !clear;
        rec.ctime = now();
        if caps {
            let mut m = g.xattrs.as_deref().cloned().unwrap_or_default();
            m.remove(CAPS);
            self.store_xattrs(g, m, rec)?;
        } else {
            let mut ctx = self.ctx()?;
            ctx.put_inode(g.ino, &rec);
            ctx.commit()?;
            g.rec = rec;
        }
        if clear != 0 {
            Counters::bump(&self.counters.setid_cleared);
        }
        Ok(clear != 0)
    }

    /// Before a file grows to cover `[size, upto)`: zero whatever is mapped
    /// there. Bytes past EOF are never read, so on media they may hold
    /// anything (an in-place write past EOF whose size change never
    /// committed, blocks preallocated with KEEP_SIZE and written that way, a
    /// truncate's leftovers); every size increase clears them first, persisted
    /// before the growth commits. Shared blocks there are copied first. The
    /// caller then overwrites its own part of the range.
    pub(super) fn prepare_extend(&self, g: &mut Inode, upto: u64) -> FsResult<()> {
        let size = g.rec.size;
        if upto <= size {
            return Ok(());
        }
        let (first, end) = (size / BS, upto.div_ceil(BS));
        let mapped: Vec<(u64, u64, u64)> = g
            .segments(first, end)
            .into_iter()
            .filter_map(|(l, n, p)| p.map(|p| (l, n, p)))
            .collect();
        if mapped.is_empty() {
            return Ok(());
        }
        let shared = {
            let m = nowait::lock(&self.meta)?;
            mapped
                .iter()
                .any(|(_, n, p)| ctx::ref_pieces(&m.refs, *p, *n).iter().any(|x| x.2 >= 2))
        };
        // From here on the blocks past EOF change (copied, zeroed).
        nowait::changing();
        if shared {
            self.unshare_steps(g, size, upto)?;
        }
        for (l, n, p) in g.segments(first, end) {
            let Some(p) = p else { continue };
            let a = (l * BS).max(size);
            let b = ((l + n) * BS).min(upto.div_ceil(BS) * BS);
            if a < b {
                let at = p * BS + (a - l * BS);
                self.media.fill(at, b - a, 0)?;
                self.media.flush(at, b - a)?;
            }
        }
        self.media.fence();
        Ok(())
    }

    /// The write engine. `Fill::Data` writes bytes: holes get fresh zeroed
    /// blocks, unshared mapped blocks are written in place, shared blocks are
    /// copied on write (only the written blocks move; partial blocks keep the
    /// rest of their old bytes). `Fill::Unshare` copies every shared block of
    /// the range to a private one and changes no byte.
    ///
    /// Times: `stamp` is a write(2)'s (mtime and ctime, in the transaction
    /// with its mapping, or lazily for an overwrite in place). The engine's
    /// other uses (an unshare, zeroing a punch's or a zero range's partial
    /// edge blocks, a truncate's shared last block, `prepare_extend`) change
    /// no time: the operation they belong to stamps its times once itself,
    /// so no earlier step of it ever writes a later time than its last.
    pub(super) fn write_locked(
        &self,
        g: &mut Inode,
        off: u64,
        end: u64,
        fill: Fill<'_>,
        stamp: bool,
    ) -> FsResult<()> {
        if matches!(fill, Fill::Data(_)) && end > g.rec.size {
            self.prepare_extend(g, off)?;
        }
        let first = off / BS;
        let lend = end.div_ceil(BS);
        let segs = g.segments(first, lend);
        // Goal: right after the block before the write, to keep files contiguous.
        let goal = first
            .checked_sub(1)
            .and_then(|l| g.find(l))
            .map(|(s, e)| e.phys + (first - 1 - s) + 1);
        struct Piece {
            l: u64,
            n: u64,
            old: Option<u64>,
            cow: bool,
            new: Option<u64>,
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let runs = {
            let mut m = nowait::lock(&self.meta)?;
            if m.broken {
                return Err(FsError::ReadOnly);
            }
            for (l, n, phys) in segs {
                match phys {
                    None => {
                        if matches!(fill, Fill::Data(_)) {
                            pieces.push(Piece {
                                l,
                                n,
                                old: None,
                                cow: false,
                                new: None,
                            });
                        }
                    }
                    Some(p) => {
                        for (pp, pl, c) in ctx::ref_pieces(&m.refs, p, n) {
                            pieces.push(Piece {
                                l: l + (pp - p),
                                n: pl,
                                old: Some(pp),
                                cow: c >= 2,
                                new: None,
                            });
                        }
                    }
                }
            }
            let need: u64 = pieces
                .iter()
                .filter(|p| p.old.is_none() || p.cow)
                .map(|p| p.n)
                .sum();
            if need == 0 {
                Vec::new()
            } else {
                m.reserve_data(need, goal)?
            }
        };
        if pieces.iter().any(|p| p.cow) {
            // Copy-on-write (or unshare): the file leaves these blocks, so
            // a direct access under the current map must be over first.
            self.recall_layout(g.ino);
        }
        // Blocks are reserved and data is copied next: a no-wait request
        // finishes from here on.
        nowait::changing();
        // Assign reserved runs to the pieces that need new blocks, splitting pieces at run ends.
        let mut assigned: Vec<Piece> = Vec::with_capacity(pieces.len());
        let (mut ri, mut rused) = (0usize, 0u64);
        for p in pieces {
            if p.old.is_some() && !p.cow {
                if matches!(fill, Fill::Data(_)) {
                    assigned.push(p);
                }
                continue;
            }
            let (mut l, mut left, mut old) = (p.l, p.n, p.old);
            while left > 0 {
                let (rp, rl) = runs[ri];
                let take = (rl - rused).min(left);
                assigned.push(Piece {
                    l,
                    n: take,
                    old,
                    cow: p.cow,
                    new: Some(rp + rused),
                });
                rused += take;
                left -= take;
                l += take;
                old = old.map(|o| o + take);
                if rused == rl {
                    ri += 1;
                    rused = 0;
                }
            }
        }
        // Copy the data (only this inode's lock is held).
        for p in &assigned {
            let seg_start = p.l * BS;
            let seg_end = (p.l + p.n) * BS;
            let (ws, we) = match fill {
                Fill::Data(_) => (seg_start.max(off), seg_end.min(end)),
                Fill::Unshare => (seg_start, seg_start),
            };
            let target = p.new.or(p.old).expect("mapped or new");
            if let Some(np) = p.new {
                // Keep the bytes the write does not cover: old ones (CoW) or zeros (hole).
                for (a, b) in [(seg_start, ws), (we.max(ws), seg_end)] {
                    if b <= a {
                        continue;
                    }
                    let dst = np * BS + (a - seg_start);
                    match p.old {
                        Some(op) => {
                            let old = self
                                .media
                                .read_vec(op * BS + (a - seg_start), (b - a) as usize)?;
                            self.media.write_at(dst, &old)?;
                        }
                        None => self.media.fill(dst, b - a, 0)?,
                    }
                    self.media.flush(dst, b - a)?;
                }
            }
            if let Fill::Data(data) = fill {
                self.media.write_flushed(
                    target * BS + (ws - seg_start),
                    &data[(ws - off) as usize..(we - off) as usize],
                )?;
            }
        }
        self.media.fence();
        let t = now();
        if runs.is_empty() && (end <= g.rec.size || matches!(fill, Fill::Unshare)) {
            // An overwrite of private blocks in place (or an unshare that
            // found nothing shared): the data is durable now; a write's new
            // times stay in DRAM (lazytime, `atime.rs`) until the inode's
            // next transaction, fsync or unmount.
            if stamp {
                g.rec.mtime = t;
                g.rec.ctime = t;
                self.lazy_time(g.ino);
            }
            return Ok(());
        }
        // Metadata.
        let mut rec = g.rec.clone();
        if let Fill::Data(_) = fill {
            rec.size = rec.size.max(end);
        }
        if stamp {
            if let Fill::Data(_) = fill {
                rec.mtime = t;
            }
            rec.ctime = t;
        }
        let mapped0 = g.mapped;
        let mut undo = Vec::new();
        let res = (|| -> FsResult<()> {
            let mut ctx = self.ctx()?;
            let moved = assigned.iter().filter(|p| p.new.is_some()).count();
            let cows = assigned.iter().filter(|p| p.cow).count();
            ctx.ensure_slots(RecKind::Extent, 3 * moved)?;
            ctx.ensure_slots(RecKind::Refcount, 3 * cows)?;
            for (p, l) in &runs {
                ctx.blocks_used(*p, *l)?;
            }
            for p in assigned.iter().filter(|p| p.new.is_some()) {
                if p.old.is_some() {
                    let (ops, _) = self.unmap_walk(&mut ctx, g, p.l, p.l + p.n, Budget::Caller)?;
                    for op in ops {
                        self.apply_op_undoable(g, op, &mut undo);
                    }
                }
                // Apply to DRAM as we go so the next mapping can merge with
                // it; undone below if the transaction fails.
                for op in self.map_blocks(&mut ctx, g, p.l, p.new.unwrap(), p.n)? {
                    self.apply_op_undoable(g, op, &mut undo);
                }
            }
            ctx.put_inode(g.ino, &rec);
            ctx.commit()
        })();
        if let Err(e) = res {
            self.undo_ops(g, undo, mapped0);
            let mut m = self.meta.lock();
            for (p, l) in runs {
                m.space.unreserve(p, l);
            }
            return Err(e);
        }
        g.rec = rec;
        Ok(())
    }

    /// Map logical [l, l+n) to phys [p, p+n) (a hole before), merging with the
    /// previous extent when contiguous. Returns DRAM changes to apply.
    pub(super) fn map_blocks(
        &self,
        ctx: &mut Ctx<'_>,
        g: &Inode,
        l: u64,
        p: u64,
        n: u64,
    ) -> FsResult<Vec<ExtOp>> {
        let mut ops = Vec::new();
        let mut l = l;
        let mut p = p;
        let mut n = n;
        if let Some((s, e)) = l.checked_sub(1).and_then(|x| g.find(x)) {
            if s + e.len == l && e.phys + e.len == p && e.len + n <= u32::MAX as u64 {
                let ne = Ext {
                    len: e.len + n,
                    ..e
                };
                ops.push(ExtOp::Remove(s, e.len));
                ops.push(ctx.write_extent(g.ino, s, ne));
                return Ok(ops);
            }
        }
        while n > 0 {
            let take = n.min(u32::MAX as u64);
            let slot = ctx.slot_alloc(RecKind::Extent)?;
            let e = Ext {
                phys: p,
                len: take,
                slot,
            };
            ops.push(ctx.write_extent(g.ino, l, e));
            l += take;
            p += take;
            n -= take;
        }
        Ok(ops)
    }
}

/// Who makes a data change, as set-ID clearing needs to know them: `None`
/// for a caller with CAP_FSETID in the mount's user namespace (it keeps the
/// bits), else `Some(in_group)`, where `in_group(gid)` tells whether the
/// caller's fs gid or one of its supplementary groups is `gid` (asked only
/// when the answer matters: a set-group-ID file the group may not execute).
pub type Clearer<'a> = Option<&'a dyn Fn(u32) -> bool>;

/// The set-ID bits of a file (`mode`, group `gid`) that a data change by a
/// caller without CAP_FSETID clears (the VFS's `setattr_should_drop_suidgid`,
/// Linux 6.2 and later, as ext4, XFS and tmpfs apply it): set-user-ID always;
/// set-group-ID when the group may execute, or when the caller is not in
/// the file's group (a set-group-ID bit the group may not execute marks
/// mandatory locking only for the file's group).
pub fn setid_cleared_by_data_change(mode: u32, gid: u32, in_group: &dyn Fn(u32) -> bool) -> u32 {
    let sgid = mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group(gid));
    mode & (libc::S_ISUID | if sgid { libc::S_ISGID } else { 0 })
}
