//! Long operations in steps that each fit the journal.
//!
//! Every transaction must fit the journal's area (`Ctx::capacity`), whatever
//! the file or device size. The operations whose work grows with the file
//! (freeing extents, punching, zeroing and allocating ranges, remapping,
//! unsharing) therefore run as steps: each step fills its transaction up to
//! `Ctx::step_budget` (half the journal) with work whose journal bytes are
//! bounded in advance (`Ctx::drop_cost`, `Ctx::share_cost`,
//! `ctx::bitmap_cost`), cutting an extent or a run in two where one alone
//! would not fit.
//!
//! A step is a consistent state, but a user sees a punch, a zero range or an
//! allocation as one call, so those are made resumable: the first step that
//! is not also the last writes an intent record (orphan kinds 4-6, FORMAT.md)
//! and the last step frees it; a mount that finds one finishes the change
//! ([`Fs::resume_range`]), as it finishes an unfinished truncate (kind 3).

use super::ctx::{bitmap_cost, REC_COST};
use crate::format::RangeOp;
use crate::fs::*;

/// Journal bytes of the extent-record changes of one unmapped cut: the record
/// freed or rewritten, and a new one for a tail.
const CUT_COST: usize = 3 * REC_COST;

/// How far one unmap walk (`Fs::unmap_walk`) may go.
#[derive(Clone, Copy, Debug)]
pub(in crate::fs) enum Budget {
    /// The whole range, not sized against the journal: the caller has
    /// bounded it (a write engine piece, a remap batch).
    Caller,
    /// One step of a batched loop: as many extents (at most this many) as
    /// the step's room holds, the last one cut where its blocks do not all
    /// fit (the bitmap bytes of one huge extent, or its many refcount pieces).
    Step(usize),
}

/// New blocks for a hole: (logical block, physical block, blocks), reserved
/// in DRAM and zeroed on media before a step maps them.
pub(in crate::fs) type Fresh = (u64, u64, u64);

/// How far a list of [`Fresh`] runs is mapped: whole items, then blocks of the next.
type Cursor = (usize, u64);

/// A range change in steps (see [`Fs::run_range`]).
pub(in crate::fs) struct RangeJob {
    /// Written by the first step when it is not also the last.
    pub intent: Option<OrphanRec>,
    /// An intent record already on media (a change resumed by mount).
    pub slot: Option<u64>,
    /// The last step frees the intent record.
    pub finish: bool,
    /// The inode record the first step writes.
    pub rec: Option<InodeRec>,
    /// Holes mapped before the punch (a zero range's partial edge blocks).
    pub pre: Vec<Fresh>,
    /// Logical blocks to unmap.
    pub punch: Option<(u64, u64)>,
    /// Holes mapped after the punch.
    pub post: Vec<Fresh>,
    /// The steps may use the reserved blocks (an operation that frees space).
    pub freeing: bool,
}

impl Fs {
    /// The largest transaction a batched step should build outside a `Ctx`
    /// (the unshare planner): half the journal.
    pub(in crate::fs) fn step_budget(&self) -> usize {
        self.meta.lock().journal.capacity() / 2
    }

    /// Unmap logical blocks `[cut_s, cut_e)`, which lie inside the extent
    /// `(s, e)` of `g`: drop their references and rewrite the extent's
    /// records (a head keeps the slot, a tail gets one). DRAM changes go to `ops`.
    #[allow(clippy::too_many_arguments)] // the extent and its cut, as unmap_walk has them
    pub(in crate::fs) fn unmap_cut(
        &self,
        ctx: &mut Ctx<'_>,
        g: &Inode,
        s: u64,
        e: Ext,
        cut_s: u64,
        cut_e: u64,
        ops: &mut Vec<ExtOp>,
    ) -> FsResult<()> {
        let es = s + e.len;
        ctx.drop_ref(e.phys + (cut_s - s), cut_e - cut_s)?;
        let head = cut_s - s;
        let tail = es - cut_e;
        ops.push(ExtOp::Remove(s, e.len));
        if head > 0 {
            let he = Ext {
                phys: e.phys,
                len: head,
                slot: e.slot,
            };
            ops.push(ctx.write_extent(g.ino, s, he));
        }
        if tail > 0 {
            let slot = if head > 0 {
                ctx.slot_alloc(RecKind::Extent)?
            } else {
                e.slot
            };
            let te = Ext {
                phys: e.phys + (cut_e - s),
                len: tail,
                slot,
            };
            ops.push(ctx.write_extent(g.ino, cut_e, te));
        }
        if head == 0 && tail == 0 {
            ctx.slot_free(RecKind::Extent, e.slot);
        }
        Ok(())
    }

