//! Free space of the data area: the on-media allocation bitmap and its DRAM copy.
//!
//! Bit `i` of the bitmap covers block `data_start + i`. Each bitmap block holds
//! 4088 bytes of bits and a crc32 of them. The DRAM copy is authoritative for
//! allocation decisions: a block is marked in DRAM when reserved (before the
//! transaction commits) and cleared in DRAM only after the transaction that
//! frees it has committed, so a block is never handed out twice.

#![forbid(unsafe_code)]

use crate::format::{self, Superblock, BITMAP_BYTES, BITS_PER_BITMAP_BLOCK, BLOCK_SIZE};
use crate::journal::Tx;
use crate::media::{Media, MediaError};

pub struct Space {
    data_start: u64,
    nblocks: u64,
    bitmap_start: u64,
    bitmap_blocks: u64,
    /// Bits of the first `init` bitmap blocks (the rest of the data area is free).
    bits: Vec<u64>,
    /// Free blocks under each of the first `init` bitmap blocks: the search
    /// skips a full one without reading its bits.
    counts: Vec<u32>,
    free: u64,
    cursor: u64,
    /// Bitmap blocks held in DRAM: the media's mark, or more once allocation
    /// needed them (the next commit raises the mark).
    init: u64,
    /// The initialized bitmap blocks the media's roots block names.
    media_init: u64,
    /// Bitmap blocks in DRAM that are not yet written all-free on media.
    unwritten: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("bitmap block {index}: {err}")]
    Format {
        index: u64,
        err: format::FormatError,
    },
    #[error("media: {0}")]
    Media(#[from] MediaError),
}

/// Write bitmap block `blk` (absolute) all-free with its crc, persisted.
fn write_free_block(media: &Media, blk: u64) -> Result<(), MediaError> {
    let mut b = vec![0u8; format::BS];
    let c = format::bitmap_crc(&b);
    b[BITMAP_BYTES..BITMAP_BYTES + 4].copy_from_slice(&c.to_le_bytes());
    media.write_persist(blk * BLOCK_SIZE, &b)
}

impl Space {
    /// Write the first `init` bitmap blocks all-free (mkfs; the roots block's
    /// mark says how many are initialized).
    pub fn format(media: &Media, sb: &Superblock, init: u64) -> Result<(), MediaError> {
        for i in 0..init.min(sb.bitmap_blocks) {
            write_free_block(media, sb.bitmap_start + i)?;
        }
        Ok(())
    }

    /// Load and verify the first `init` bitmap blocks (the roots block's mark,
    /// checked against the geometry by the caller); the rest is free.
    pub fn load(media: &Media, sb: &Superblock, init: u64) -> Result<Space, SpaceError> {
        let init = init.min(sb.bitmap_blocks);
        let mut sp = Space {
            data_start: sb.data_start,
            nblocks: sb.data_blocks(),
            bitmap_start: sb.bitmap_start,
            bitmap_blocks: sb.bitmap_blocks,
            bits: Vec::new(),
            counts: Vec::new(),
            free: sb.data_blocks(),
            cursor: 0,
            init: 0,
            media_init: init,
            unwritten: Vec::new(),
        };
        for i in 0..init {
            let blk = media.read_vec((sb.bitmap_start + i) * BLOCK_SIZE, format::BS)?;
            format::bitmap_check(&blk).map_err(|err| SpaceError::Format { index: i, err })?;
            sp.cover_one();
            let first = i * BITS_PER_BITMAP_BLOCK;
            for (j, byte) in blk[..BITMAP_BYTES].iter().enumerate() {
                if *byte == 0 {
                    continue;
                }
                for b in 0..8 {
                    let bit = first + j as u64 * 8 + b;
                    if byte & (1 << b) != 0 && bit < sp.nblocks {
                        sp.set_dram(bit, true);
                    }
                }
            }
        }
        Ok(sp)
    }

    /// Data blocks the DRAM bits cover.
    fn covered(&self) -> u64 {
        (self.init * BITS_PER_BITMAP_BLOCK).min(self.nblocks)
    }

