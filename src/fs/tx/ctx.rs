//! Metadata transactions: the state serialized by the meta lock (allocator,
//! record-slot free lists, free inodes, journal) and [`Ctx`], which builds one
//! journaled transaction and undoes its DRAM reservations if it is dropped
//! before commit.

use std::collections::BTreeMap;

use parking_lot::MutexGuard;

use crate::error::{FsError, FsResult};
use crate::format::OrphanRec;
use crate::format::{
    self, InodeRec, RecBlockHdr, RecKind, RefcountRec, Roots, Superblock, BLOCK_SIZE,
};
use crate::journal::{Journal, Tx};
use crate::media::Media;
use crate::pages::{PageModel, Pages};
use crate::space::Space;

pub use super::recblocks::Records;

/// Free inode numbers: a bit per initialized inode slot (set = free) and a
/// search cursor. Slots past `init` are free and never read; `grow` takes
/// the next chunk in once the initialized ones are used up.
pub struct InoMap {
    bits: Vec<u64>,
    count: u64,
    free: u64,
    cursor: u64,
    /// Slots `1 ..= init` are covered (the mark the next commit records).
    init: u64,
    /// The mark the media's roots block holds.
    media_init: u64,
}

impl InoMap {
    /// `count` inode slots, the first `init` of them initialized on media
    /// (the caller inserts the free ones).
    pub fn new(count: u64, init: u64) -> InoMap {
        let init = init.min(count);
        InoMap {
            bits: vec![0; init.div_ceil(64) as usize],
            count,
            free: 0,
            cursor: 0,
            init,
            media_init: init,
        }
    }
    fn idx(ino: u64) -> (usize, u64) {
        (((ino - 1) / 64) as usize, 1u64 << ((ino - 1) % 64))
    }
    pub fn insert(&mut self, ino: u64) {
        if ino == 0 || ino > self.init {
            return;
        }
        let (w, m) = Self::idx(ino);
        if self.bits[w] & m == 0 {
            self.bits[w] |= m;
            self.free += 1;
        }
    }
    /// Free initialized slots.
    pub fn len(&self) -> u64 {
        self.free
    }
    pub fn is_empty(&self) -> bool {
        self.free == 0
    }
    /// Free slots, the uninitialized ones included (statfs).
    pub fn free_total(&self) -> u64 {
        self.free + (self.count - self.init)
    }
    pub fn init(&self) -> u64 {
        self.init
    }
    pub fn media_init(&self) -> u64 {
        self.media_init
    }
    pub fn mark_committed(&mut self, init: u64) {
        self.media_init = self.media_init.max(init);
    }
    /// The slots the next chunk adds (`init+1 ..= new`), or None when the
    /// table is fully initialized.
    pub fn next_chunk(&self) -> Option<(u64, u64)> {
        (self.init < self.count).then(|| {
            (
                self.init + 1,
                format::Roots::next_inode_init(self.init, self.count),
            )
        })
    }
    /// Cover slots up to `new` (zeroed on media by the caller), all free.
    pub fn grow(&mut self, new: u64) {
        let new = new.min(self.count);
        if new <= self.init {
            return;
        }
        let old = self.init;
        self.init = new;
        self.bits.resize(new.div_ceil(64) as usize, 0);
        for ino in old + 1..=new {
            self.insert(ino);
        }
        self.cursor = old;
    }
    /// Take the first free inode at or after the cursor (wrapping).
    pub fn take(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let words = self.bits.len();
        let start = (self.cursor / 64) as usize;
        for k in 0..=words {
            let w = (start + k) % words;
            if self.bits[w] != 0 {
                let b = self.bits[w].trailing_zeros() as u64;
                let ino = w as u64 * 64 + b + 1;
                if ino > self.init {
                    continue;
                }
                self.bits[w] &= !(1 << b);
                self.free -= 1;
                self.cursor = ino - 1;
                return Some(ino);
            }
        }
        None
    }
}

