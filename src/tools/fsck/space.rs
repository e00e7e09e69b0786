//! Space: the allocation bitmap (load, compare with what is in use, rebuild),
//! exclusive block claims (record blocks, xattr blobs, deferred-free ranges)
//! and the refcount records checked against the extents that share blocks.

use std::collections::BTreeMap;

use super::{Ck, BS, WORDS_PER_BITMAP_BLOCK};
use crate::check;
use crate::format::{self, RecKind, RefcountRec, BITMAP_BYTES, BITS_PER_BITMAP_BLOCK};

#[derive(Clone)]
pub(super) struct Bits {
    w: Vec<u64>,
    n: u64,
}

impl Bits {
    pub(super) fn new(n: u64) -> Bits {
        Bits {
            w: vec![0; n.div_ceil(64) as usize],
            n,
        }
    }
    pub(super) fn get(&self, i: u64) -> bool {
        i < self.n && self.w[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    pub(super) fn set(&mut self, i: u64, v: bool) {
        if i < self.n {
            let m = 1u64 << (i % 64);
            if v {
                self.w[(i / 64) as usize] |= m;
            } else {
                self.w[(i / 64) as usize] &= !m;
            }
        }
    }
    /// Set or clear bits [start, start+len) (clipped to the set).
    pub(super) fn range(&mut self, start: u64, len: u64, v: bool) {
        let end = start.saturating_add(len).min(self.n);
        let mut i = start;
        while i < end {
            if i.is_multiple_of(64) && end - i >= 64 {
                self.w[(i / 64) as usize] = if v { u64::MAX } else { 0 };
                i += 64;
            } else {
                self.set(i, v);
                i += 1;
            }
        }
    }
    pub(super) fn count(&self) -> u64 {
        self.w.iter().map(|w| w.count_ones() as u64).sum()
    }
}

/// Runs of set bits in `mask` words (bit index relative to the data area).
fn runs_of(words: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (wi, &w) in words.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            let b = w.trailing_zeros() as u64;
            w &= w - 1;
            let i = wi as u64 * 64 + b;
            match out.last_mut() {
                Some((s, l)) if *s + *l == i => *l += 1,
                _ => out.push((i, 1)),
            }
        }
    }
    out
}

pub(super) fn blocks_text(start: u64, len: u64) -> String {
    if len == 1 {
        format!("block {start}")
    } else {
        format!("blocks {start}-{} ({len})", start + len - 1)
    }
}

/// Piecewise reference counts of a set of block ranges: start -> (len, count),
/// count >= 1, adjacent pieces of equal count merged.
fn count_pieces(ranges: impl Iterator<Item = (u64, u64)>) -> BTreeMap<u64, (u64, u32)> {
    let mut ev: Vec<(u64, i64)> = Vec::new();
    for (p, l) in ranges {
        ev.push((p, 1));
        ev.push((p.saturating_add(l), -1));
    }
    ev.sort_unstable();
    let mut out: BTreeMap<u64, (u64, u32)> = BTreeMap::new();
    let mut last_piece: Option<u64> = None;
    let (mut cur, mut at) = (0i64, 0u64);
    for (x, d) in ev {
        if x > at && cur > 0 {
            let c = cur.min(u32::MAX as i64) as u32;
            match last_piece.and_then(|k| out.get_mut(&k).map(|v| (k, v))) {
                Some((k, v)) if k + v.0 == at && v.1 == c => v.0 += x - at,
                _ => {
                    out.insert(at, (x - at, c));
                    last_piece = Some(at);
                }
            }
        }
        cur += d;
        at = x;
    }
    out
}

