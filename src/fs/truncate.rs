//! Truncate, fallocate (allocate, punch, zero), fsync, lseek (SEEK_DATA /
//! SEEK_HOLE) and the extent list: everything that changes or walks a
//! file's map without writing its data.

use super::steps::RangeJob;
use super::*;
use crate::format::RangeOp;

impl Fs {
    /// Set the size under the inode lock, freeing blocks past the new end.
    /// `rec` carries the other attribute changes to commit. The first
    /// transaction sets the size, zeroes the tail of the new last block (as a
    /// journaled store, so it is atomic with the size) and frees up to a batch
    /// of extents; if more remain, it also records an orphan `Truncate` so a
    /// crash before the last batch is finished at the next mount.
    /// Truncate `g` to `size` with `rec` as its new inode (and, when given,
    /// `xattrs` as its new xattrs: chmod and truncate in one request).
    pub(super) fn truncate_locked(
        &self,
        g: &mut Inode,
        size: u64,
        mut rec: InodeRec,
        xattrs: Option<XattrMap>,
    ) -> FsResult<()> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let old = g.rec.size;
        if size > old {
            self.prepare_extend(g, size)?;
        }
        rec.size = size;
        let first = size.div_ceil(BS);
        if size < old {
            self.break_layouts(g, size / BS, u64::MAX)?;
        }
        // A shared last block is copied first: its tail is zeroed below in place.
        if size < old && !size.is_multiple_of(BS) {
            if let Some((s, e)) = g.find(size / BS) {
                let p = e.phys + (size / BS - s);
                let shared = ctx::ref_pieces(&self.meta.lock().refs, p, 1)[0].2 >= 2;
                if shared {
                    let b = size / BS * BS;
                    self.write_locked(g, b, b + 1, Fill::Unshare, false)?;
                }
            }
        }
        // Shrinking frees space: it may use the reserve (see `ctx_freeing`).
        let mut ctx = if size < old {
            self.ctx_freeing()?
        } else {
            self.ctx()?
        };
        ctx.ensure_slots(RecKind::Extent, 1)?;
        ctx.ensure_slots(RecKind::Orphan, 1)?;
        let (ops, done) = if size < old {
            if !size.is_multiple_of(BS) {
                if let Some((s, e)) = g.find(size / BS) {
                    let p = e.phys + (size / BS - s);
                    let inner = size % BS;
                    ctx.tx
                        .write(p * BS + inner, &vec![0u8; (BS - inner) as usize]);
                }
            }
            self.unmap_walk(&mut ctx, g, first, u64::MAX, Budget::Step(FREE_BATCH))?
        } else {
            (Vec::new(), true)
        };
        let mut orphan = None;
        if !done {
            let s = ctx.slot_alloc(RecKind::Orphan)?;
            ctx.slot_write(
                s,
                &OrphanRec::Truncate {
                    ino: g.ino,
                    from: first,
                }
                .encode(),
            );
            orphan = Some(s);
        }
        if let Some(m) = &xattrs {
            self.stage_xattrs(&mut ctx, &g.rec, m, &mut rec)?;
        }
        ctx.put_inode(g.ino, &rec);
        ctx.commit()?;
        g.rec = rec;
        if xattrs.is_some() {
            g.xattrs = xattrs.map(Box::new);
        }
        for op in ops {
            self.apply_op(g, op);
        }
        if let Some(s) = orphan {
            self.unmap_tail(g, first, Some(s))?;
        }
        Ok(())
    }

    /// Free every block of `g` from logical block `first` on, in batches; the
    /// last batch also drops the orphan record `orphan`. The new size is
    /// committed already, so a caller that is gone does not stop this: it
    /// is answered at once with the attributes it will see
    /// (`stop::past_return`), and the batches run on.
    pub(super) fn unmap_tail(
        &self,
        g: &mut Inode,
        first: u64,
        orphan: Option<u64>,
    ) -> FsResult<()> {
        loop {
            let mut ctx = self.ctx_freeing()?;
            ctx.ensure_slots(RecKind::Extent, 1)?;
            let (ops, done) =
                self.unmap_walk(&mut ctx, g, first, u64::MAX, Budget::Step(FREE_BATCH))?;
            if done {
                if let Some(s) = orphan {
                    ctx.slot_free(RecKind::Orphan, s);
                }
            }
            ctx.commit()?;
            for op in ops {
                self.apply_op(g, op);
            }
            if done {
                return Ok(());
            }
            crate::fs::stop::past_return(|| g.attr());
        }
    }

    pub fn truncate(&self, ino: u64, size: u64) -> FsResult<Attr> {
        self.setattr(
            ino,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
    }

    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        // Data is flushed at write time and metadata at commit; device writes
        // through pins attributed to this file are flushed here.
        self.get(ino)?;
        self.flush_dirty_pages(ino)?;
        self.media.fence();
        if self.meta.lock().journal.inject.fsync_no_times {
            return Ok(());
        }
        self.flush_lazy_times(Some(ino))
    }

    /// fallocate(2): mode 0 / KEEP_SIZE allocate, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE.
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, mode: i32) -> FsResult<()> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
        if mode
            & !(libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE)
            != 0
            || (punch && zero)
            || (punch && !keep)
        {
            return Err(FsError::NotSupported);
        }
        if len == 0 {
            return Err(FsError::Invalid);
        }
        let end = off.checked_add(len).ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let r = self.get(ino)?;
        let mut g = r.write()?;
        g.not_immutable()?;
        if g.append_only() && mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(FsError::Perm);
        }
        if g.is_dir() {
            return Err(FsError::IsDir);
        }
        if g.ftype() != libc::S_IFREG {
            return Err(FsError::NoSuchAddr);
        }
        if punch || zero {
            self.break_layouts(&g, off / BS, end.div_ceil(BS))?;
            // Partial blocks at the edges get zeros written through the write
            // engine (copy-on-write if shared; no time changes there: the
            // operation stamps its times once, below); bytes past EOF are
            // zero already.
            let fb = off.div_ceil(BS);
            let lb = end / BS;
            let size = g.rec.size;
            let mut edges = Vec::new();
            if fb > lb {
                edges.push((off, end));
            } else {
                edges.push((off, fb * BS));
                edges.push((lb * BS, end));
            }
            for (a, b) in edges {
                let b = b.min(size);
                if a < b && (a / BS..b.div_ceil(BS)).any(|l| g.find(l).is_some()) {
                    let zeros = vec![0u8; (b - a) as usize];
                    self.write_locked(&mut g, a, b, Fill::Data(&zeros), false)?;
                }
            }
            // Whole blocks of a punch: unmapped (references dropped) in
            // steps; an intent record lets mount finish a punch cut short.
            // The first step (the only one, if there are none) stamps the
            // punch's times.
            if punch {
                let t = now();
                let mut rec = g.rec.clone();
                rec.mtime = t;
                rec.ctime = t;
                let job = RangeJob {
                    intent: Some(OrphanRec::Range {
                        op: RangeOp::Punch,
                        ino,
                        from: fb,
                        end: lb,
                    }),
                    slot: None,
                    finish: true,
                    rec: Some(rec),
                    pre: Vec::new(),
                    punch: (fb < lb).then_some((fb, lb)),
                    post: Vec::new(),
                    freeing: true,
                };
                return self.run_range(&mut g, job);
            }
        }
        if !keep && end > g.rec.size {
            self.prepare_extend(&mut g, end)?;
        }
        // Fresh zeroed blocks for the holes of [off, end) and, for a
        // zero-range, in place of its whole blocks [zfb, zlb): those are
        // unmapped, then mapped to the fresh blocks. The blocks are all
        // reserved (ENOSPC before any change) and zeroed first; the steps
        // then map them (the partial edge blocks' holes first), and an
        // intent record lets mount finish a change cut short.
        let first = off / BS;
        let lend = end.div_ceil(BS);
        let (zfb, zlb) = if zero {
            (off.div_ceil(BS), end / BS)
        } else {
            (0, 0)
        };
        let whole = zfb < zlb;
        let edge_holes: Vec<(u64, u64)> = Self::holes(&g, first, lend)
            .into_iter()
            .flat_map(|(l, n)| {
                let e = l + n;
                if !whole {
                    return vec![(l, n)];
                }
                [(l, e.min(zfb)), (l.max(zlb), e)]
                    .into_iter()
                    .filter(|(a, b)| a < b)
                    .map(|(a, b)| (a, b - a))
                    .collect()
            })
            .collect();
        let mid: Vec<(u64, u64)> = if whole {
            vec![(zfb, zlb - zfb)]
        } else {
            Vec::new()
        };
        let fresh = self.plan_fresh(&[edge_holes.clone(), mid].concat(), false)?;
        let n_edge: u64 = edge_holes.iter().map(|h| h.1).sum();
        // Split the runs: the edge holes' blocks come first.
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        let mut left = n_edge;
        for (l, p, n) in fresh {
            if left >= n {
                pre.push((l, p, n));
                left -= n;
            } else if left > 0 {
                pre.push((l, p, left));
                post.push((l + left, p + left, n - left));
                left = 0;
            } else {
                post.push((l, p, n));
            }
        }
        let t = now();
        let mut rec = g.rec.clone();
        if !keep && end > rec.size {
            rec.size = end;
        }
        rec.ctime = t;
        if zero {
            rec.mtime = t;
        }
        let intent = if whole {
            OrphanRec::Range {
                op: RangeOp::Zero,
                ino,
                from: zfb,
                end: zlb,
            }
        } else {
            OrphanRec::Range {
                op: RangeOp::Fill,
                ino,
                from: first,
                end: lend,
            }
        };
        if !whole {
            // No punch: every hole in one list.
            post = [std::mem::take(&mut pre), post].concat();
        }
        let job = RangeJob {
            intent: Some(intent),
            slot: None,
            finish: true,
            rec: Some(rec),
            pre,
            punch: whole.then_some((zfb, zlb)),
            post,
            freeing: false,
        };
        self.run_range(&mut g, job)
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn lseek(&self, ino: u64, off: u64, whence: i32) -> FsResult<u64> {
        let r = self.get(ino)?;
        let g = r.read()?;
        let size = g.rec.size;
        if off >= size {
            return Err(FsError::NoSuchAddr);
        }
        let l = off / BS;
        match whence {
            libc::SEEK_DATA => {
                if g.find(l).is_some() {
                    return Ok(off);
                }
                match g.extents.range(l, u64::MAX).next() {
                    Some((s, _)) if s * BS < size => Ok(s * BS),
                    _ => Err(FsError::NoSuchAddr),
                }
            }
            libc::SEEK_HOLE => {
                let mut cur = l;
                while let Some((s, e)) = g.find(cur) {
                    cur = s + e.len;
                }
                Ok((cur * BS).max(off).min(size))
            }
            _ => Err(FsError::Invalid),
        }
    }

    /// Every extent of a file: (logical block, phys block, length).
    pub fn extents(&self, ino: u64) -> FsResult<Vec<(u64, u64, u64)>> {
        let r = self.get(ino)?;
        let g = r.read()?;
        Ok(g.extents.iter().map(|(l, e)| (l, e.phys, e.len)).collect())
    }
}