/// A shared range of physical blocks in DRAM (mirrors one refcount record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub len: u64,
    pub count: u32,
    /// Media offset of its record.
    pub slot: u64,
}

pub struct Meta {
    /// Shared ranges keyed by first physical block; non-overlapping, count >= 2.
    pub refs: BTreeMap<u64, Ref>,
    pub space: Space,
    pub rec: Records,
    pub journal: Journal,
    pub free_inos: InoMap,
    /// Set when a commit failed half-way: every later change is refused.
    pub broken: bool,
    /// Blocks only operations that free space may take (`Ctx::freeing`): a
    /// full filesystem can always unlink, rmdir, truncate and punch, whose
    /// orphan and refcount records need room (ext4's reserved blocks).
    pub reserved: u64,
}

impl Meta {
    /// The roots block as DRAM says it: chain heads and initialization marks.
    pub fn roots(&self) -> Roots {
        Roots {
            heads: self.rec.heads,
            inode_init: self.free_inos.init(),
            bitmap_init: self.space.init_blocks(),
        }
    }

    /// Does the media's roots block lag DRAM's initialization marks?
    fn marks_raised(&self) -> bool {
        self.free_inos.init() != self.free_inos.media_init()
            || self.space.init_blocks() != self.space.media_init()
    }

    /// Data blocks for an ordinary operation (reserved in DRAM; the caller
    /// frees them if it fails): ENOSPC where they would eat into the reserve.
    pub fn reserve_data(&mut self, n: u64, goal: Option<u64>) -> FsResult<Vec<(u64, u64)>> {
        if self.space.free_blocks() < n.saturating_add(self.reserved) {
            return Err(FsError::NoSpace);
        }
        self.space.reserve_many(n, goal).ok_or(FsError::NoSpace)
    }
}

/// The reserve for a data area of `blocks` blocks: 1%, at least 8, at most 2048.
pub fn reserve_for(blocks: u64) -> u64 {
    (blocks / 100).clamp(8, 2048)
}

enum Undo {
    RefRemoved(u64, Ref),
    RefInserted(u64),
    Reserve(u64, u64),
    Ino(u64),
    Slot(RecKind, u64),
    NewBlock {
        kind: RecKind,
        blk: u64,
        old_head: u64,
    },
}