/// Where the refcount records `recs` (start -> (len, count, slot)) disagree
/// with the counts `pieces`: (start, len, mapped, recorded) runs. A block
/// mapped twice or more needs a record with that count; others need none.
fn ref_mismatches(
    pieces: &BTreeMap<u64, (u64, u32)>,
    recs: &BTreeMap<u64, (u64, u32, u64)>,
) -> Vec<(u64, u64, u32, Option<u32>)> {
    let mut cuts: Vec<u64> = Vec::new();
    for (&p, &(l, c)) in pieces {
        if c >= 2 {
            cuts.push(p);
            cuts.push(p + l);
        }
    }
    for (&p, &(l, _, _)) in recs {
        cuts.push(p);
        cuts.push(p + l);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let want_at = |x: u64| {
        pieces
            .range(..=x)
            .next_back()
            .filter(|(k, v)| *k + v.0 > x)
            .map(|(_, v)| v.1)
            .unwrap_or(0)
    };
    let have_at = |x: u64| {
        recs.range(..=x)
            .next_back()
            .filter(|(k, v)| *k + v.0 > x)
            .map(|(_, v)| v.1)
    };
    let mut out: Vec<(u64, u64, u32, Option<u32>)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (want, have) = (want_at(a), have_at(a));
        let bad = if want >= 2 {
            have != Some(want)
        } else {
            have.is_some()
        };
        if !bad {
            continue;
        }
        match out.last_mut() {
            Some(l) if l.0 + l.1 == a && l.2 == want && l.3 == have => l.1 += b - a,
            _ => out.push((a, b - a, want, have)),
        }
    }
    out
}

/// Who holds a claimed block range exclusively (or, `AnExtent`, shares it).
#[derive(Clone, Copy, Debug)]
pub(super) enum Owner {
    Record(RecKind),
    Xattr(u64),
    Deferred,
    /// A record block fsck itself allocates (lost+found entries, refcounts).
    New,
    /// Some file extent (shared blocks are legal between extents).
    AnExtent,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Record(k) => write!(f, "the {k:?} record block"),
            Owner::Xattr(i) => write!(f, "the xattr blob of inode {i}"),
            Owner::Deferred => write!(f, "a deferred-free orphan record"),
            Owner::New => write!(f, "a new record block"),
            Owner::AnExtent => write!(f, "a file extent"),
        }
    }
}

