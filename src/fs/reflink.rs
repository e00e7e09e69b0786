//! Reflink: sharing extents between files (clone, dedupe, copy_file_range),
//! unsharing, and the introspection of shared ranges.
//!
//! Sharing is recorded XFS-style: the extent maps point several (inode,
//! offset) pairs at the same physical blocks, and a refcount record exists
//! only for ranges referenced two or more times. Cloning a file of N extents
//! costs O(N) records whatever its size. Large remaps run in batches of
//! `REMAP_BATCH` source extents, each its own transaction (as XFS remaps one
//! extent per transaction); the destination size changes in the last one.

use std::collections::BTreeMap;

use super::*;

const REMAP_BATCH: usize = 256;

/// The most one dedupe call compares and shares: 1 GiB, the VFS's cap on
/// one FIDEDUPERANGE request (`vfs_dedupe_file_range`); past it the caller
/// gets a short `bytes_deduped` and goes on from there.
pub const DEDUPE_MAX: u64 = 1 << 30;

/// One row of `daxlink extents`: logical and physical block, length in
/// blocks, reference count (1 = not shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentInfo {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub refcount: u32,
}

/// Filesystem-wide sharing statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareStats {
    /// Physical blocks referenced more than once.
    pub shared_blocks: u64,
    /// Blocks that would be needed without sharing, minus blocks used.
    pub saved_blocks: u64,
    pub refcount_records: u64,
    /// Blocks holding metadata records (extents, dirents, orphans, refcounts).
    pub record_blocks: u64,
}

/// FIDEDUPERANGE per-destination status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DedupeStatus {
    Same,
    Differs,
}

impl Fs {
    /// The extents of a file, split where the reference count changes.
    pub fn extents_detail(&self, ino: u64) -> FsResult<Vec<ExtentInfo>> {
        Ok(self.extents_page(ino, 0, usize::MAX)?.0)
    }

    /// One page of [`Fs::extents_detail`], as FIEMAP's `fm_start` and
    /// `fm_extent_count`: at most `max` pieces, from the one that holds or
    /// follows logical block `start`, and the logical block of the piece
    /// after the page (None: the page ends the file). It costs O(log n) in
    /// the file's extents plus what it returns, however long the file.
    pub fn extents_page(
        &self,
        ino: u64,
        start: u64,
        max: usize,
    ) -> FsResult<(Vec<ExtentInfo>, Option<u64>)> {
        let r = self.get(ino)?;
        let g = r.read()?;
        let m = self.meta.lock();
        let first = g.find(start).map_or(start, |(s, _)| s);
        let mut out = Vec::new();
        for (l, e) in g.extents.range(first, u64::MAX) {
            for (p, n, c) in ctx::ref_pieces(&m.refs, e.phys, e.len) {
                let logical = l + (p - e.phys);
                if logical + n <= start {
                    continue;
                }
                if out.len() == max {
                    return Ok((out, Some(logical)));
                }
                out.push(ExtentInfo {
                    logical,
                    physical: p,
                    length: n,
                    refcount: c,
                });
            }
        }
        Ok((out, None))
    }

    pub fn share_stats(&self) -> ShareStats {
        let m = self.meta.lock();
        let mut s = ShareStats {
            record_blocks: m.rec.block_count(),
            ..ShareStats::default()
        };
        for r in m.refs.values() {
            s.shared_blocks += r.len;
            s.saved_blocks += r.len * (r.count as u64 - 1);
            s.refcount_records += 1;
        }
        s
    }

