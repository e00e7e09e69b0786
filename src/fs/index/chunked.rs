//! A compact sorted map for the DRAM indexes that grow with the number of
//! extents or directory entries: a B+-tree of depth two, a sorted `Vec` of
//! chunks each holding a sorted `Vec` of at most [`MAX`] entries.
//!
//! Against `std::collections::BTreeMap` it spends little beyond the entries
//! themselves: no per-node parent links or spare key slots (a B-tree node
//! is allocated for 11 entries and is often half full), a chunk filled in
//! order stays full, and a map of one entry is one small allocation. Finding
//! a key is two binary searches (O(log n)); an insert or remove moves at
//! most a chunk's entries, and a chunk split or removal moves the chunk list
//! (one pointer-sized record per [`MAX`] entries).
//!
//! With [`Entry::AUG`] the map also keeps, per chunk, the largest
//! [`Entry::aug`] of its entries, and an [`AugTree`] beside it (a segment
//! tree of those over the chunks): [`AugTree::visit_above`] then visits only
//! the chunks that hold an entry whose `aug` is above a bound (the reverse
//! map's entries that end past a block), in O(log n) plus what it visits.

/// Entries per chunk at most.
pub const MAX: usize = 128;

/// What a [`Chunked`] map holds: entries ordered by a key they carry.
pub trait Entry {
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    /// Keep the per-chunk maximum of `aug` and its segment tree.
    const AUG: bool = false;
    fn aug(&self) -> u64 {
        0
    }
}

#[derive(Clone, Debug)]
struct Chunk<E> {
    v: Vec<E>,
    /// The largest `aug` of `v` (AUG maps only).
    aug: u64,
}

impl<E: Entry> Chunk<E> {
    fn first(&self) -> E::Key {
        self.v[0].key()
    }
    fn recompute(&mut self) {
        if E::AUG {
            self.aug = self.v.iter().map(|e| e.aug()).max().unwrap_or(0);
        }
    }
}

/// The sorted map (see the module documentation). Chunks are never empty.
/// One `Vec` (24 bytes) when embedded: an inode carries one.
#[derive(Clone, Debug)]
pub struct Chunked<E> {
    chunks: Vec<Chunk<E>>,
}

impl<E> Default for Chunked<E> {
    fn default() -> Self {
        Chunked { chunks: Vec::new() }
    }
}

/// What a change did to the chunks, for an [`AugTree`] to follow.
#[must_use]
#[derive(Clone, Copy, Debug)]
pub enum Touch {
    /// The entries of one chunk changed.
    Chunk(usize),
    /// Chunks were added, removed or merged.
    All,
}

impl<E: Entry> Chunked<E> {
    /// Entries (counted over the chunks).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.v.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The chunk where `k` is or would go: the last whose first key is at
    /// or below `k`, or the first.
    fn chunk_for(&self, k: E::Key) -> usize {
        self.chunks
            .partition_point(|c| c.first() <= k)
            .saturating_sub(1)
    }

    pub fn get(&self, k: E::Key) -> Option<&E> {
        let c = self.chunks.get(self.chunk_for(k))?;
        c.v.binary_search_by(|e| e.key().cmp(&k))
            .ok()
            .map(|i| &c.v[i])
    }

    /// The entry with the largest key at or below `k`.
    pub fn last_at_or_below(&self, k: E::Key) -> Option<&E> {
        let c = self.chunks.get(self.chunk_for(k))?;
        let p = c.v.partition_point(|e| e.key() <= k);
        p.checked_sub(1).map(|i| &c.v[i])
    }