    /// Take one more bitmap block into DRAM (all free).
    fn cover_one(&mut self) -> bool {
        if self.init >= self.bitmap_blocks {
            return false;
        }
        let first = self.covered();
        self.init += 1;
        let end = self.covered();
        self.bits.resize(end.div_ceil(64) as usize, 0);
        self.counts.push((end - first) as u32);
        true
    }

    /// Cover one more bitmap block for allocation: it is written all-free on
    /// media before any transaction stores into it (`tx_set`, `materialize`).
    fn grow(&mut self) -> bool {
        if !self.cover_one() {
            return false;
        }
        if self.init > self.media_init {
            self.unwritten.push(self.init - 1);
        }
        true
    }

    /// Bitmap blocks in DRAM (the mark the next commit records).
    pub fn init_blocks(&self) -> u64 {
        self.init
    }

    /// The mark the media holds.
    pub fn media_init(&self) -> u64 {
        self.media_init
    }

    /// Write every bitmap block DRAM covers beyond the media's mark all-free
    /// (before a transaction raises the mark to `init_blocks`).
    pub fn materialize(&mut self, media: &Media) -> Result<(), MediaError> {
        for k in std::mem::take(&mut self.unwritten) {
            write_free_block(media, self.bitmap_start + k)?;
        }
        Ok(())
    }

    /// A transaction recording `init_blocks` as the mark committed.
    pub fn mark_committed(&mut self, init: u64) {
        self.media_init = self.media_init.max(init);
    }

    pub fn free_blocks(&self) -> u64 {
        self.free
    }