    /// The extents of `g` that overlap logical blocks `[first, end)`.
    pub(in crate::fs) fn extents_in(g: &Inode, first: u64, end: u64) -> Vec<(u64, Ext)> {
        let mut items: Vec<(u64, Ext)> = Vec::new();
        if first >= end {
            return items;
        }
        if let Some((s, e)) = g.find(first) {
            if s < first {
                items.push((s, e));
            }
        }
        items.extend(g.extents.range(first, end));
        items
    }

    /// The one unmap walk: remove the mappings of logical blocks `[first,
    /// end)` and free the blocks, within `budget`. Returns the DRAM changes
    /// and whether the range is now empty.
    pub(in crate::fs) fn unmap_walk(
        &self,
        ctx: &mut Ctx<'_>,
        g: &Inode,
        first: u64,
        end: u64,
        budget: Budget,
    ) -> FsResult<(Vec<ExtOp>, bool)> {
        let mut ops = Vec::new();
        for (n, (s, e)) in Self::extents_in(g, first, end).into_iter().enumerate() {
            let cut_s = s.max(first);
            let cut_e = (s + e.len).min(end);
            let limit = match budget {
                Budget::Caller => {
                    self.unmap_cut(ctx, g, s, e, cut_s, cut_e, &mut ops)?;
                    continue;
                }
                Budget::Step(limit) => limit,
            };
            if n == limit {
                return Ok((ops, false));
            }
            let room = ctx.step_room();
            let p = e.phys + (cut_s - s);
            let mut len = cut_e - cut_s;
            let mut cost = ctx.drop_cost(p, len) + CUT_COST;
            while cost > room && len > 1 {
                len /= 2;
                cost = ctx.drop_cost(p, len) + CUT_COST;
            }
            if cost > room && n > 0 {
                return Ok((ops, false));
            }
            self.unmap_cut(ctx, g, s, e, cut_s, cut_s + len, &mut ops)?;
            if cut_s + len < cut_e {
                return Ok((ops, false));
            }
        }
        Ok((ops, true))
    }

    /// One step of mapping the runs of `list` from `cur` on: as many as the
    /// step's budget holds, the last one cut where it does not fit whole.
    /// DRAM is changed at once (`undo` puts it back if the step fails).
    /// Returns the new cursor.
    fn fill_step(
        &self,
        ctx: &mut Ctx<'_>,
        g: &mut Inode,
        list: &[Fresh],
        cur: Cursor,
        undo: &mut Vec<(u64, Option<Ext>)>,
    ) -> FsResult<Cursor> {
        let (mut i, mut k) = cur;
        let mut n = 0usize;
        while i < list.len() {
            if n == FREE_BATCH {
                break;
            }
            let (l, p, len) = list[i];
            let (l, p, left) = (l + k, p + k, len - k);
            let room = ctx.step_room();
            let per = 3 * REC_COST;
            let mut take = left;
            while bitmap_cost(take) + per > room && take > 1 {
                take /= 2;
            }
            if bitmap_cost(take) + per > room && n > 0 {
                break;
            }
            ctx.blocks_used(p, take)?;
            for op in self.map_blocks(ctx, g, l, p, take)? {
                self.apply_op_undoable(g, op, undo);
            }
            n += 1;
            k += take;
            if k < len {
                break;
            }
            i += 1;
            k = 0;
        }
        Ok((i, k))
    }