    /// Check and normalise a remap request (FICLONERANGE / FIDEDUPERANGE rules).
    /// Returns the byte length and the number of blocks to remap.
    fn remap_checks(
        &self,
        src: &Inode,
        soff: u64,
        dst: &Inode,
        doff: u64,
        len: u64,
        dedupe: bool,
    ) -> FsResult<(u64, u64)> {
        dst.fully_mutable()?;
        for g in [src, dst] {
            if g.is_dir() {
                return Err(FsError::IsDir);
            }
            if g.ftype() != libc::S_IFREG {
                return Err(FsError::Invalid);
            }
        }
        if !soff.is_multiple_of(BS) || !doff.is_multiple_of(BS) {
            return Err(FsError::Invalid);
        }
        let ssize = src.rec.size;
        if soff > ssize {
            return Err(FsError::Invalid);
        }
        let len = if len == 0 { ssize - soff } else { len };
        let send = soff.checked_add(len).ok_or(FsError::Invalid)?;
        if send > ssize {
            return Err(FsError::Invalid);
        }
        let dend = doff.checked_add(len).ok_or(FsError::FileTooBig)?;
        if dend > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        if dedupe && dend > dst.rec.size {
            return Err(FsError::Invalid);
        }
        let blocks = if len % BS == 0 {
            len / BS
        } else {
            // An unaligned length is allowed only for a tail that ends at the
            // source's EOF and does not end inside the destination.
            let ends_at_eof =
                send == ssize && (dend >= dst.rec.size || (dedupe && dend == dst.rec.size));
            if !ends_at_eof {
                return Err(FsError::Invalid);
            }
            len.div_ceil(BS)
        };
        if src.ino == dst.ino {
            let (s, d, n) = (soff / BS, doff / BS, blocks);
            if d < s + n && s < d + n {
                return Err(FsError::Invalid);
            }
        }
        Ok((len, blocks))
    }

    /// Share `blocks` blocks of `src` from logical block `sb` into `dst` at
    /// logical block `db`, replacing what `dst` had there. Both inodes are
    /// locked by the caller (`gs` holds their guards). `dst_rec` (the new
    /// size and times) and the `fresh` blocks go into the first transaction.
    /// When more than one is needed, the first also writes an intent record
    /// (kind 7) and the last frees it (`intent`: one already on media, when
    /// mount resumes a remap).
    #[allow(clippy::too_many_arguments)] // one call per remap kind; a struct would only rename them
    fn remap_locked(
        &self,
        gs: &mut BTreeMap<u64, WGuard>,
        src: u64,
        sb: u64,
        dst: u64,
        db: u64,
        blocks: u64,
        dst_rec: InodeRec,
        fresh: &[(u64, Vec<u8>)],
        intent: Option<u64>,
    ) -> FsResult<()> {
        let mut slot = intent;
        let r = self.remap_batches(gs, (src, sb), (dst, db), blocks, dst_rec, fresh, &mut slot);
        if let (Err(_), Some(s)) = (&r, slot) {
            // Best effort: the remap stops here, not at the next mount (if
            // this fails too, the mount finishes it).
            if let Ok(mut ctx) = self.ctx_freeing() {
                ctx.slot_free(RecKind::Orphan, s);
                let _ = ctx.commit();
            }
        }
        r
    }