    pub fn data_blocks(&self) -> u64 {
        self.nblocks
    }

    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    fn bit(&self, i: u64) -> bool {
        i < self.covered() && self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    pub fn is_used(&self, phys: u64) -> bool {
        if phys < self.data_start || phys >= self.data_start + self.nblocks {
            return true;
        }
        self.bit(phys - self.data_start)
    }

    fn set_dram(&mut self, i: u64, used: bool) {
        let w = &mut self.bits[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        let k = (i / BITS_PER_BITMAP_BLOCK) as usize;
        if used {
            debug_assert!(*w & m == 0, "double allocation of data block {i}");
            if *w & m == 0 {
                self.free -= 1;
                self.counts[k] -= 1;
            }
            *w |= m;
        } else {
            if *w & m != 0 {
                self.free += 1;
                self.counts[k] += 1;
            }
            *w &= !m;
        }
    }

    /// The first free covered block at or after `from` and before `to`,
    /// skipping full bitmap blocks and full words.
    fn next_free(&self, from: u64, to: u64) -> Option<u64> {
        let mut i = from;
        while i < to {
            let k = i / BITS_PER_BITMAP_BLOCK;
            if self.counts[k as usize] == 0 {
                i = (k + 1) * BITS_PER_BITMAP_BLOCK;
                continue;
            }
            let w = self.bits[(i / 64) as usize] | ((1u64 << (i % 64)) - 1);
            if w == u64::MAX {
                i = (i / 64 + 1) * 64;
                continue;
            }
            let j = (i / 64) * 64 + (!w).trailing_zeros() as u64;
            return (j < to).then_some(j);
        }
        None
    }

    /// Length of the free run at `i`, at most `want`, within the covered blocks.
    fn run_at(&self, i: u64, want: u64) -> u64 {
        let n = self.covered();
        let mut len = 0u64;
        while len < want && i + len < n && !self.bit(i + len) {
            len += 1;
        }
        len
    }

    /// Find one free run of up to `want` blocks, preferring `goal` (else the
    /// next-fit cursor), and reserve it in DRAM. Only when the covered bitmap
    /// blocks are full is another one taken in.
    pub fn reserve(&mut self, want: u64, goal: Option<u64>) -> Option<(u64, u64)> {
        if want == 0 || self.free == 0 {
            return None;
        }
        let n = self.covered();
        let start = goal
            .filter(|g| *g >= self.data_start && *g < self.data_start + n)
            .map(|g| g - self.data_start)
            .unwrap_or(self.cursor)
            .min(n);
        let found = self
            .next_free(start, n)
            .or_else(|| self.next_free(0, start))
            .or_else(|| {
                let old = self.covered();
                while self.grow() {
                    if let Some(i) = self.next_free(old, self.covered()) {
                        return Some(i);
                    }
                }
                None
            })?;
        let len = self.run_at(found, want);
        for j in found..found + len {
            self.set_dram(j, true);
        }
        self.cursor = found + len;
        Some((self.data_start + found, len))
    }

    /// The first `k` free blocks in the order `reserve` without a goal scans
    /// them (from the cursor to the end of the initialized bitmap, then past
    /// it, then from the start): the head of the free list.
    pub fn free_head(&self, k: usize) -> Vec<u64> {
        let n = self.covered();
        let start = self.cursor.min(n);
        let mut out = Vec::new();
        let mut i = start;
        while out.len() < k {
            let Some(f) = self.next_free(i, n) else { break };
            out.push(self.data_start + f);
            i = f + 1;
        }
        // Past the initialized bitmap blocks everything is free.
        let mut j = n;
        while out.len() < k && j < self.nblocks {
            out.push(self.data_start + j);
            j += 1;
        }
        let mut i = 0;
        while out.len() < k {
            let Some(f) = self.next_free(i, start) else {
                break;
            };
            out.push(self.data_start + f);
            i = f + 1;
        }
        out
    }

    /// Reserve one run of exactly `want` contiguous blocks, or nothing.
    pub fn reserve_contiguous(&mut self, want: u64) -> Option<u64> {
        if want == 0 || want > self.free {
            return None;
        }
        let mut from = 0u64;
        loop {
            let n = self.covered();
            let mut i = from;
            while let Some(f) = self.next_free(i, n) {
                let len = self.run_at(f, want);
                if len == want {
                    for j in f..f + want {
                        self.set_dram(j, true);
                    }
                    return Some(self.data_start + f);
                }
                i = f + len + 1;
            }
            // A run may start in the covered tail and go on into the next block.
            from = n.saturating_sub(want);
            if !self.grow() {
                return None;
            }
        }
    }

    /// Reserve `want` blocks in as few runs as possible, or nothing (ENOSPC).
    pub fn reserve_many(&mut self, want: u64, goal: Option<u64>) -> Option<Vec<(u64, u64)>> {
        if want > self.free {
            return None;
        }
        let mut runs = Vec::new();
        let mut left = want;
        let mut g = goal;
        while left > 0 {
            match self.reserve(left, g) {
                Some((p, l)) => {
                    runs.push((p, l));
                    left -= l;
                    g = Some(p + l);
                }
                None => {
                    for (p, l) in runs {
                        self.unreserve(p, l);
                    }
                    return None;
                }
            }
        }
        Some(runs)
    }

    /// Undo a reservation that was never committed, or forget blocks whose free committed.
    pub fn unreserve(&mut self, phys: u64, len: u64) {
        let n = self.covered();
        for p in phys..phys + len {
            if p >= self.data_start && p < self.data_start + n {
                self.set_dram(p - self.data_start, false);
                // Reuse freed space first (it is also what makes a freed-while-
                // pinned block come straight back in the legacy page model).
                self.cursor = self.cursor.min(p - self.data_start);
            }
        }
    }

    /// Mark blocks used in DRAM (mount-time rebuild and fsck).
    pub fn mark_dram(&mut self, phys: u64, len: u64) {
        for p in phys..phys + len {
            if p >= self.data_start && p < self.data_start + self.nblocks {
                let i = p - self.data_start;
                while i >= self.covered() && self.grow() {}
                if !self.bit(i) {
                    self.set_dram(i, true);
                }
            }
        }
    }

    /// Queue the on-media bitmap update for `phys..phys+len` into `tx`.
    pub fn tx_set(
        &mut self,
        media: &Media,
        tx: &mut Tx,
        phys: u64,
        len: u64,
        used: bool,
    ) -> Result<(), MediaError> {
        let mut p = phys;
        let end = phys + len;
        while p < end {
            let i = p - self.data_start;
            let bblk = i / BITS_PER_BITMAP_BLOCK;
            if let Some(at) = self.unwritten.iter().position(|k| *k == bblk) {
                write_free_block(media, self.bitmap_start + bblk)?;
                self.unwritten.swap_remove(at);
            }
            let first = bblk * BITS_PER_BITMAP_BLOCK;
            let last = (first + BITS_PER_BITMAP_BLOCK).min(end - self.data_start);
            let boff = (self.bitmap_start + bblk) * BLOCK_SIZE;
            let mut blk = tx.read_vec(media, boff, format::BS)?;
            let (lo, hi) = (
                ((i - first) / 8) as usize,
                ((last - 1 - first) / 8) as usize,
            );
            for b in i..last {
                let k = b - first;
                let byte = &mut blk[(k / 8) as usize];
                if used {
                    *byte |= 1 << (k % 8);
                } else {
                    *byte &= !(1 << (k % 8));
                }
            }
            let c = format::bitmap_crc(&blk);
            tx.write(boff + lo as u64, &blk[lo..=hi]);
            tx.write(boff + BITMAP_BYTES as u64, &c.to_le_bytes());
            p = self.data_start + last;
        }
        Ok(())
    }

    /// Every used run (for fsck comparisons).
    /// The free runs of physical blocks `from..to` (clipped to the data
    /// area), as (first, end) pairs in order: bounded work for callers
    /// that walk the bitmap a window at a time.
    pub fn free_runs_in(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let ds = self.data_start;
        let lo = from.max(ds) - ds;
        let hi = to.min(ds + self.data_blocks()).saturating_sub(ds);
        let covered = self.covered();
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut i = lo;
        while i < hi {
            // Blocks past the initialized bitmap are free.
            if i >= covered || !self.bit(i) {
                let s = i;
                while i < hi && (i >= covered || !self.bit(i)) {
                    i += 1;
                }
                out.push((ds + s, ds + i));
            } else {
                i += 1;
            }
        }
        out
    }

    pub fn used_runs(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let n = self.covered();
        let mut i = 0;
        while i < n {
            if self.bit(i) {
                let s = i;
                while i < n && self.bit(i) {
                    i += 1;
                }
                out.push((self.data_start + s, i - s));
            } else {
                i += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup(blocks: u64) -> (Media, Superblock) {
        let m = Media::anonymous(blocks * BLOCK_SIZE).unwrap();
        let sb = Superblock {
            version: format::FORMAT_VERSION,
            incompat: 0,
            compat: 0,
            ro_compat: 0,
            uuid: [0; 16],
            label: String::new(),
            total_blocks: blocks,
            journal_start: 3,
            journal_blocks: 16,
            inode_start: 19,
            inode_count: 16,
            bitmap_start: 20,
            bitmap_blocks: 2,
            data_start: 22,
            roots_block: 2,
            generation: 1,
            clean: true,
            mkfs_time: 0,
            mount_count: 0,
        };
        Space::format(&m, &sb, 1).unwrap();
        (m, sb)
    }

    proptest! {
        #[test]
        fn bitmap_persists_what_dram_says(ops in prop::collection::vec((1u64..50, any::<bool>()), 1..40)) {
            let (m, sb) = setup(40000);
            let mut sp = Space::load(&m, &sb, 1).unwrap();
            let mut held: Vec<(u64, u64)> = Vec::new();
            for (n, free_one) in ops {
                if free_one && !held.is_empty() {
                    let (p, l) = held.remove(0);
                    let mut tx = Tx::new();
                    sp.tx_set(&m, &mut tx, p, l, false).unwrap();
                    for (o, d) in tx.entries() { m.write_at(o, d).unwrap(); }
                    sp.unreserve(p, l);
                } else if let Some(runs) = sp.reserve_many(n, None) {
                    let mut tx = Tx::new();
                    for (p, l) in &runs { sp.tx_set(&m, &mut tx, *p, *l, true).unwrap(); }
                    for (o, d) in tx.entries() { m.write_at(o, d).unwrap(); }
                    held.extend(runs);
                }
                sp.materialize(&m).unwrap();
                let again = Space::load(&m, &sb, sp.init_blocks()).unwrap();
                prop_assert_eq!(again.free_blocks(), sp.free_blocks());
                prop_assert_eq!(again.used_runs(), sp.used_runs());
            }
            // No block is held twice.
            let mut all: Vec<u64> = held.iter().flat_map(|(p, l)| *p..*p + *l).collect();
            let n = all.len();
            all.sort();
            all.dedup();
            prop_assert_eq!(all.len(), n);
        }
    }

    #[test]
    fn free_runs_in_windows_are_the_complement_of_the_used_runs() {
        let (m, sb) = setup(40000);
        let mut sp = Space::load(&m, &sb, 1).unwrap();
        // Used runs with free gaps between them: take 300 blocks, give
        // back every other run of a few.
        let runs = sp.reserve_many(300, None).unwrap();
        let mut tx = Tx::new();
        for (p, l) in &runs {
            sp.tx_set(&m, &mut tx, *p, *l, true).unwrap();
        }
        let (p0, _) = runs[0];
        for k in [5u64, 40, 41, 42, 100, 250] {
            sp.unreserve(p0 + k, 1);
        }
        sp.unreserve(p0 + 120, 30);
        let (ds, n) = (sp.data_start(), sp.data_blocks());
        let mut want = Vec::new();
        let mut at = ds;
        for (p, l) in sp.used_runs() {
            if p > at {
                want.push((at, p));
            }
            at = p + l;
        }
        if ds + n > at {
            want.push((at, ds + n));
        }
        assert!(want.len() > 2, "{want:?}");
        for window in [1u64, 7, 64, 1000, 1 << 20] {
            let mut got: Vec<(u64, u64)> = Vec::new();
            let mut w = 0;
            while w < ds + n {
                for (s, e) in sp.free_runs_in(w, w + window) {
                    match got.last_mut() {
                        Some(last) if last.1 == s => last.1 = e,
                        _ => got.push((s, e)),
                    }
                }
                w += window;
            }
            assert_eq!(got, want, "window {window}");
        }
    }

    #[test]
    fn enospc_reserves_nothing() {
        let (m, sb) = setup(100);
        let mut sp = Space::load(&m, &sb, 1).unwrap();
        let total = sp.free_blocks();
        assert!(sp.reserve_many(total + 1, None).is_none());
        assert_eq!(sp.free_blocks(), total);
        assert!(sp.reserve_many(total, None).is_some());
        assert_eq!(sp.free_blocks(), 0);
        assert!(sp.free_head(4).is_empty());
    }

    #[test]
    fn free_head_is_what_reserve_hands_out_next() {
        let (m, sb) = setup(100);
        let mut sp = Space::load(&m, &sb, 1).unwrap();
        let (a, _) = sp.reserve(3, None).unwrap();
        sp.unreserve(a + 1, 1);
        let head = sp.free_head(3);
        assert_eq!(head, vec![a + 1, a + 3, a + 4]);
        for want in head {
            assert_eq!(sp.reserve(1, None), Some((want, 1)));
        }
    }

    #[test]
    fn grows_into_the_next_bitmap_block_only_when_full() {
        let (m, sb) = setup(40000);
        // Garbage where the second bitmap block would be: never read until initialized.
        m.fill(21 * BLOCK_SIZE, BLOCK_SIZE, 0xa5).unwrap();
        let mut sp = Space::load(&m, &sb, 1).unwrap();
        let total = sp.free_blocks();
        assert_eq!(total, 40000 - 22);
        let runs = sp.reserve_many(BITS_PER_BITMAP_BLOCK - 1, None).unwrap();
        assert_eq!(sp.init_blocks(), 1);
        assert_eq!(
            sp.reserve_contiguous(2).map(|p| p - 22),
            Some(BITS_PER_BITMAP_BLOCK - 1)
        );
        assert_eq!(sp.init_blocks(), 2);
        let mut tx = Tx::new();
        for (p, l) in &runs {
            sp.tx_set(&m, &mut tx, *p, *l, true).unwrap();
        }
        sp.tx_set(&m, &mut tx, 22 + BITS_PER_BITMAP_BLOCK - 1, 2, true)
            .unwrap();
        for (o, d) in tx.entries() {
            m.write_at(o, d).unwrap();
        }
        sp.materialize(&m).unwrap();
        let again = Space::load(&m, &sb, 2).unwrap();
        assert_eq!(again.free_blocks(), sp.free_blocks());
        assert_eq!(again.used_runs(), vec![(22, BITS_PER_BITMAP_BLOCK + 1)]);
    }
}