    /// Run a range change in steps, each one transaction: map `pre`, unmap
    /// `punch`, map `post` (their blocks reserved and zeroed by the caller).
    /// The first step writes `rec`, and the intent record if it is not also
    /// the last; the last frees the intent when `finish`. If a step fails,
    /// the blocks not mapped yet are unreserved and the intent record is
    /// dropped (the change stops where it was, a consistent state). So does
    /// a caller that is gone (`stop::between_steps` before every step but
    /// the first): a killed fallocate leaves part of its range changed, as
    /// a killed remap leaves part of its range shared.
    pub(in crate::fs) fn run_range(&self, g: &mut Inode, job: RangeJob) -> FsResult<()> {
        let mut slot = job.slot;
        let mut rec = job.rec;
        let mut punch = job.punch;
        let (mut pre_c, mut post_c): (Cursor, Cursor) = ((0, 0), (0, 0));
        let mut first = true;
        loop {
            let mapped0 = g.mapped;
            let mut undo = Vec::new();
            let step = (|| -> FsResult<(Cursor, Cursor, bool, Option<u64>)> {
                if !std::mem::take(&mut first) {
                    crate::fs::stop::between_steps()?;
                }
                let mut ctx = if job.freeing {
                    self.ctx_freeing()?
                } else {
                    self.ctx()?
                };
                // (The intent's slot is taken only when a step is not the
                // last: an operation done in one step takes no record block.)
                ctx.ensure_slots(RecKind::Extent, 2)?;
                if let Some(r) = &rec {
                    ctx.put_inode(g.ino, r);
                }
                // Each phase goes on only once the one before it is done;
                // DRAM follows at once, so a later phase sees the earlier.
                let pre = self.fill_step(&mut ctx, g, &job.pre, pre_c, &mut undo)?;
                let mut punched = punch.is_none();
                if pre.0 == job.pre.len() {
                    if let Some((a, b)) = punch {
                        let (ops, done) =
                            self.unmap_walk(&mut ctx, g, a, b, Budget::Step(FREE_BATCH))?;
                        for op in ops {
                            self.apply_op_undoable(g, op, &mut undo);
                        }
                        punched = done;
                    }
                }
                let post = if pre.0 == job.pre.len() && punched {
                    self.fill_step(&mut ctx, g, &job.post, post_c, &mut undo)?
                } else {
                    post_c
                };
                let done = punched && pre.0 == job.pre.len() && post.0 == job.post.len();
                let mut new_slot = None;
                if done {
                    if let (Some(s), true) = (slot, job.finish) {
                        ctx.slot_free(RecKind::Orphan, s);
                    }
                } else if slot.is_none() && !ctx.m.journal.inject.no_intent {
                    if let Some(intent) = &job.intent {
                        let s = ctx.slot_alloc(RecKind::Orphan)?;
                        ctx.slot_write(s, &intent.encode());
                        new_slot = Some(s);
                    }
                }
                ctx.commit()?;
                Ok((pre, post, punched, new_slot))
            })();
            match step {
                Ok((pre, post, punched, new_slot)) => {
                    if let Some(r) = rec.take() {
                        g.rec = r;
                    }
                    if new_slot.is_some() {
                        slot = new_slot;
                    }
                    if punched {
                        punch = None;
                    }
                    pre_c = pre;
                    post_c = post;
                    if punched && pre.0 == job.pre.len() && post.0 == job.post.len() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.undo_ops(g, undo, mapped0);
                    let mut m = self.meta.lock();
                    for (list, (i, k)) in [(&job.pre, pre_c), (&job.post, post_c)] {
                        for (j, (_, p, n)) in list.iter().enumerate().skip(i) {
                            let skip = if j == i { k } else { 0 };
                            m.space.unreserve(p + skip, n - skip);
                        }
                    }
                    drop(m);
                    if let Some(s) = slot {
                        // Best effort: the change stops here, not at the next
                        // mount (if this fails, the mount finishes it).
                        if let Ok(mut ctx) = self.ctx_freeing() {
                            ctx.slot_free(RecKind::Orphan, s);
                            let _ = ctx.commit();
                        }
                    }
                    return Err(e);
                }
            }
        }
    }

    /// New zeroed blocks for the logical runs `holes`, reserved in DRAM
    /// (ENOSPC before anything changes unless `freeing`) and zeroed, flushed
    /// and fenced with no lock but the caller's inode lock.
    pub(in crate::fs) fn plan_fresh(
        &self,
        holes: &[(u64, u64)],
        freeing: bool,
    ) -> FsResult<Vec<Fresh>> {
        let need: u64 = holes.iter().map(|h| h.1).sum();
        if need == 0 {
            return Ok(Vec::new());
        }
        let runs = {
            let mut m = self.meta.lock();
            if m.broken {
                return Err(FsError::ReadOnly);
            }
            if freeing {
                m.space.reserve_many(need, None).ok_or(FsError::NoSpace)?
            } else {
                m.reserve_data(need, None)?
            }
        };
        let mut maps = Vec::new();
        let (mut ri, mut rused) = (0usize, 0u64);
        for (l, n) in holes {
            let (mut l, mut left) = (*l, *n);
            while left > 0 {
                let (rp, rl) = runs[ri];
                let take = (rl - rused).min(left);
                maps.push((l, rp + rused, take));
                rused += take;
                left -= take;
                l += take;
                if rused == rl {
                    ri += 1;
                    rused = 0;
                }
            }
        }
        let zeroed = (|| -> FsResult<()> {
            for (_, p, n) in &maps {
                self.media.fill(p * BS, n * BS, 0)?;
                self.media.flush(p * BS, n * BS)?;
            }
            self.media.fence();
            Ok(())
        })();
        if let Err(e) = zeroed {
            let mut m = self.meta.lock();
            for (p, l) in runs {
                m.space.unreserve(p, l);
            }
            return Err(e);
        }
        Ok(maps)
    }

