//! The DRAM indexes that grow with extents, packed: an inode's extent map
//! (logical block -> [`Ext`]) and the reverse map (physical block -> owners),
//! each entry 24 bytes in a [`Chunked`] map.
//!
//! Field widths: a logical block is below 2^34 (the largest file) and is kept
//! in 40 bits, an inode number is below 2^40 (the geometry's limit), a
//! physical block below 2^52 (the media's bytes / 4096) is kept in 56 bits,
//! an extent's length fits a record's 32 bits. Mount's rules reject records
//! outside these (`src/check/ranges.rs`), so every extent in DRAM fits.

use super::chunked::{AugTree, Chunked, Entry};
use crate::fs::Ext;

const L40: u64 = (1 << 40) - 1;
const P56: u64 = (1 << 56) - 1;

fn check(what: &str, v: u64, max: u64) {
    assert!(v <= max, "{what} {v} does not fit the DRAM extent index");
}

/// One extent of an inode: logical (40 bits) and the length's low 24 bits;
/// phys (56 bits) and the length's high 8; the record's media offset.
#[derive(Clone, Copy)]
struct PExt {
    w0: u64,
    w1: u64,
    slot: u64,
}

impl PExt {
    fn new(l: u64, e: Ext) -> PExt {
        check("logical block", l, L40);
        check("physical block", e.phys, P56);
        check("extent length", e.len, u32::MAX as u64);
        PExt {
            w0: l | ((e.len & 0xFF_FFFF) << 40),
            w1: e.phys | ((e.len >> 24) << 56),
            slot: e.slot,
        }
    }
    fn logical(&self) -> u64 {
        self.w0 & L40
    }
    fn ext(&self) -> Ext {
        Ext {
            phys: self.w1 & P56,
            len: (self.w0 >> 40) | ((self.w1 >> 56) << 24),
            slot: self.slot,
        }
    }
    fn pair(&self) -> (u64, Ext) {
        (self.logical(), self.ext())
    }
}

impl Entry for PExt {
    type Key = u64;
    fn key(&self) -> u64 {
        self.logical()
    }
}

/// An inode's extents by first logical block (non-overlapping).
#[derive(Clone, Default)]
pub struct ExtentMap(Chunked<PExt>);

impl ExtentMap {
    pub fn new() -> ExtentMap {
        ExtentMap::default()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Rebuild the map in key order, so that every chunk but the last is
    /// full (mount, after loading extents in chain order).
    pub fn compact(&mut self) {
        let _ = self.0.compact();
    }

    /// Put the extent starting at `l`, returning the one it replaced.
    pub fn insert(&mut self, l: u64, e: Ext) -> Option<Ext> {
        self.0.insert(PExt::new(l, e)).0.map(|p| p.ext())
    }
    pub fn remove(&mut self, l: u64) -> Option<Ext> {
        self.0.remove(l).map(|(p, _)| p.ext())
    }
    /// The extent starting at `l`.
    pub fn get(&self, l: u64) -> Option<Ext> {
        self.0.get(l).map(|p| p.ext())
    }
    /// The extent starting last at or before `l`.
    pub fn last_at_or_below(&self, l: u64) -> Option<(u64, Ext)> {
        self.0.last_at_or_below(l).map(|p| p.pair())
    }
    /// Every extent in logical order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Ext)> + '_ {
        self.0.iter().map(|p| p.pair())
    }
    /// The extents starting in `[first, end)`, in order.
    pub fn range(&self, first: u64, end: u64) -> impl Iterator<Item = (u64, Ext)> + '_ {
        self.0
            .iter_from(first)
            .map(|p| p.pair())
            .take_while(move |(l, _)| *l < end)
    }
    /// The start of an extent overlapping `[start, start + len)`, if any (the
    /// rule of `check::overlapping`).
    pub fn overlapping(&self, start: u64, len: u64) -> Option<u64> {
        let end = start.saturating_add(len);
        let (s, e) = self.last_at_or_below(end.checked_sub(1)?)?;
        (s.saturating_add(e.len) > start).then_some(s)
    }
}