    /// The batches of `remap_locked`; `slot` follows its intent record.
    #[allow(clippy::too_many_arguments)] // remap_locked's, split in pairs
    fn remap_batches(
        &self,
        gs: &mut BTreeMap<u64, WGuard>,
        (src, sb): (u64, u64),
        (dst, db): (u64, u64),
        blocks: u64,
        dst_rec: InodeRec,
        fresh: &[(u64, Vec<u8>)],
        slot: &mut Option<u64>,
    ) -> FsResult<()> {
        // Source pieces: (logical, blocks, physical, copy instead of share).
        // In the proxy model, pinned blocks are given to the destination as
        // copies: a pinned block never gains an owner (invariant 1), and a
        // device's later writes stay in the pinned (file, offset) (invariant 2).
        let proxy = self.pages.model == crate::pages::PageModel::Proxy;
        let mut segs: Vec<(u64, u64, u64, bool)> = Vec::new();
        for (l, n, p) in gs[&src].segments(sb, sb + blocks) {
            let Some(p) = p else { continue };
            let pinned = if proxy {
                self.pages.pinned_in(p, n)
            } else {
                Vec::new()
            };
            if pinned.is_empty() {
                segs.push((l, n, p, false));
                continue;
            }
            let mut k = 0;
            while k < n {
                let is = pinned.contains(&(p + k));
                let s = k;
                while k < n && pinned.contains(&(p + k)) == is {
                    k += 1;
                }
                segs.push((l + s, k - s, p + s, is));
            }
        }
        let end = sb + blocks;
        let mut done_to = sb; // source logical block up to which dst is remapped
        loop {
            let first = done_to == sb;
            if !first {
                // The batches before are committed: a caller that is gone
                // may stop the remap here (remap_locked frees its intent).
                super::stop::between_steps()?;
            }
            let mut ctx = self.ctx()?;
            // This batch: the source blocks [done_to, upto), at most
            // REMAP_BATCH segments, halved until its journal bytes fit.
            let k0 = segs.partition_point(|s| s.0 + s.1 <= done_to);
            let mut upto = match segs.get(k0 + REMAP_BATCH - 1) {
                Some(s) if k0 + REMAP_BATCH < segs.len() => s.0 + s.1,
                _ => end,
            };
            let room = ctx.step_room();
            while upto - done_to > 1 {
                let mut cost =
                    self.remap_cost(&ctx, &gs[&dst], &segs[k0..], (done_to, upto), (sb, db));
                if first {
                    cost += fresh.len() * 2048 + 1024;
                }
                if cost <= room {
                    break;
                }
                upto = done_to + (upto - done_to) / 2;
            }
            let last = upto == end;
            let batch: Vec<(u64, u64, u64, bool)> = segs[k0..]
                .iter()
                .take_while(|s| s.0 < upto)
                .map(|&(l, n, p, copy)| {
                    let a = l.max(done_to);
                    let b = (l + n).min(upto);
                    (a, b - a, p + (a - l), copy)
                })
                .collect();
            ctx.ensure_slots(RecKind::Extent, 2 * batch.len() + 3 * fresh.len() + 2)?;
            if !last && slot.is_none() {
                ctx.ensure_slots(RecKind::Orphan, 1)?;
            }
            // Everything that can fail (space for the fresh blocks) before any change.
            let fresh_phys: Vec<u64> = if first {
                fresh
                    .iter()
                    .map(|_| ctx.reserve_contiguous(1))
                    .collect::<FsResult<_>>()?
            } else {
                Vec::new()
            };
            let mut map_ops = Vec::new();
            if first && !fresh.is_empty() {
                // Whole new blocks for the destination (copy_file_range's
                // unaligned head and tail, outside the shared range) in the
                // first transaction. DRAM takes them as they go (the next
                // unmap must see them); a failure from here on leaves DRAM
                // ahead of the media and marks the filesystem broken.
                let r = (|| -> FsResult<()> {
                    let g = gs.get_mut(&dst).expect("locked");
                    for ((dl, content), p) in fresh.iter().zip(&fresh_phys) {
                        self.media.write_at(p * BS, content)?;
                        self.media.persist(p * BS, BS)?;
                        ctx.blocks_used(*p, 1)?;
                        let (ops, _) = self.unmap_walk(&mut ctx, g, *dl, dl + 1, Budget::Caller)?;
                        for op in ops {
                            self.apply_op(g, op);
                        }
                        for op in self.map_blocks(&mut ctx, g, *dl, *p, 1)? {
                            self.apply_op(g, op);
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    log::error!("copy_file_range failed half-way, refusing further changes: {e}");
                    ctx.m.broken = true;
                    return Err(e);
                }
            }
            let (unmap_ops, _) = {
                let g = &gs[&dst];
                self.unmap_walk(
                    &mut ctx,
                    g,
                    db + (done_to - sb),
                    db + (upto - sb),
                    Budget::Caller,
                )?
            };
            for &(l, n, p, copy) in &batch {
                let dl = db + (l - sb);
                // (destination logical block, physical block, length)
                let mut maps: Vec<(u64, u64, u64)> = Vec::new();
                if copy {
                    // Private copies of the write-pinned blocks.
                    let mut k = 0u64;
                    for (rp, rl) in ctx.reserve(n, None)? {
                        let bytes = self.media.read_vec((p + k) * BS, (rl * BS) as usize)?;
                        self.media.write_at(rp * BS, &bytes)?;
                        self.media.flush(rp * BS, rl * BS)?;
                        ctx.blocks_used(rp, rl)?;
                        maps.push((dl + k, rp, rl));
                        k += rl;
                    }
                    self.media.fence();
                } else {
                    ctx.share(p, n)?;
                    maps.push((dl, p, n));
                }
                for (ml, mp, mn) in maps {
                    let slot = ctx.slot_alloc(RecKind::Extent)?;
                    let e = Ext {
                        phys: mp,
                        len: mn,
                        slot,
                    };
                    map_ops.push(ctx.write_extent(dst, ml, e));
                }
            }
            if first {
                ctx.put_inode(dst, &dst_rec);
            }
            // A remap cut into batches is finished by mount after a crash.
            let mut new_slot = None;
            match *slot {
                Some(s) if last => ctx.slot_free(RecKind::Orphan, s),
                None if !last && !ctx.m.journal.inject.no_intent => {
                    let s = ctx.slot_alloc(RecKind::Orphan)?;
                    let rec = OrphanRec::Remap {
                        src,
                        dst,
                        sb,
                        db,
                        blocks,
                    };
                    ctx.slot_write(s, &rec.encode());
                    new_slot = Some(s);
                }
                _ => {}
            }
            let fresh_applied = first && !fresh.is_empty();
            if let Err(e) = ctx.commit() {
                if fresh_applied {
                    // DRAM already maps the fresh blocks.
                    self.meta.lock().broken = true;
                }
                return Err(e);
            }
            if last {
                *slot = None;
            } else if new_slot.is_some() {
                *slot = new_slot;
            }
            let g = gs.get_mut(&dst).expect("locked");
            for op in unmap_ops.into_iter().chain(map_ops) {
                self.apply_op(g, op);
            }
            if first {
                g.rec = dst_rec.clone();
            }
            if last {
                return Ok(());
            }
            done_to = upto;
        }
    }

    /// Mount: finish a remap an intent record (at `slot`) names. The
    /// destination's size and times were set by the first batch.
    pub(super) fn resume_remap(
        &self,
        slot: u64,
        (src, dst): (u64, u64),
        (sb, db, blocks): (u64, u64, u64),
    ) -> FsResult<()> {
        let regular = |ino: u64| -> bool {
            self.get(ino)
                .ok()
                .and_then(|r| r.read().ok().map(|g| g.ftype() == libc::S_IFREG))
                .unwrap_or(false)
        };
        if !regular(src) || !regular(dst) {
            log::warn!("remap intent for inodes {src} -> {dst}, not two files: dropping it");
            let mut ctx = self.ctx_freeing()?;
            ctx.slot_free(RecKind::Orphan, slot);
            return ctx.commit();
        }
        log::info!(
            "finishing the remap of inode {src} blocks {sb}+{blocks} into inode {dst} at {db}"
        );
        let mut gs = self.lock_many(&[src, dst])?;
        let rec = gs[&dst].rec.clone();
        self.remap_locked(&mut gs, src, sb, dst, db, blocks, rec, &[], Some(slot))
    }

    /// At most the journal bytes of remapping the source blocks `[from,
    /// upto)` (of the segments `segs`, sorted) into `g`, source block `sb`
    /// going to destination block `db`: the destination's unmap and each
    /// segment's share or copy.
    fn remap_cost(
        &self,
        ctx: &Ctx<'_>,
        g: &Inode,
        segs: &[(u64, u64, u64, bool)],
        (from, upto): (u64, u64),
        (sb, db): (u64, u64),
    ) -> usize {
        let rec = ctx::REC_COST;
        let (df, de) = (db + (from - sb), db + (upto - sb));
        let mut cost = 0usize;
        for (s, e) in Self::extents_in(g, df, de) {
            let (a, b) = (s.max(df), (s + e.len).min(de));
            cost += ctx.drop_cost(e.phys + (a - s), b - a) + 3 * rec;
        }
        for &(l, n, p, copy) in segs.iter().take_while(|s| s.0 < upto) {
            let (a, b) = (l.max(from), (l + n).min(upto));
            cost += if copy {
                ctx::bitmap_cost(b - a) + 2 * rec
            } else {
                ctx.share_cost(p + (a - l), b - a) + 2 * rec
            };
        }
        cost
    }

    /// The one prologue of clone and dedupe (the caller has shown that it
    /// may read the source, by an open file at the FUSE edge, which also
    /// refuses another filesystem with EXDEV): both inodes locked, the
    /// FICLONERANGE / FIDEDUPERANGE checks (`remap_checks`: not a directory,
    /// a regular file, immutable/append-only, alignment, ranges, EOF), and
    /// upstream's wait for pins on both files
    /// (xfs_mmaplock_two_inodes_and_break_dax_layout).
    #[allow(clippy::too_many_arguments)]
    fn remap_begin(
        &self,
        src: u64,
        soff: u64,
        dst: u64,
        doff: u64,
        len: u64,
        dedupe: bool,
    ) -> FsResult<(BTreeMap<u64, WGuard>, u64, u64)> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let gs = self.lock_many(&[src, dst])?;
        let (len, blocks) = self.remap_checks(&gs[&src], soff, &gs[&dst], doff, len, dedupe)?;
        self.break_layouts(&gs[&src], 0, u64::MAX)?;
        self.break_layouts(&gs[&dst], 0, u64::MAX)?;
        Ok((gs, len, blocks))
    }

    /// FICLONERANGE: share `len` bytes (0 = to EOF) of `src` at `soff` into
    /// `dst` at `doff`. The caller must have checked that it may read `src`
    /// (the kernel never opened it). Returns the bytes cloned.
    pub fn clone_range(&self, src: u64, soff: u64, dst: u64, doff: u64, len: u64) -> FsResult<u64> {
        let (mut gs, len, blocks) = self.remap_begin(src, soff, dst, doff, len, false)?;
        if len == 0 {
            return Ok(0);
        }
        if doff + len > gs[&dst].rec.size {
            self.prepare_extend(gs.get_mut(&dst).expect("locked"), doff)?;
        }
        let t = now();
        let mut rec = gs[&dst].rec.clone();
        rec.size = rec.size.max(doff + len);
        rec.mtime = t;
        rec.ctime = t;
        self.remap_aligned(&mut gs, (src, soff), (dst, doff), blocks, rec)?;
        Ok(len)
    }

    /// FIDEDUPERANGE for one destination: share the range only if both hold
    /// the same bytes. At most `DEDUPE_MAX` bytes per call, as the VFS caps
    /// it: a longer request gets a short count (the caller goes on from
    /// there). Returns the status and the bytes deduped.
    pub fn dedupe_range(
        &self,
        src: u64,
        soff: u64,
        dst: u64,
        doff: u64,
        len: u64,
    ) -> FsResult<(DedupeStatus, u64)> {
        let (mut gs, len, blocks) = self.remap_begin(src, soff, dst, doff, len, true)?;
        if len == 0 {
            return Ok((DedupeStatus::Same, 0));
        }
        let (len, blocks) = if len > DEDUPE_MAX {
            (DEDUPE_MAX, DEDUPE_MAX / BS)
        } else {
            (len, blocks)
        };
        let share = match self.dedupe_compare(&gs[&src], soff, &gs[&dst], doff, len)? {
            None => return Ok((DedupeStatus::Differs, 0)),
            Some(share) => share,
        };
        if !share {
            // Holes against holes, or blocks both already map: nothing to share.
            return Ok((DedupeStatus::Same, len));
        }
        let rec = gs[&dst].rec.clone();
        self.remap_aligned(&mut gs, (src, soff), (dst, doff), blocks, rec)?;
        Ok((DedupeStatus::Same, len))
    }

    /// The common end of clone and dedupe: share `blocks` blocks of `src`
    /// from byte `soff` into `dst` at byte `doff` (both block-aligned by
    /// `remap_checks`), `rec` the destination's new inode.
    fn remap_aligned(
        &self,
        gs: &mut BTreeMap<u64, WGuard>,
        (src, soff): (u64, u64),
        (dst, doff): (u64, u64),
        blocks: u64,
        rec: InodeRec,
    ) -> FsResult<()> {
        let (sb, db) = (soff / BS, doff / BS);
        self.remap_locked(gs, src, sb, dst, db, blocks, rec, &[], None)
    }

    /// Compare `len` bytes of `a` at `aoff` with `b` at `boff` (both locked),
    /// reading only what must be read: a hole against a hole is equal
    /// unread, so is a block against itself, and a hole against data reads
    /// the data only; it stops at the first difference. None: they differ;
    /// Some(share): equal, and `share` says whether any block would be
    /// shared by remapping (false: only holes and blocks already shared).
    fn dedupe_compare(
        &self,
        a: &Inode,
        aoff: u64,
        b: &Inode,
        boff: u64,
        len: u64,
    ) -> FsResult<Option<bool>> {
        let (ab, bb, n) = (aoff / BS, boff / BS, len.div_ceil(BS));
        let (sa, sb) = (a.segments(ab, ab + n), b.segments(bb, bb + n));
        let (mut ia, mut ib, mut i) = (0usize, 0usize, 0u64);
        let mut share = false;
        while i < n {
            let (la, na, pa) = sa[ia];
            let (lb, nb, pb) = sb[ib];
            let (ra, rb) = (la + na - (ab + i), lb + nb - (bb + i));
            let run = ra.min(rb);
            let (pa_i, pb_i) = (pa.map(|p| p + (ab + i - la)), pb.map(|p| p + (bb + i - lb)));
            let same_block = matches!((pa_i, pb_i), (Some(x), Some(y)) if x == y);
            if !(same_block || (pa_i.is_none() && pb_i.is_none())) {
                share = true;
                let (from, to) = (i * BS, ((i + run) * BS).min(len));
                let mut o = from;
                while o < to {
                    // Nothing is changed yet: a caller that is gone may stop it.
                    super::stop::between_steps()?;
                    let k = (1u64 << 20).min(to - o) as usize;
                    let da = pa_i.map(|_| self.read_locked(a, aoff + o, k)).transpose()?;
                    let db = pb_i.map(|_| self.read_locked(b, boff + o, k)).transpose()?;
                    let equal = match (&da, &db) {
                        (Some(x), Some(y)) => x == y,
                        (Some(x), None) | (None, Some(x)) => x.iter().all(|c| *c == 0),
                        (None, None) => true,
                    };
                    if !equal {
                        return Ok(None);
                    }
                    o += k as u64;
                }
            }
            i += run;
            if i >= la + na - ab {
                ia += 1;
            }
            if i >= lb + nb - bb {
                ib += 1;
            }
        }
        Ok(Some(share))
    }

    /// copy_file_range(2): blocks that line up are shared, the rest copied.
    /// Returns the bytes copied (short at the source's EOF).
    pub fn copy_range(&self, src: u64, soff: u64, dst: u64, doff: u64, len: u64) -> FsResult<u64> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let (ssize, sdir) = {
            let a = self.getattr(src)?;
            (a.size, a.is_dir())
        };
        let dattr = self.getattr(dst)?;
        if sdir || dattr.is_dir() {
            return Err(FsError::IsDir);
        }
        if soff >= ssize || len == 0 {
            return Ok(0);
        }
        let len = len.min(ssize - soff);
        if doff.checked_add(len).is_none_or(|e| e > MAX_FILE_SIZE) {
            return Err(FsError::FileTooBig);
        }
        if src == dst && doff < soff + len && soff < doff + len {
            return Err(FsError::Invalid);
        }
        if soff % BS != doff % BS {
            // Nothing lines up: a plain copy.
            return self.copy_bytes(src, soff, dst, doff, len);
        }
        self.copy_range_remap(src, soff, dst, doff, len)?;
        Ok(len)
    }

    /// copy_file_range with congruent offsets, as one transaction (for up to
    /// REMAP_BATCH source extents): whole blocks are shared; a partial head or
    /// tail block becomes a fresh block holding the destination's old bytes
    /// overlaid with the source's; a tail that ends at both EOFs is shared.
    fn copy_range_remap(&self, src: u64, soff: u64, dst: u64, doff: u64, len: u64) -> FsResult<()> {
        let mut gs = self.lock_many(&[src, dst])?;
        gs[&dst].not_immutable()?;
        let ssize = gs[&src].rec.size;
        if soff >= ssize {
            return Ok(());
        }
        self.break_layouts(&gs[&src], 0, u64::MAX)?;
        self.break_layouts(&gs[&dst], 0, u64::MAX)?;
        let send = soff + len;
        let dend = doff + len;
        // Source byte offset -> destination (x + doff >= soff: the offsets are
        // congruent and x is at or after the start of soff's block).
        let shift = |x: u64| x + doff - soff;
        // Source blocks touched, and the whole ones among them [mb, me_b).
        let (first_blk, last_blk) = (soff / BS, (send - 1) / BS);
        let mb = soff.div_ceil(BS);
        let mut me_b = send / BS;
        let tail_at_eof = send == ssize && dend >= gs[&dst].rec.size && !send.is_multiple_of(BS);
        if tail_at_eof && last_blk >= mb {
            me_b = last_blk + 1;
        }
        let me_b = me_b.max(mb);
        // Partial blocks: (destination block, source byte range).
        let edges: Vec<(u64, u64, u64)> = [first_blk, last_blk]
            .into_iter()
            .filter(|b| *b < mb || *b >= me_b)
            .collect::<std::collections::BTreeSet<u64>>()
            .into_iter()
            .map(|b| (shift(b * BS) / BS, soff.max(b * BS), send.min((b + 1) * BS)))
            .collect();
        let (ms, me) = (mb * BS, me_b * BS);
        if dend > gs[&dst].rec.size {
            self.prepare_extend(
                gs.get_mut(&dst).expect("locked"),
                shift(first_blk * BS).max(doff / BS * BS),
            )?;
        }
        let mut fresh = Vec::new();
        for (dl, a, b) in edges {
            let mut content = self.read_locked(&gs[&dst], dl * BS, BS as usize)?;
            content.resize(BS as usize, 0);
            let bytes = self.read_locked(&gs[&src], a, (b - a) as usize)?;
            let at = (shift(a) - dl * BS) as usize;
            content[at..at + bytes.len()].copy_from_slice(&bytes);
            fresh.push((dl, content));
        }
        let t = now();
        let mut rec = gs[&dst].rec.clone();
        rec.size = rec.size.max(dend);
        rec.mtime = t;
        rec.ctime = t;
        let blocks = (me - ms) / BS;
        self.remap_locked(
            &mut gs,
            src,
            ms / BS,
            dst,
            shift(ms) / BS,
            blocks,
            rec,
            &fresh,
            None,
        )
    }

    /// Copy bytes through read + write, a chunk at a time.
    fn copy_bytes(&self, src: u64, soff: u64, dst: u64, doff: u64, len: u64) -> FsResult<u64> {
        let chunk = 1u64 << 20;
        let mut done = 0u64;
        while done < len {
            // A caller that is gone gets the short count of what is copied.
            if done > 0 && super::stop::between_steps().is_err() {
                break;
            }
            let n = chunk.min(len - done) as usize;
            let d = self.read(src, soff + done, n)?;
            if d.is_empty() {
                break;
            }
            match self.write(dst, doff + done, &d, false) {
                Ok(w) => done += w as u64,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
            if d.len() < n {
                break;
            }
        }
        Ok(done)
    }

    /// Give `len` bytes at `off` (0 = to EOF) private copies of every shared block.
    pub fn unshare(&self, ino: u64, off: u64, len: u64) -> FsResult<()> {
        let mut g = self.lock_data_change(ino)?;
        let end = if len == 0 {
            g.rec.size.max(off)
        } else {
            off.saturating_add(len)
        };
        let end = end.min(MAX_FILE_SIZE);
        if end <= off {
            return Ok(());
        }
        self.unshare_steps(&mut g, off, end)?;
        // The unshare's change time, once, after its chunks.
        let mut rec = g.rec.clone();
        rec.ctime = now();
        let mut ctx = self.ctx()?;
        ctx.put_inode(g.ino, &rec);
        ctx.commit()?;
        g.rec = rec;
        Ok(())
    }
}
