//! Free space of the data area: the on-media allocation bitmap and its DRAM copy.
//!
//! Bit `i` of the bitmap covers block `data_start + i`. Each bitmap block holds
//! 4088 bytes of bits and a crc32 of them. The DRAM copy is authoritative for
//! allocation decisions: a block is marked in DRAM when reserved (before the
//! transaction commits) and cleared in DRAM only after the transaction that
//! frees it has committed, so a block is never handed out twice.

use crate::format::{self, Superblock, BITMAP_BYTES, BITS_PER_BITMAP_BLOCK, BLOCK_SIZE};
use crate::journal::Tx;
use crate::media::{Media, MediaError};

pub struct Space {
    data_start: u64,
    nblocks: u64,
    bitmap_start: u64,
    bits: Vec<u64>,
    free: u64,
    cursor: u64,
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

impl Space {
    /// Write an all-free bitmap (mkfs).
    pub fn format(media: &Media, sb: &Superblock) -> Result<(), MediaError> {
        let mut blk = vec![0u8; format::BS];
        let c = format::bitmap_crc(&blk);
        blk[BITMAP_BYTES..BITMAP_BYTES + 4].copy_from_slice(&c.to_le_bytes());
        for i in 0..sb.bitmap_blocks {
            let off = (sb.bitmap_start + i) * BLOCK_SIZE;
            media.write_at(off, &blk)?;
        }
        media.persist(sb.bitmap_start * BLOCK_SIZE, sb.bitmap_blocks * BLOCK_SIZE)
    }

