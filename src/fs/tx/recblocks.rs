//! The record blocks in DRAM: for each block its kind, chain neighbours and
//! slots in use, and the free slots of each kind. A transaction that frees
//! the last used slot of a block also unlinks the block from its chain and
//! frees it in the bitmap ([`Records::release_plan`], used by `Ctx::commit`),
//! so record blocks go back to free space when they empty.

use std::collections::{BTreeSet, HashMap};

use crate::format::{RecBlockHdr, RecKind, BLOCK_SIZE, NKINDS, REC_HDR};

/// One record block of a chain.
#[derive(Clone, Copy, Debug)]
struct Block {
    kind: RecKind,
    /// The next block of the chain (0: the end).
    next: u64,
    /// The block whose header points here (0: the roots block does).
    prev: u64,
    /// Slots holding a record, or taken by a transaction not yet committed.
    used: u32,
}

/// Free slots and chain heads of the record blocks.
pub struct Records {
    pub heads: [u64; NKINDS],
    /// Free slots of each kind (media offsets); the lowest is taken first,
    /// so records gather in the lowest blocks and the others can empty.
    free: [BTreeSet<u64>; NKINDS],
    blocks: HashMap<u64, Block>,
}

/// What releasing a set of emptied blocks writes: the new chain heads, the
/// headers of the blocks whose `next` changes, the blocks freed.
pub struct ReleasePlan {
    pub heads: [u64; NKINDS],
    pub headers: Vec<(u64, RecBlockHdr)>,
    pub released: Vec<u64>,
    /// DRAM links after the release: (block, next, prev).
    links: Vec<(u64, u64, u64)>,
}

fn slot_offsets(kind: RecKind, blk: u64) -> impl Iterator<Item = u64> {
    (0..kind.slots_per_block())
        .map(move |i| blk * BLOCK_SIZE + (REC_HDR + i * kind.slot_size()) as u64)
}

impl Records {
    pub fn new(heads: [u64; NKINDS]) -> Records {
        Records {
            heads,
            free: Default::default(),
            blocks: HashMap::new(),
        }
    }

    /// Mount: the blocks of the `kind` chain in chain order and the free
    /// slots found in them.
    pub fn load_chain(&mut self, kind: RecKind, order: &[u64], free: &[u64]) {
        let mut prev = 0;
        for (i, &blk) in order.iter().enumerate() {
            self.blocks.insert(
                blk,
                Block {
                    kind,
                    next: order.get(i + 1).copied().unwrap_or(0),
                    prev,
                    used: kind.slots_per_block() as u32,
                },
            );
            prev = blk;
        }
        for &off in free {
            if let Some(b) = self.blocks.get_mut(&(off / BLOCK_SIZE)) {
                b.used -= 1;
            }
            self.free[kind.index()].insert(off);
        }
    }

    /// Record blocks of every kind.
    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Used slots of record block `blk` (None: not a record block).
    pub fn used(&self, blk: u64) -> Option<u32> {
        self.blocks.get(&blk).map(|b| b.used)
    }

    /// Free slots of `kind`.
    pub fn free_len(&self, kind: RecKind) -> usize {
        self.free[kind.index()].len()
    }

    /// Take the lowest free slot of `kind`.
    pub fn take(&mut self, kind: RecKind) -> Option<u64> {
        let off = self.free[kind.index()].pop_first()?;
        if let Some(b) = self.blocks.get_mut(&(off / BLOCK_SIZE)) {
            b.used += 1;
        }
        Some(off)
    }

    /// A slot taken or holding a record is free again (a `take` undone, or
    /// a freed record committed).
    pub fn put_free(&mut self, kind: RecKind, off: u64) {
        if self.free[kind.index()].insert(off) {
            if let Some(b) = self.blocks.get_mut(&(off / BLOCK_SIZE)) {
                b.used = b.used.saturating_sub(1);
            }
        }
    }

    /// A new, zeroed block becomes the head of the `kind` chain.
    pub fn add_block(&mut self, kind: RecKind, blk: u64) {
        let old = self.heads[kind.index()];
        if let Some(b) = self.blocks.get_mut(&old) {
            b.prev = blk;
        }
        self.blocks.insert(
            blk,
            Block {
                kind,
                next: old,
                prev: 0,
                used: 0,
            },
        );
        self.heads[kind.index()] = blk;
        self.free[kind.index()].extend(slot_offsets(kind, blk));
    }

    /// Undo `add_block` (its slots are all free again by then).
    pub fn drop_new_block(&mut self, kind: RecKind, blk: u64, old_head: u64) {
        self.forget(kind, blk);
        self.heads[kind.index()] = old_head;
        if let Some(b) = self.blocks.get_mut(&old_head) {
            b.prev = 0;
        }
    }

    fn forget(&mut self, kind: RecKind, blk: u64) {
        self.blocks.remove(&blk);
        let lo = blk * BLOCK_SIZE;
        let fl = &mut self.free[kind.index()];
        let gone: Vec<u64> = fl.range(lo..lo + BLOCK_SIZE).copied().collect();
        for o in gone {
            fl.remove(&o);
        }
    }