    /// Entries with keys at or above `k`, in order.
    pub fn iter_from(&self, k: E::Key) -> impl Iterator<Item = &E> + '_ {
        let ci = self.chunk_for(k);
        let head = self
            .chunks
            .get(ci)
            .map(|c| &c.v[c.v.partition_point(|e| e.key() < k)..])
            .unwrap_or(&[]);
        head.iter()
            .chain(self.chunks.iter().skip(ci + 1).flat_map(|c| c.v.iter()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &E> + '_ {
        self.chunks.iter().flat_map(|c| c.v.iter())
    }

    /// Insert `e`, returning the entry it replaced (same key).
    pub fn insert(&mut self, e: E) -> (Option<E>, Touch) {
        if self.chunks.is_empty() {
            // Exactly one chunk (a push would allocate room for four): a
            // file of one extent pays for one.
            self.chunks = vec![Chunk {
                aug: e.aug(),
                v: vec![e],
            }];
            return (None, Touch::All);
        }
        let k = e.key();
        let ci = self.chunk_for(k);
        let c = &mut self.chunks[ci];
        match c.v.binary_search_by(|x| x.key().cmp(&k)) {
            Ok(i) => {
                let old = std::mem::replace(&mut c.v[i], e);
                c.recompute();
                (Some(old), Touch::Chunk(ci))
            }
            Err(i) => {
                if c.v.len() == c.v.capacity() {
                    // Grow by half (not double): a chunk wastes little.
                    let cap = c.v.capacity();
                    let want = (cap + cap / 2).clamp(4, MAX + 1);
                    c.v.reserve_exact(want.saturating_sub(cap).max(1));
                }
                if E::AUG {
                    c.aug = c.aug.max(e.aug());
                }
                c.v.insert(i, e);
                if c.v.len() > MAX {
                    self.split(ci, i);
                    return (None, Touch::All);
                }
                (None, Touch::Chunk(ci))
            }
        }
    }

    /// Refill the chunks in key order, all full but the last (mount: entries
    /// loaded out of order leave chunks split half full). The old chunks
    /// are freed together at the end, so that their memory is one free
    /// region the allocator can give back, not holes between new chunks.
    pub fn compact(&mut self) -> Touch {
        if self.chunks.len() > 1 {
            let mut old = std::mem::take(&mut self.chunks);
            let mut cur: Vec<E> = Vec::with_capacity(MAX);
            for c in old.iter_mut() {
                for e in c.v.drain(..) {
                    if cur.len() == MAX {
                        let v = std::mem::replace(&mut cur, Vec::with_capacity(MAX));
                        self.push_chunk(v);
                    }
                    cur.push(e);
                }
            }
            cur.shrink_to_fit();
            self.push_chunk(cur);
        }
        Touch::All
    }

    fn push_chunk(&mut self, v: Vec<E>) {
        let mut c = Chunk { v, aug: 0 };
        c.recompute();
        self.chunks.push(c);
    }

    /// Split an over-full chunk. An entry added at either end starts a new
    /// chunk of its own (entries arriving in order leave full chunks behind);
    /// otherwise the chunk is halved.
    fn split(&mut self, ci: usize, at: usize) {
        let c = &mut self.chunks[ci];
        let n = c.v.len();
        let (new, pos) = if at == n - 1 {
            (vec![c.v.pop().expect("over-full chunk")], ci + 1)
        } else if at == 0 {
            (vec![c.v.remove(0)], ci)
        } else {
            let mut r = Vec::with_capacity(n - n / 2);
            r.extend(c.v.drain(n / 2..));
            c.v.shrink_to_fit();
            (r, ci + 1)
        };
        c.recompute();
        let mut ch = Chunk { v: new, aug: 0 };
        ch.recompute();
        self.chunks.insert(pos, ch);
    }

    /// Remove the entry with key `k`.
    pub fn remove(&mut self, k: E::Key) -> Option<(E, Touch)> {
        let ci = self.chunk_for(k);
        let c = self.chunks.get_mut(ci)?;
        let i = c.v.binary_search_by(|x| x.key().cmp(&k)).ok()?;
        let old = c.v.remove(i);
        if c.v.is_empty() {
            self.chunks.remove(ci);
            if self.chunks.is_empty() {
                self.chunks = Vec::new();
            }
            return Some((old, Touch::All));
        }
        if c.v.capacity() > 2 * c.v.len() + 4 {
            c.v.shrink_to(c.v.len() + c.v.len() / 2);
        }
        c.recompute();
        // Merge small neighbours so that chunks stay at least a quarter full.
        if c.v.len() < MAX / 4
            && ((ci + 1 < self.chunks.len() && self.merge(ci)) || (ci > 0 && self.merge(ci - 1)))
        {
            return Some((old, Touch::All));
        }
        Some((old, Touch::Chunk(ci)))
    }

    /// Append chunk `ci + 1` to chunk `ci` if both fit in half a chunk.
    fn merge(&mut self, ci: usize) -> bool {
        if self.chunks[ci].v.len() + self.chunks[ci + 1].v.len() > MAX / 2 {
            return false;
        }
        let next = self.chunks.remove(ci + 1);
        let c = &mut self.chunks[ci];
        c.v.extend(next.v);
        c.aug = c.aug.max(next.aug);
        true
    }
}

/// For an [`Entry::AUG`] map: a segment tree over its chunks' largest
/// `aug`, kept beside the map (an inode's extent map does not carry one).
#[derive(Clone, Debug, Default)]
pub struct AugTree {
    /// Leaves from `tree.len() / 2`.
    tree: Vec<u64>,
}

impl AugTree {
    /// Follow a change of `map`.
    pub fn touch<E: Entry>(&mut self, map: &Chunked<E>, t: Touch) {
        let cap = self.tree.len() / 2;
        match t {
            Touch::Chunk(ci) if ci < cap => {
                let mut j = cap + ci;
                self.tree[j] = map.chunks[ci].aug;
                while j > 1 {
                    j /= 2;
                    self.tree[j] = self.tree[2 * j].max(self.tree[2 * j + 1]);
                }
            }
            _ => self.rebuild(map),
        }
    }