    /// The holes of `g` in logical blocks `[first, end)`.
    pub(in crate::fs) fn holes(g: &Inode, first: u64, end: u64) -> Vec<(u64, u64)> {
        g.segments(first, end)
            .into_iter()
            .filter(|(_, _, p)| p.is_none())
            .map(|(l, n, _)| (l, n))
            .collect()
    }

    /// Mount: finish the range change an intent record (at `slot`) names.
    pub(in crate::fs) fn resume_range(
        &self,
        slot: u64,
        op: RangeOp,
        ino: u64,
        from: u64,
        end: u64,
    ) -> FsResult<()> {
        let drop_record = || -> FsResult<()> {
            let mut ctx = self.ctx_freeing()?;
            ctx.slot_free(RecKind::Orphan, slot);
            ctx.commit()
        };
        let Ok(r) = self.get(ino) else {
            log::warn!("intent record for free inode {ino}: dropping it");
            return drop_record();
        };
        let mut g = r.write()?;
        if g.ftype() != libc::S_IFREG {
            log::warn!("intent record for inode {ino}, not a regular file: dropping it");
            return drop_record();
        }
        let end = end.min(MAX_FILE_SIZE / BS);
        log::info!("finishing the {op:?} of inode {ino}, blocks {from}..{end}");
        let job = |punch, post, finish| RangeJob {
            intent: None,
            slot: Some(slot),
            finish,
            rec: None,
            pre: Vec::new(),
            punch,
            post,
            freeing: true,
        };
        if matches!(op, RangeOp::Punch | RangeOp::Zero) {
            let finish = op == RangeOp::Punch;
            self.run_range(&mut g, job(Some((from, end)), Vec::new(), finish))?;
            if finish {
                return Ok(());
            }
        }
        let holes = Self::holes(&g, from, end);
        match self.plan_fresh(&holes, true) {
            Ok(post) => self.run_range(&mut g, job(None, post, true)),
            Err(FsError::NoSpace) => {
                log::warn!("no space to finish the {op:?} of inode {ino}: stopped there");
                drop_record()
            }
            Err(e) => Err(e),
        }
    }

    /// Give private copies of the shared blocks of `[off, end)`, in chunks
    /// whose transactions fit the journal (each chunk changes no byte, so
    /// any prefix of them is a correct state). No time changes: the caller
    /// stamps its operation's.
    pub(in crate::fs) fn unshare_steps(&self, g: &mut Inode, off: u64, end: u64) -> FsResult<()> {
        let budget = self.step_budget();
        let (mut a, lend) = (off / BS, end.div_ceil(BS));
        while a < lend {
            if a > off / BS {
                // The pieces before are private copies of the same bytes,
                // committed: a caller that is gone may stop it here.
                crate::fs::stop::between_steps()?;
            }
            // Shared pieces from `a` on, as far as the budget goes.
            let mut b = a;
            let mut cost = 0usize;
            {
                let m = self.meta.lock();
                'outer: for (l, n, p) in g.segments(a, lend) {
                    let Some(p) = p else {
                        b = l + n;
                        continue;
                    };
                    for (pp, pl, c) in ctx::ref_pieces(&m.refs, p, n) {
                        let pl_start = l + (pp - p);
                        if c < 2 {
                            b = pl_start + pl;
                            continue;
                        }
                        let piece = |k: u64| 10 * REC_COST + 2 * bitmap_cost(k);
                        let mut take = pl;
                        while cost + piece(take) > budget && take > 1 {
                            take /= 2;
                        }
                        if cost + piece(take) > budget && b > a {
                            break 'outer;
                        }
                        cost += piece(take);
                        b = pl_start + take;
                        if take < pl {
                            break 'outer;
                        }
                    }
                }
            }
            let b = b.max(a + 1).min(lend);
            let (wa, wb) = ((a * BS).max(off), (b * BS).min(end));
            self.write_locked(g, wa, wb, Fill::Unshare, false)?;
            a = b;
        }
        Ok(())
    }
}