    /// Load and verify the bitmap.
    pub fn load(media: &Media, sb: &Superblock) -> Result<Space, SpaceError> {
        let nblocks = sb.data_blocks();
        let mut bits = vec![0u64; nblocks.div_ceil(64) as usize];
        let mut free = nblocks;
        for i in 0..sb.bitmap_blocks {
            let blk = media.read_vec((sb.bitmap_start + i) * BLOCK_SIZE, format::BS)?;
            format::bitmap_check(&blk).map_err(|err| SpaceError::Format { index: i, err })?;
            let first = i * BITS_PER_BITMAP_BLOCK;
            for (j, byte) in blk[..BITMAP_BYTES].iter().enumerate() {
                if *byte == 0 {
                    continue;
                }
                for b in 0..8 {
                    let bit = first + j as u64 * 8 + b;
                    if byte & (1 << b) != 0 && bit < nblocks {
                        bits[(bit / 64) as usize] |= 1 << (bit % 64);
                        free -= 1;
                    }
                }
            }
        }
        Ok(Space {
            data_start: sb.data_start,
            nblocks,
            bitmap_start: sb.bitmap_start,
            bits,
            free,
            cursor: 0,
        })
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

    pub fn is_used(&self, phys: u64) -> bool {
        if phys < self.data_start || phys >= self.data_start + self.nblocks {
            return true;
        }
        let i = phys - self.data_start;
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set_dram(&mut self, i: u64, used: bool) {
        let w = &mut self.bits[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        if used {
            debug_assert!(*w & m == 0, "double allocation of data block {i}");
            if *w & m == 0 {
                self.free -= 1;
            }
            *w |= m;
        } else {
            if *w & m != 0 {
                self.free += 1;
            }
            *w &= !m;
        }
    }

    /// Find one free run of up to `want` blocks, preferring `goal`, and reserve it in DRAM.
    pub fn reserve(&mut self, want: u64, goal: Option<u64>) -> Option<(u64, u64)> {
        if want == 0 || self.free == 0 {
            return None;
        }
        let n = self.nblocks;
        let start = goal
            .filter(|g| *g >= self.data_start && *g < self.data_start + n)
            .map(|g| g - self.data_start)
            .unwrap_or(self.cursor);
        // Scan from start, wrapping once, word by word.
        let mut i = start;
        let mut scanned = 0u64;
        while scanned < n {
            if i >= n {
                i = 0;
            }
            let w = self.bits[(i / 64) as usize];
            if w == u64::MAX && i.is_multiple_of(64) {
                scanned += 64;
                i += 64;
                continue;
            }
            if w & (1 << (i % 64)) == 0 {
                // Extend the run.
                let mut len = 0u64;
                while len < want && i + len < n {
                    let j = i + len;
                    if self.bits[(j / 64) as usize] & (1 << (j % 64)) != 0 {
                        break;
                    }
                    len += 1;
                }
                for j in i..i + len {
                    self.set_dram(j, true);
                }
                self.cursor = i + len;
                return Some((self.data_start + i, len));
            }
            i += 1;
            scanned += 1;
        }
        None
    }

    /// The first `k` free blocks in the order `reserve` without a goal scans
    /// them (from the cursor, wrapping once): the head of the free list.
    pub fn next_free(&self, k: usize) -> Vec<u64> {
        let n = self.nblocks;
        let mut out = Vec::new();
        let mut i = self.cursor.min(n);
        let mut scanned = 0u64;
        while scanned < n && out.len() < k {
            if i >= n {
                i = 0;
            }
            if self.bits[(i / 64) as usize] & (1 << (i % 64)) == 0 {
                out.push(self.data_start + i);
            }
            i += 1;
            scanned += 1;
        }
        out
    }

    /// Reserve one run of exactly `want` contiguous blocks, or nothing.
    pub fn reserve_contiguous(&mut self, want: u64) -> Option<u64> {
        if want == 0 || want > self.free {
            return None;
        }
        let n = self.nblocks;
        let used = |bits: &[u64], j: u64| bits[(j / 64) as usize] & (1 << (j % 64)) != 0;
        let mut i = 0u64;
        while i + want <= n {
            if used(&self.bits, i) {
                i += 1;
                continue;
            }
            let mut len = 0;
            while len < want && !used(&self.bits, i + len) {
                len += 1;
            }
            if len == want {
                for j in i..i + want {
                    self.set_dram(j, true);
                }
                return Some(self.data_start + i);
            }
            i += len + 1;
        }
        None
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
        for p in phys..phys + len {
            if p >= self.data_start && p < self.data_start + self.nblocks {
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
                if self.bits[(i / 64) as usize] & (1 << (i % 64)) == 0 {
                    self.set_dram(i, true);
                }
            }
        }
    }

    /// Queue the on-media bitmap update for `phys..phys+len` into `tx`.
    pub fn tx_set(
        &self,
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
    pub fn used_runs(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.nblocks {
            if self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0 {
                let s = i;
                while i < self.nblocks && self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0 {
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
            version: 1,
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
        Space::format(&m, &sb).unwrap();
        (m, sb)
    }

    proptest! {
        #[test]
        fn bitmap_persists_what_dram_says(ops in prop::collection::vec((1u64..50, any::<bool>()), 1..40)) {
            let (m, sb) = setup(40000);
            let mut sp = Space::load(&m, &sb).unwrap();
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
                let again = Space::load(&m, &sb).unwrap();
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
    fn enospc_reserves_nothing() {
        let (m, sb) = setup(100);
        let mut sp = Space::load(&m, &sb).unwrap();
        let total = sp.free_blocks();
        assert!(sp.reserve_many(total + 1, None).is_none());
        assert_eq!(sp.free_blocks(), total);
        assert!(sp.reserve_many(total, None).is_some());
        assert_eq!(sp.free_blocks(), 0);
        assert!(sp.next_free(4).is_empty());
    }

    #[test]
    fn next_free_is_what_reserve_hands_out_next() {
        let (m, sb) = setup(100);
        let mut sp = Space::load(&m, &sb).unwrap();
        let (a, _) = sp.reserve(3, None).unwrap();
        sp.unreserve(a + 1, 1);
        let head = sp.next_free(3);
        assert_eq!(head, vec![a + 1, a + 3, a + 4]);
        for want in head {
            assert_eq!(sp.reserve(1, None), Some((want, 1)));
        }
    }
}