    fn rebuild<E: Entry>(&mut self, map: &Chunked<E>) {
        let cap = map.chunks.len().next_power_of_two();
        self.tree.clear();
        self.tree.resize(2 * cap, 0);
        for (i, c) in map.chunks.iter().enumerate() {
            self.tree[cap + i] = c.aug;
        }
        for j in (1..cap).rev() {
            self.tree[j] = self.tree[2 * j].max(self.tree[2 * j + 1]);
        }
    }

    /// Call `f` on every entry of `map` with a key at or below `k` and an
    /// `aug` above `bound`. Chunks holding no such entry are skipped through
    /// the tree: O(log n) plus the chunks visited.
    pub fn visit_above<E: Entry>(
        &self,
        map: &Chunked<E>,
        k: E::Key,
        bound: u64,
        mut f: impl FnMut(&E),
    ) {
        debug_assert!(E::AUG);
        if map.chunks.is_empty() {
            return;
        }
        let last = map.chunk_for(k);
        let cap = self.tree.len() / 2;
        // Depth-first, leftmost first; node j covers chunks [lo, hi).
        let mut stack = vec![(1usize, 0usize, cap)];
        while let Some((j, lo, hi)) = stack.pop() {
            if lo > last || self.tree[j] <= bound {
                continue;
            }
            if hi - lo == 1 {
                for e in &map.chunks[lo].v {
                    if e.key() > k {
                        break;
                    }
                    if e.aug() > bound {
                        f(e);
                    }
                }
                continue;
            }
            let mid = (lo + hi) / 2;
            stack.push((2 * j + 1, mid, hi));
            stack.push((2 * j, lo, mid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct R(u64, u64);
    impl Entry for R {
        type Key = u64;
        fn key(&self) -> u64 {
            self.0
        }
        const AUG: bool = true;
        fn aug(&self) -> u64 {
            self.0 + self.1
        }
    }

    /// Random inserts and removes agree with a BTreeMap, and the augmented
    /// query finds exactly the intervals covering a point.
    #[test]
    fn agrees_with_btreemap() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut m: Chunked<R> = Chunked::default();
        let mut t = AugTree::default();
        let mut b: BTreeMap<u64, u64> = BTreeMap::new();
        for round in 0..20_000 {
            let k = rnd(3000);
            if rnd(3) == 0 {
                let r = m.remove(k).map(|(r, touch)| {
                    t.touch(&m, touch);
                    r.1
                });
                assert_eq!(r, b.remove(&k));
            } else {
                let l = 1 + rnd(if round % 50 == 0 { 500 } else { 5 });
                let (old, touch) = m.insert(R(k, l));
                t.touch(&m, touch);
                assert_eq!(old.map(|r| r.1), b.insert(k, l));
            }
            assert_eq!(m.len(), b.len());
            if round % 97 == 0 {
                let q = rnd(3100);
                let mut got = Vec::new();
                t.visit_above(&m, q, q, |r| got.push(r.0));
                let want: Vec<u64> = b
                    .range(..=q)
                    .filter(|(k, l)| *k + *l > q)
                    .map(|(k, _)| *k)
                    .collect();
                assert_eq!(got, want, "covering {q}");
                assert_eq!(
                    m.last_at_or_below(q).map(|r| r.0),
                    b.range(..=q).next_back().map(|(k, _)| *k)
                );
                let from: Vec<u64> = m.iter_from(q).map(|r| r.0).collect();
                let bf: Vec<u64> = b.range(q..).map(|(k, _)| *k).collect();
                assert_eq!(from, bf);
            }
        }
        let all: Vec<(u64, u64)> = m.iter().map(|r| (r.0, r.1)).collect();
        let ball: Vec<(u64, u64)> = b.into_iter().collect();
        assert_eq!(all, ball);
    }

    #[test]
    fn in_order_inserts_fill_chunks() {
        let mut m: Chunked<R> = Chunked::default();
        for k in 0..10 * MAX as u64 {
            let _ = m.insert(R(k, 1));
        }
        assert_eq!(m.chunks.len(), 10);
        assert!(m.chunks.iter().all(|c| c.v.len() == MAX));
    }

    #[test]
    fn compact_refills_chunks_in_order() {
        let mut m: Chunked<R> = Chunked::default();
        // Runs in descending order of runs, ascending within: chunks split.
        for run in (0..20u64).rev() {
            for k in 0..100 {
                let _ = m.insert(R(run * 100 + k, 1));
            }
        }
        assert!(m.chunks.len() > 16);
        let _ = m.compact();
        assert_eq!(m.chunks.len(), 16);
        let keys: Vec<u64> = m.iter().map(|r| r.0).collect();
        assert_eq!(keys, (0..2000).collect::<Vec<_>>());
        assert_eq!(m.get(1999).map(|r| r.1), Some(1));
    }
}