impl Ck<'_> {
    // -- bitmap (load) ----------------------------------------------------

    pub(super) fn load_bitmap(&mut self) {
        let mut tail_set = 0u64;
        for k in 0..self.bitmap_init {
            let off = (self.sb.bitmap_start + k) * BS;
            let Some(blk) = self.rd(off, BS as usize) else {
                self.bm_bad[k as usize] = true;
                continue;
            };
            if self.marks_lost && blk.iter().all(|b| *b == 0) {
                // Never initialized (the roots block that says so is lost).
                continue;
            }
            if let Err(e) = format::bitmap_check(&blk) {
                self.bm_bad[k as usize] = true;
                self.out.add(
                    "bitmap-crc",
                    true,
                    format!(
                        "bitmap block {k} (block {}): {e}; rebuilt",
                        self.sb.bitmap_start + k
                    ),
                );
                continue;
            }
            let first = k * BITS_PER_BITMAP_BLOCK;
            for (j, &byte) in blk[..BITMAP_BYTES].iter().enumerate() {
                if byte == 0 {
                    continue;
                }
                for b in 0..8u64 {
                    if byte & (1 << b) != 0 {
                        let i = first + j as u64 * 8 + b;
                        if i < self.nblocks {
                            self.bm.set(i, true);
                        } else {
                            tail_set += 1;
                        }
                    }
                }
            }
        }
        if tail_set > 0 {
            self.out.add(
                "bitmap-tail",
                true,
                format!("{tail_set} bitmap bits past the last data block are set; cleared"),
            );
        }
    }

    pub(super) fn bitmap_ok(&self, blk: u64) -> Option<bool> {
        let i = blk.checked_sub(self.sb.data_start)?;
        let k = (i / BITS_PER_BITMAP_BLOCK) as usize;
        if i >= self.nblocks || self.bm_bad.get(k).copied().unwrap_or(true) {
            return None;
        }
        Some(self.bm.get(i))
    }

    // -- block claims -----------------------------------------------------

    /// The first block of [phys, phys+len) already in use, and by whom: an
    /// exclusive owner (record block, xattr blob, deferred range), or with
    /// `extents` also a file extent (extents may share blocks with each other).
    pub(super) fn conflict(&self, phys: u64, len: u64, extents: bool) -> Option<(u64, Owner)> {
        let end = phys + len;
        if let Some((&s, &(l, o))) = self.claims.range(..=phys).next_back() {
            if s + l > phys {
                return Some((phys, o));
            }
        }
        if let Some((&s, &(_, o))) = self.claims.range(phys..end).next() {
            return Some((s, o));
        }
        if extents {
            let ds = self.sb.data_start;
            for b in phys..end {
                if self.ext_bits.get(b - ds) {
                    return Some((b, Owner::AnExtent));
                }
            }
        }
        None
    }

    /// Claim [phys, phys+len) exclusively for `owner`, or name the first block
    /// already in use and by whom.
    pub(super) fn claim(&mut self, phys: u64, len: u64, owner: Owner) -> Result<(), (u64, Owner)> {
        if let Some(c) = self.conflict(phys, len, true) {
            return Err(c);
        }
        self.claims.insert(phys, (len, owner));
        Ok(())
    }

    pub(super) fn unclaim(&mut self, phys: u64, len: u64) {
        if self.in_data(phys, len) {
            self.released.push((phys, len));
        }
    }

    // -- reference counts -------------------------------------------------

    /// Validate the refcount records and compare them with the extents as found.
    pub(super) fn refcounts_check(&mut self) {
        let raw = std::mem::take(&mut self.refcounts_raw);
        for (slot, r) in raw {
            let what = format!(
                "refcount record at {slot:#x} ({} count {})",
                blocks_text(r.phys, r.len),
                r.count
            );
            let bad = check::refcount(&self.sb, &r, |p, n| {
                check::overlapping(&self.refcounts, p, n, |v| v.0)
            });
            if let Some(why) = bad {
                self.out
                    .add("refcount-bad", true, format!("{what} {why}; dropped"));
                self.refcounts_bad = true;
                self.zero(slot, format::REFCOUNT_SIZE);
                self.free_slots[RecKind::Refcount.index()].push(slot);
                continue;
            }
            self.refcounts.insert(r.phys, (r.len, r.count, slot));
        }
        let found = count_pieces(self.ext_refs.iter().copied());
        for (p, l, want, have) in ref_mismatches(&found, &self.refcounts) {
            let have = match have {
                Some(c) => format!("a refcount of {c}"),
                None => "no refcount record".to_string(),
            };
            self.out.add(
                "refcount-wrong",
                true,
                format!(
                    "{} mapped {want} times but with {have}; corrected",
                    blocks_text(p, l)
                ),
            );
        }
    }

    /// Make the refcount records describe the repaired extents exactly.
    pub(super) fn refcounts_final(&mut self) {
        let fin = count_pieces(
            self.inodes
                .values()
                .filter(|i| !i.reclaim)
                .flat_map(|i| i.extents.values().map(|e| (e.phys, e.len))),
        );
        if !self.refcounts_bad && ref_mismatches(&fin, &self.refcounts).is_empty() {
            return;
        }
        let old: Vec<u64> = self.refcounts.values().map(|v| v.2).collect();
        for slot in old {
            self.zero(slot, format::REFCOUNT_SIZE);
            self.free_slots[RecKind::Refcount.index()].push(slot);
        }
        for (&p, &(l, c)) in fin.iter().filter(|(_, v)| v.1 >= 2) {
            let Some(slot) = self.alloc_slot(RecKind::Refcount) else {
                self.out.add(
                    "refcount-wrong",
                    false,
                    "no space for refcount records".to_string(),
                );
                return;
            };
            let r = RefcountRec {
                phys: p,
                len: l,
                count: c,
            };
            self.fix.write(slot, &r.encode());
        }
    }

    // -- bitmap (compare and rebuild) -------------------------------------

    fn rel_bits(&self, ranges: &[(u64, u64)]) -> Bits {
        let mut b = Bits::new(self.nblocks);
        for &(p, l) in ranges {
            if let Some(s) = p.checked_sub(self.sb.data_start) {
                b.range(s, l, true);
            }
        }
        b
    }

    pub(super) fn bitmap(&mut self) {
        let ds = self.sb.data_start;
        // In use as found: exclusive owners and every accepted extent.
        let mut used = self.ext_bits.clone();
        // In use after the repair: record blocks, xattr blobs of surviving
        // inodes, extents of surviving inodes (deferred ranges are freed).
        let mut fin = Bits::new(self.nblocks);
        for (&p, &(l, o)) in &self.claims {
            let s = p - ds;
            if !matches!(o, Owner::New) {
                used.range(s, l, true);
            }
            let keep = match o {
                Owner::Record(_) | Owner::New => true,
                Owner::Xattr(ino) => self
                    .live(ino)
                    .is_some_and(|i| i.xattr_claimed && i.rec.xattr_block == p),
                Owner::Deferred | Owner::AnExtent => false,
            };
            if keep {
                fin.range(s, l, true);
            }
        }
        for i in self.inodes.values().filter(|i| !i.reclaim) {
            for e in i.extents.values() {
                fin.range(e.phys - ds, e.len, true);
            }
        }
        let released = self.rel_bits(&self.released);
        let nw = used.w.len();
        let mut unmarked = vec![0u64; nw];
        let mut leaked = vec![0u64; nw];
        for w in 0..nw {
            if self
                .bm_bad
                .get(w / WORDS_PER_BITMAP_BLOCK)
                .copied()
                .unwrap_or(true)
            {
                continue;
            }
            unmarked[w] = used.w[w] & !self.bm.w[w];
            leaked[w] = self.bm.w[w] & !used.w[w] & !released.w[w];
        }
        for (s, l) in runs_of(&unmarked) {
            self.out.add(
                "block-unmarked",
                true,
                format!(
                    "{} used but marked free; marked used",
                    blocks_text(ds + s, l)
                ),
            );
        }
        for (s, l) in runs_of(&leaked) {
            self.out.add(
                "block-leaked",
                true,
                format!(
                    "{} marked used but referenced by nothing (leaked); freed",
                    blocks_text(ds + s, l)
                ),
            );
        }
        // The bitmap mark covers every block in use after the repair (a
        // rebuilt roots block: exactly those).
        let top = (0..fin.w.len())
            .rev()
            .find(|w| fin.w[*w] != 0)
            .map(|w| {
                (w as u64 * 64 + 63 - fin.w[w].leading_zeros() as u64) / BITS_PER_BITMAP_BLOCK + 1
            })
            .unwrap_or(1);
        let mark = if self.marks_lost {
            top.min(self.sb.bitmap_blocks)
        } else {
            top.max(self.bitmap_init)
        };
        if mark != self.roots.bitmap_init {
            if !self.marks_lost {
                self.out.add(
                    "bitmap-mark",
                    true,
                    format!(
                        "blocks in use lie past the bitmap mark {}; raised to {mark}",
                        self.bitmap_init
                    ),
                );
            }
            self.roots.bitmap_init = mark;
            self.roots_dirty = true;
        }
        // Rewrite every bitmap block that differs from the repaired state.
        for k in 0..mark {
            let off = (self.sb.bitmap_start + k) * BS;
            let mut blk = vec![0u8; BS as usize];
            let first = k * BITS_PER_BITMAP_BLOCK;
            for (j, byte) in blk[..BITMAP_BYTES].iter_mut().enumerate() {
                for b in 0..8u64 {
                    if fin.get(first + j as u64 * 8 + b) {
                        *byte |= 1 << b;
                    }
                }
            }
            let c = format::bitmap_crc(&blk);
            blk[BITMAP_BYTES..BITMAP_BYTES + 4].copy_from_slice(&c.to_le_bytes());
            let cur = self.rd(off, BS as usize - 4);
            if k >= self.bitmap_init || cur.as_deref() != Some(&blk[..BS as usize - 4]) {
                self.fix.write(off, &blk);
            }
        }
        self.used_now = used.count();
    }
}