impl PartialEq for ExtentMap {
    fn eq(&self, o: &ExtentMap) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl std::fmt::Debug for ExtentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One reverse-map entry: `len` blocks from `phys` are mapped by inode
/// `ino` from logical block `logical`. phys (56 bits) and the length's low
/// 8 bits; ino (40 bits) and the length's high 24; logical.
#[derive(Clone, Copy, PartialEq, Eq)]
struct REnt {
    w0: u64,
    w1: u64,
    logical: u64,
}

impl REnt {
    fn new(phys: u64, ino: u64, logical: u64, len: u64) -> REnt {
        check("physical block", phys, P56);
        check("inode", ino, L40);
        check("extent length", len, u32::MAX as u64);
        REnt {
            w0: phys | ((len & 0xFF) << 56),
            w1: ino | ((len >> 8) << 40),
            logical,
        }
    }
    fn phys(&self) -> u64 {
        self.w0 & P56
    }
    fn ino(&self) -> u64 {
        self.w1 & L40
    }
    fn len(&self) -> u64 {
        (self.w0 >> 56) | ((self.w1 >> 40) << 8)
    }
}

impl Entry for REnt {
    type Key = (u64, u64, u64);
    fn key(&self) -> (u64, u64, u64) {
        (self.phys(), self.ino(), self.logical)
    }
    const AUG: bool = true;
    /// The block past the entry's end.
    fn aug(&self) -> u64 {
        self.phys() + self.len()
    }
}

/// The reverse map, (physical start, inode, logical start) -> length: who
/// maps a block (XFS's rmapbt, in DRAM only). A query for one block visits,
/// through the chunks' largest end, only chunks holding an entry that
/// reaches it: O(log n) plus its owners.
#[derive(Clone, Default)]
pub struct RMap {
    map: Chunked<REnt>,
    tree: AugTree,
}

impl RMap {
    pub fn new() -> RMap {
        RMap::default()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn insert(&mut self, phys: u64, ino: u64, logical: u64, len: u64) {
        let (_, t) = self.map.insert(REnt::new(phys, ino, logical, len));
        self.tree.touch(&self.map, t);
    }
    pub fn remove(&mut self, phys: u64, ino: u64, logical: u64) {
        if let Some((_, t)) = self.map.remove((phys, ino, logical)) {
            self.tree.touch(&self.map, t);
        }
    }
    /// Every (inode, file page) that maps block `b`, sorted.
    pub fn owners_of(&self, b: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        self.tree
            .visit_above(&self.map, (b, u64::MAX, u64::MAX), b, |e| {
                v.push((e.ino(), e.logical + (b - e.phys())))
            });
        v.sort_unstable();
        v
    }
    /// Every entry: (phys, ino, logical, len), in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, u64, u64)> + '_ {
        self.map
            .iter()
            .map(|e| (e.phys(), e.ino(), e.logical, e.len()))
    }
}

impl PartialEq for RMap {
    fn eq(&self, o: &RMap) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl std::fmt::Debug for RMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_at_the_limits() {
        let e = Ext {
            phys: P56,
            len: u32::MAX as u64,
            slot: u64::MAX,
        };
        let mut m = ExtentMap::new();
        m.insert(L40, e);
        m.insert(
            3,
            Ext {
                phys: 7,
                len: 1,
                slot: 64,
            },
        );
        assert_eq!(m.get(L40), Some(e));
        assert_eq!(
            m.last_at_or_below(100),
            Some((
                3,
                Ext {
                    phys: 7,
                    len: 1,
                    slot: 64
                }
            ))
        );
        assert_eq!(m.overlapping(0, 3), None);
        assert_eq!(m.overlapping(0, 4), Some(3));
        let mut r = RMap::new();
        r.insert(P56 - 5, L40, L40, u32::MAX as u64);
        r.insert(10, 2, 0, 4);
        r.insert(12, 3, 8, 1);
        assert_eq!(r.iter().next(), Some((10, 2, 0, 4)));
        assert_eq!(r.owners_of(12), vec![(2, 2), (3, 8)]);
        assert_eq!(r.owners_of(14), vec![]);
        assert_eq!(r.owners_of(P56), vec![(L40, L40 + 5)]);
        r.remove(10, 2, 0);
        assert_eq!(r.owners_of(12), vec![(3, 8)]);
    }
}