    /// The blocks that freeing `freed` (slots freed by one transaction, not
    /// yet returned) leaves without a used slot.
    pub fn emptied(&self, freed: &[(RecKind, u64)]) -> Vec<u64> {
        let mut per: HashMap<u64, u32> = HashMap::new();
        let mut seen = BTreeSet::new();
        for (_, off) in freed {
            if seen.insert(*off) {
                *per.entry(off / BLOCK_SIZE).or_default() += 1;
            }
        }
        let mut out: Vec<u64> = per
            .into_iter()
            .filter(|(blk, n)| self.blocks.get(blk).is_some_and(|b| b.used == *n))
            .map(|(blk, _)| blk)
            .collect();
        out.sort_unstable();
        out
    }

    /// Every block with no used slot (mount releases them).
    pub fn empty_blocks(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.used == 0)
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    /// Unlink `blocks` from their chains: DRAM is not changed until
    /// [`Records::apply_release`] (after the commit).
    pub fn release_plan(&self, blocks: &[u64]) -> ReleasePlan {
        let mut heads = self.heads;
        let mut links: HashMap<u64, (u64, u64)> = HashMap::new();
        let link = |links: &HashMap<u64, (u64, u64)>, b: u64| {
            links
                .get(&b)
                .copied()
                .or_else(|| self.blocks.get(&b).map(|x| (x.next, x.prev)))
        };
        let mut released = Vec::new();
        let mut gone = BTreeSet::new();
        for &blk in blocks {
            let (Some(info), Some((next, prev))) = (self.blocks.get(&blk), link(&links, blk))
            else {
                continue;
            };
            if prev == 0 {
                heads[info.kind.index()] = next;
            } else if let Some((_, pp)) = link(&links, prev) {
                links.insert(prev, (next, pp));
            }
            if next != 0 {
                if let Some((nn, _)) = link(&links, next) {
                    links.insert(next, (nn, prev));
                }
            }
            gone.insert(blk);
            released.push(blk);
        }
        let mut headers = Vec::new();
        let mut out_links = Vec::new();
        for (b, (next, prev)) in links {
            if gone.contains(&b) {
                continue;
            }
            out_links.push((b, next, prev));
            let old = self.blocks.get(&b);
            if let Some(o) = old.filter(|o| o.next != next) {
                headers.push((b, RecBlockHdr { kind: o.kind, next }));
            }
        }
        headers.sort_by_key(|h| h.0);
        ReleasePlan {
            heads,
            headers,
            released,
            links: out_links,
        }
    }

    /// The release committed: forget the blocks and their free slots.
    pub fn apply_release(&mut self, plan: &ReleasePlan) {
        for &blk in &plan.released {
            if let Some(b) = self.blocks.get(&blk) {
                let kind = b.kind;
                self.forget(kind, blk);
            }
        }
        for &(b, next, prev) in &plan.links {
            if let Some(x) = self.blocks.get_mut(&b) {
                x.next = next;
                x.prev = prev;
            }
        }
        self.heads = plan.heads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(r: &Records, kind: RecKind) -> Vec<u64> {
        let mut v = Vec::new();
        let mut b = r.heads[kind.index()];
        while b != 0 {
            v.push(b);
            b = r.blocks[&b].next;
        }
        v
    }

    #[test]
    fn release_unlinks_head_middle_and_tail() {
        let k = RecKind::Extent;
        let mut r = Records::new([0; NKINDS]);
        for b in [10, 11, 12, 13, 14] {
            r.add_block(k, b);
        }
        assert_eq!(chain(&r, k), vec![14, 13, 12, 11, 10]);
        for set in [vec![14u64], vec![12, 11], vec![10]] {
            let p = r.release_plan(&set);
            r.apply_release(&p);
        }
        assert_eq!(chain(&r, k), vec![13]);
        assert_eq!(r.blocks[&13].prev, 0);
        assert_eq!(r.free_len(k), k.slots_per_block());
        let p = r.release_plan(&[13]);
        assert_eq!(p.heads[k.index()], 0);
        r.apply_release(&p);
        assert_eq!(r.block_count(), 0);
        assert_eq!(r.free_len(k), 0);
    }

    #[test]
    fn emptied_counts_used_slots() {
        let k = RecKind::Dirent;
        let mut r = Records::new([0; NKINDS]);
        r.add_block(k, 7);
        let a = r.take(k).unwrap();
        let b = r.take(k).unwrap();
        assert_eq!(r.emptied(&[(k, a)]), Vec::<u64>::new());
        assert_eq!(r.emptied(&[(k, a), (k, b), (k, a)]), vec![7]);
        let p = r.release_plan(&[7]);
        assert_eq!(p.headers.len(), 0);
        assert_eq!(p.released, vec![7]);
    }
}