pub struct Ctx<'a> {
    media: &'a Media,
    sb: &'a Superblock,
    pages: Option<&'a Pages>,
    /// Blocks whose free was deferred because they are pinned (proxy model).
    deferred: Vec<(u64, u64)>,
    pub m: MutexGuard<'a, Meta>,
    pub tx: Tx,
    undo: Vec<Undo>,
    free_slots: Vec<(RecKind, u64)>,
    free_blocks: Vec<(u64, u64)>,
    free_inos: Vec<u64>,
    /// Empty record blocks to release with this transaction (mount).
    release: Vec<u64>,
    done: bool,
    /// May take the reserved blocks (an operation that frees space).
    freeing: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        media: &'a Media,
        sb: &'a Superblock,
        m: MutexGuard<'a, Meta>,
        pages: Option<&'a Pages>,
    ) -> FsResult<Ctx<'a>> {
        if m.broken {
            return Err(FsError::ReadOnly);
        }
        Ok(Ctx {
            media,
            sb,
            pages,
            deferred: Vec::new(),
            m,
            tx: Tx::new(),
            undo: Vec::new(),
            free_slots: Vec::new(),
            free_blocks: Vec::new(),
            free_inos: Vec::new(),
            release: Vec::new(),
            done: false,
            freeing: false,
        })
    }

    /// Release these empty record blocks with this transaction (mount: the
    /// blocks an earlier daxlink, or a transaction without journal room,
    /// left empty).
    pub fn release_blocks(&mut self, blocks: Vec<u64>) {
        self.release = blocks;
    }

    /// This transaction belongs to an operation that frees space: it may use
    /// the reserved blocks.
    pub fn freeing(mut self) -> Self {
        self.freeing = true;
        self
    }

    /// ENOSPC unless `n` more blocks leave the reserve intact (or this is a
    /// freeing transaction).
    fn room(&self, n: u64) -> FsResult<()> {
        if !self.freeing && self.m.space.free_blocks() < n.saturating_add(self.m.reserved) {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    pub fn media(&self) -> &Media {
        self.media
    }

    pub fn put_inode(&mut self, ino: u64, rec: &InodeRec) {
        self.tx.write(self.sb.inode_offset(ino), &rec.encode());
    }

    pub fn alloc_ino(&mut self) -> FsResult<u64> {
        if self.m.free_inos.is_empty() {
            if let Some((first, last)) = self.m.free_inos.next_chunk() {
                // Initialize the next chunk of the inode table: zeroed
                // directly (past the media's mark nothing reads it), then the
                // commit of this transaction raises the mark.
                let off = self.sb.inode_offset(first);
                let len = (last - first + 1) * format::INODE_SIZE as u64;
                self.media.fill(off, len, 0)?;
                self.media.persist(off, len)?;
                self.m.free_inos.grow(last);
            }
        }
        let ino = self.m.free_inos.take().ok_or(FsError::NoSpace)?;
        self.undo.push(Undo::Ino(ino));
        Ok(ino)
    }

    /// Mark an inode free on media (keeping a bumped generation); reusable after commit.
    pub fn free_ino(&mut self, ino: u64, generation: u32) {
        let rec = InodeRec {
            generation: generation.wrapping_add(1),
            ..Default::default()
        };
        self.put_inode(ino, &rec);
        self.free_inos.push(ino);
    }

    /// Make sure `n` free slots of `kind` exist (allocating record blocks), so
    /// that later `slot_alloc` calls cannot fail.
    pub fn ensure_slots(&mut self, kind: RecKind, n: usize) -> FsResult<()> {
        while self.m.rec.free_len(kind) < n {
            self.room(1)?;
            let (blk, _) = self.m.space.reserve(1, None).ok_or(FsError::NoSpace)?;
            self.undo.push(Undo::Reserve(blk, 1));
            // The block is free space: zero it directly, then link it by journal.
            self.media.fill(blk * BLOCK_SIZE, BLOCK_SIZE, 0)?;
            self.media.persist(blk * BLOCK_SIZE, BLOCK_SIZE)?;
            let old_head = self.m.rec.heads[kind.index()];
            let hdr = RecBlockHdr {
                kind,
                next: old_head,
            };
            self.tx.write(blk * BLOCK_SIZE, &hdr.encode());
            let meta = &mut *self.m;
            meta.space
                .tx_set(self.media, &mut self.tx, blk, 1, true)
                .map_err(FsError::from)?;
            meta.rec.add_block(kind, blk);
            let roots = meta.roots();
            self.tx
                .write(self.sb.roots_block * BLOCK_SIZE, &roots.encode());
            self.undo.push(Undo::NewBlock {
                kind,
                blk,
                old_head,
            });
        }
        Ok(())
    }

    /// Take a free slot (call `ensure_slots` first when failure is not allowed).
    pub fn slot_alloc(&mut self, kind: RecKind) -> FsResult<u64> {
        self.ensure_slots(kind, 1)?;
        let off = self.m.rec.take(kind).expect("ensured");
        self.undo.push(Undo::Slot(kind, off));
        Ok(off)
    }

    pub fn slot_write(&mut self, off: u64, bytes: &[u8]) {
        self.tx.write(off, bytes);
    }

    /// Write the extent record of `ino` at `logical` that `e` describes
    /// (into `e.slot`) and return its DRAM change: `e` replaces whatever
    /// the map holds at `logical`, all of its blocks counted as newly mapped
    /// (an extent it rewrites is removed first, by `ExtOp::Remove`).
    pub(in crate::fs) fn write_extent(
        &mut self,
        ino: u64,
        logical: u64,
        e: crate::fs::Ext,
    ) -> crate::fs::ExtOp {
        let rec = format::ExtentRec {
            ino,
            logical,
            phys: e.phys,
            len: e.len as u32,
        };
        self.tx.write(e.slot, &rec.encode());
        crate::fs::ExtOp::Put(logical, e, e.len)
    }

    pub fn slot_free(&mut self, kind: RecKind, off: u64) {
        // Bug injection for the crash harness (off by default): a directory
        // entry removed in place, outside the journal, before the commit.
        if kind == RecKind::Dirent && self.m.journal.inject.dirent_in_place {
            let _ = self.media.write_persist(off, &vec![0u8; kind.slot_size()]);
        }
        self.tx.write(off, &vec![0u8; kind.slot_size()]);
        self.free_slots.push((kind, off));
    }

    /// Reserve data blocks in DRAM (undone if this context is dropped uncommitted).
    pub fn reserve(&mut self, n: u64, goal: Option<u64>) -> FsResult<Vec<(u64, u64)>> {
        self.room(n)?;
        let runs = self.m.space.reserve_many(n, goal).ok_or(FsError::NoSpace)?;
        for (p, l) in &runs {
            self.undo.push(Undo::Reserve(*p, *l));
        }
        Ok(runs)
    }

    fn check_range(&self, phys: u64, len: u64) -> FsResult<()> {
        match phys.checked_add(len) {
            Some(end) if phys >= self.sb.data_start && end <= self.sb.total_blocks => Ok(()),
            _ => Err(FsError::Corrupt(format!(
                "block range {phys}+{len} lies outside the data area"
            ))),
        }
    }

    /// Reserve one contiguous run of `n` blocks (undone if uncommitted).
    pub fn reserve_contiguous(&mut self, n: u64) -> FsResult<u64> {
        self.room(n)?;
        let p = self.m.space.reserve_contiguous(n).ok_or(FsError::NoSpace)?;
        self.undo.push(Undo::Reserve(p, n));
        Ok(p)
    }

    /// Reserve `n` contiguous blocks that outlive this transaction: the
    /// caller fills them outside `meta` and hands them to a later transaction
    /// with [`Ctx::adopt`], or gives them back (`Meta.space.unreserve`).
    pub fn reserve_detached(&mut self, n: u64) -> FsResult<u64> {
        self.room(n)?;
        self.m.space.reserve_contiguous(n).ok_or(FsError::NoSpace)
    }

    /// Blocks reserved by `reserve_detached` become this transaction's: given
    /// back if it does not commit.
    pub fn adopt(&mut self, p: u64, n: u64) {
        self.undo.push(Undo::Reserve(p, n));
    }

    /// Record blocks as used on media (they must be reserved in DRAM already).
    pub fn blocks_used(&mut self, phys: u64, len: u64) -> FsResult<()> {
        self.check_range(phys, len)?;
        let meta = &mut *self.m;
        meta.space
            .tx_set(self.media, &mut self.tx, phys, len, true)?;
        Ok(())
    }

    /// Free blocks on media; they become allocatable once the transaction
    /// commits. In the proxy page model a pinned block is not freed: an
    /// orphan record defers its free to the last unpin (or the next mount).
    pub fn blocks_free(&mut self, phys: u64, len: u64) -> FsResult<()> {
        self.check_range(phys, len)?;
        let pinned = match self.pages {
            Some(p) if p.model == PageModel::Proxy => p.pinned_in(phys, len),
            _ => Vec::new(),
        };
        if pinned.is_empty() {
            return self.free_run(phys, len);
        }
        let mut b = phys;
        while b < phys + len {
            if pinned.contains(&b) {
                let slot = self.slot_alloc(RecKind::Orphan)?;
                self.slot_write(slot, &OrphanRec::Blocks { phys: b, len: 1 }.encode());
                self.deferred.push((b, slot));
                b += 1;
            } else {
                let s = b;
                while b < phys + len && !pinned.contains(&b) {
                    b += 1;
                }
                self.free_run(s, b - s)?;
            }
        }
        Ok(())
    }

    fn free_run(&mut self, phys: u64, len: u64) -> FsResult<()> {
        let meta = &mut *self.m;
        meta.space
            .tx_set(self.media, &mut self.tx, phys, len, false)?;
        self.free_blocks.push((phys, len));
        Ok(())
    }

    /// Pieces of `[phys, phys+len)` with their reference counts (1 where no record).
    pub fn ref_pieces(&self, phys: u64, len: u64) -> Vec<(u64, u64, u32)> {
        ref_pieces(&self.m.refs, phys, len)
    }

    /// Reference count of one block (1 when it has no record).
    pub fn refcount(&self, phys: u64) -> u32 {
        ref_pieces(&self.m.refs, phys, 1)[0].2
    }

    /// One more reference to every block of the range.
    pub fn share(&mut self, phys: u64, len: u64) -> FsResult<()> {
        self.check_range(phys, len)?;
        self.adjust(phys, len, 1)
    }

    /// One reference fewer to every block of the range; blocks whose count
    /// reaches zero are freed (reusable after commit).
    pub fn drop_ref(&mut self, phys: u64, len: u64) -> FsResult<()> {
        self.check_range(phys, len)?;
        self.adjust(phys, len, -1)
    }

    fn adjust(&mut self, phys: u64, len: u64, delta: i32) -> FsResult<()> {
        let end = phys + len;
        let pieces = self.ref_pieces(phys, len);
        // Existing records overlapping the range, including parts outside it.
        let mut old: Vec<(u64, Ref)> = Vec::new();
        if let Some((k, r)) = self.m.refs.range(..phys).next_back() {
            if k + r.len > phys {
                old.push((*k, *r));
            }
        }
        old.extend(self.m.refs.range(phys..end).map(|(k, r)| (*k, *r)));
        // Fast path: nothing shared, releasing: just free.
        if old.is_empty() && delta < 0 {
            return self.blocks_free(phys, len);
        }
        self.ensure_slots(RecKind::Refcount, pieces.len() + 2)?;
        let mut new_recs: Vec<RefcountRec> = Vec::new();
        for (k, r) in &old {
            if *k < phys {
                new_recs.push(RefcountRec {
                    phys: *k,
                    len: phys - k,
                    count: r.count,
                });
            }
            if k + r.len > end {
                new_recs.push(RefcountRec {
                    phys: end,
                    len: k + r.len - end,
                    count: r.count,
                });
            }
        }
        let mut to_free = Vec::new();
        for (p, l, c) in pieces {
            let n = c as i64 + delta as i64;
            if n >= 2 {
                new_recs.push(RefcountRec {
                    phys: p,
                    len: l,
                    count: n as u32,
                });
            } else if n <= 0 {
                to_free.push((p, l));
            }
        }
        for (k, r) in old {
            self.m.refs.remove(&k);
            self.undo.push(Undo::RefRemoved(k, r));
            self.slot_free(RecKind::Refcount, r.slot);
        }
        for rec in new_recs {
            let slot = self.slot_alloc(RecKind::Refcount)?;
            self.slot_write(slot, &rec.encode());
            self.m.refs.insert(
                rec.phys,
                Ref {
                    len: rec.len,
                    count: rec.count,
                    slot,
                },
            );
            self.undo.push(Undo::RefInserted(rec.phys));
        }
        for (p, l) in to_free {
            self.blocks_free(p, l)?;
        }
        Ok(())
    }

    /// Bytes this transaction takes in the journal so far.
    pub fn tx_size(&self) -> usize {
        self.tx.encoded_size()
    }

    /// Bytes one transaction may take: the journal's transaction area.
    pub fn capacity(&self) -> usize {
        self.m.journal.capacity()
    }

    /// What the batch of a step may bring this transaction to: half the
    /// journal. The other half is kept for what a step adds around its batch
    /// (the inode, an orphan or intent record, a truncate's tail zeroing, an
    /// xattr blob's free), each a few KiB at most.
    pub fn step_budget(&self) -> usize {
        self.capacity() / 2
    }

    /// Bytes left for the batch of a step.
    pub fn step_room(&self) -> usize {
        self.step_budget().saturating_sub(self.tx_size())
    }

    /// At most the journal bytes `drop_ref(phys, len)` adds: refcount
    /// records rewritten (each piece's old record freed and its new one
    /// written, and the two parts of records that stick out of the range),
    /// bitmap bytes of the blocks freed, orphan records of pinned blocks.
    pub fn drop_cost(&self, phys: u64, len: u64) -> usize {
        let shared = self.m.refs.range(..phys.saturating_add(len)).next_back();
        let records = match shared {
            Some((k, r)) if k + r.len > phys || *k >= phys => {
                REC_COST * (2 * self.ref_pieces(phys, len).len() + 2)
            }
            _ => 0,
        };
        let pinned = match self.pages {
            Some(p) if p.model == PageModel::Proxy => p.pinned_in(phys, len).len(),
            _ => 0,
        };
        records + bitmap_cost(len) + pinned * REC_COST
    }

    /// At most the journal bytes `share(phys, len)` adds (refcount records).
    pub fn share_cost(&self, phys: u64, len: u64) -> usize {
        REC_COST * (2 * self.ref_pieces(phys, len).len() + 2)
    }

    /// Record blocks this transaction leaves without a record: unlinked from
    /// their chains and freed in the bitmap in this same transaction, when
    /// the journal has room for it (a block left empty is reused by later
    /// records, and the next mount releases it).
    fn release_emptied(
        &mut self,
        blocks: &[u64],
    ) -> FsResult<Option<super::recblocks::ReleasePlan>> {
        if blocks.is_empty() {
            return Ok(None);
        }
        // Each block: a header entry and its bitmap bytes; and the roots block.
        let cost =
            blocks.len() * (16 + format::REC_HDR + bitmap_cost(1)) + 16 + BLOCK_SIZE as usize / 32;
        if self.tx_size() + cost > self.capacity() {
            return Ok(None);
        }
        let plan = self.m.rec.release_plan(blocks);
        for (blk, hdr) in &plan.headers {
            self.tx.write(blk * BLOCK_SIZE, &hdr.encode());
        }
        if plan.heads != self.m.rec.heads {
            let roots = Roots {
                heads: plan.heads,
                ..self.m.roots()
            };
            self.tx
                .write(self.sb.roots_block * BLOCK_SIZE, &roots.encode());
        }
        for &blk in &plan.released {
            self.free_run(blk, 1)?;
        }
        Ok(Some(plan))
    }

    /// Commit atomically; on success the freed resources become reusable.
    /// A transaction the journal cannot hold is refused before anything is
    /// written (ENOSPC, reservations undone, the mount stays writable): the
    /// batched operations size their steps so that this never happens.
    pub fn commit(mut self) -> FsResult<()> {
        // Raised initialization marks go into this transaction, after the
        // bitmap blocks they take in are written all-free.
        let marks = if self.m.marks_raised() {
            self.m.space.materialize(self.media)?;
            let roots = self.m.roots();
            self.tx
                .write(self.sb.roots_block * BLOCK_SIZE, &roots.encode());
            Some(roots)
        } else {
            None
        };
        let mut emptied = self.m.rec.emptied(&self.free_slots);
        emptied.append(&mut self.release);
        // A block `ensure_slots` added that no record took after all (the
        // records went to free slots of older blocks) is not kept either.
        for u in &self.undo {
            if let Undo::NewBlock { blk, .. } = u {
                if self.m.rec.used(*blk) == Some(0) {
                    emptied.push(*blk);
                }
            }
        }
        emptied.sort_unstable();
        emptied.dedup();
        let release = self.release_emptied(&emptied)?;
        if self.tx_size() > self.capacity() {
            log::error!(
                "refusing a transaction of {} bytes: the journal holds {}",
                self.tx_size(),
                self.capacity()
            );
            return Err(FsError::NoSpace);
        }
        let r = {
            let meta = &mut *self.m;
            meta.journal.commit(self.media, &self.tx)
        };
        self.done = true;
        match r {
            Ok(()) => {
                let meta = &mut *self.m;
                if let Some(r) = marks {
                    meta.free_inos.mark_committed(r.inode_init);
                    meta.space.mark_committed(r.bitmap_init);
                }
                for (k, off) in self.free_slots.drain(..) {
                    meta.rec.put_free(k, off);
                }
                if let Some(plan) = release {
                    meta.rec.apply_release(&plan);
                }
                for (p, l) in self.free_blocks.drain(..) {
                    if let Some(pg) = self.pages {
                        pg.blocks_freed(p, l);
                    }
                    for b in p..p + l {
                        // A poisoned frame is retired: never handed out again (until remount).
                        if !self.pages.is_some_and(|pg| pg.is_poisoned(b)) {
                            meta.space.unreserve(b, 1);
                        }
                    }
                }
                if let Some(pg) = self.pages {
                    for (b, slot) in self.deferred.drain(..) {
                        pg.deferred(b, slot);
                    }
                }
                for ino in self.free_inos.drain(..) {
                    meta.free_inos.insert(ino);
                }
                Ok(())
            }
            Err(e) => {
                log::error!("metadata commit failed, refusing further changes: {e}");
                self.m.broken = true;
                Err(FsError::Io(e.to_string()))
            }
        }
    }
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let meta = &mut *self.m;
        for u in self.undo.drain(..).rev() {
            match u {
                Undo::RefRemoved(k, r) => {
                    meta.refs.insert(k, r);
                }
                Undo::RefInserted(k) => {
                    meta.refs.remove(&k);
                }
                Undo::Reserve(p, l) => meta.space.unreserve(p, l),
                Undo::Ino(i) => {
                    meta.free_inos.insert(i);
                }
                Undo::Slot(k, off) => meta.rec.put_free(k, off),
                Undo::NewBlock {
                    kind,
                    blk,
                    old_head,
                } => meta.rec.drop_new_block(kind, blk, old_head),
            }
        }
    }
}

/// Journal bytes of one record-slot store (a 16-byte entry header and a
/// 32-byte record), with room for the share of a new record block (header,
/// bitmap bit, roots) that a slot may need.
pub const REC_COST: usize = 64;

/// At most the journal bytes of changing `len` bitmap bits: the bytes, and
/// per bitmap block touched an entry header and the crc entry.
pub fn bitmap_cost(len: u64) -> usize {
    (len / 8) as usize + ((len / format::BITS_PER_BITMAP_BLOCK) as usize + 2) * 56
}

/// Pieces of `[phys, phys+len)` with their counts (1 where no record covers them).
pub fn ref_pieces(refs: &BTreeMap<u64, Ref>, phys: u64, len: u64) -> Vec<(u64, u64, u32)> {
    let end = phys + len;
    let mut out = Vec::new();
    let mut p = phys;
    let push = |out: &mut Vec<(u64, u64, u32)>, s: u64, e: u64, c: u32| {
        if e > s {
            out.push((s, e - s, c));
        }
    };
    if let Some((k, r)) = refs.range(..phys).next_back() {
        if k + r.len > phys {
            let e = (k + r.len).min(end);
            push(&mut out, p, e, r.count);
            p = e;
        }
    }
    for (k, r) in refs.range(p..end) {
        push(&mut out, p, *k, 1);
        let e = (k + r.len).min(end);
        push(&mut out, *k, e, r.count);
        p = e;
    }
    push(&mut out, p, end, 1);
    out
}
