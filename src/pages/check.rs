//! The invariant checker (docs/KERNEL.md section 3): the page model against
//! the ground truth the filesystem gives.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{rmap_of, PageModel, Pages, PG_DIRTY, PIN_BIAS, ZERO_PAGE};

impl Pages {
    /// Blocks the model tracks (pages with a descriptor).
    pub fn tracked_blocks(&self) -> Vec<u64> {
        let s = self.state.lock();
        // A pinned page always has a descriptor (its pin count).
        s.pages.blocks().map(|(b, _)| b).collect()
    }

    /// Check invariants 1-7 against the ground truth. `owners(b)` gives the
    /// (inode, page) pairs mapping block b; `allocated(b)` whether the block is
    /// in use on media. Both are evaluated before the page mutex is taken.
    /// Returns the violated invariants (sticky ones included).
    pub fn check(
        &self,
        owners: &dyn Fn(u64) -> Vec<(u64, u64)>,
        allocated: &dyn Fn(u64) -> bool,
    ) -> BTreeSet<u8> {
        let tracked = self.tracked_blocks();
        let truth: HashMap<u64, Vec<(u64, u64)>> =
            tracked.iter().map(|b| (*b, owners(*b))).collect();
        let alloc: HashMap<u64, bool> = tracked.iter().map(|b| (*b, allocated(*b))).collect();
        let s = self.state.lock();
        let descs = s.page_descs();
        // Each block's proxies (owner, index), in one pass over the pins,
        // so that the reverse maps cost O(pinned pages), not their square.
        let mut px: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        if self.model == PageModel::Proxy {
            for p in s.pins.values() {
                for r in p.runs.iter().filter(|r| r.proxy != 0) {
                    for k in 0..r.len {
                        px.entry(r.block + k)
                            .or_default()
                            .push((p.ino, p.index + r.off + k));
                    }
                }
            }
        }
        let rmaps: HashMap<u64, Vec<(u64, u64)>> = tracked
            .iter()
            .map(|b| {
                let p = px.get(b).map(Vec::as_slice).unwrap_or(&[]);
                (*b, rmap_of(self.model, descs.get(b), &truth[b], p))
            })
            .collect();
        let mut v = s.violated.clone();
        let get = |b: &u64| truth.get(b).map(Vec::as_slice).unwrap_or(&[]);
        let is_alloc = |b: &u64| alloc.get(b).copied().unwrap_or(true);
        for pin in s.pins.values() {
            v.extend(pin.violated.iter().copied());
            // Expanded page by page for the check (a hash set, so that a pin
            // of scattered blocks costs O(pages x owners), not its square).
            let at_pin: HashSet<(u64, u64)> = pin
                .runs
                .iter()
                .filter(|r| r.block != ZERO_PAGE)
                .flat_map(|r| {
                    r.owners
                        .iter()
                        .flat_map(move |o| (0..r.len).map(move |k| (o.0, o.1 + k)))
                })
                .collect();
            for b in pin.blocks().filter(|b| *b != ZERO_PAGE) {
                // 1: a pinned block is never free nor given to another file.
                if !is_alloc(&b) || get(&b).iter().any(|o| !at_pin.contains(o)) {
                    v.insert(1);
                }
            }
        }
        for (b, pd) in &descs {
            // 4: the model's reverse map names every owner (and only owners).
            let mut t = get(b).to_vec();
            t.sort();
            let mut r = rmaps.get(b).cloned().unwrap_or_default();
            r.sort();
            if t.iter().any(|o| !r.contains(o)) || r.iter().any(|o| !t.contains(o)) {
                v.insert(4);
            }
            // 7: refcount = base + pins x bias, no pinned or proxied page is
            // free, and a free block's page is clean: no file maps it
            // (mapping, map count) and no dirty data is charged to it.
            let unclean = pd.mapping.is_some() || pd.mapcount > 0 || pd.flags & PG_DIRTY != 0;
            if pd.refcount != 1 + pd.pincount * PIN_BIAS
                || ((pd.pincount > 0 || !pd.proxies.is_empty() || unclean) && !is_alloc(b))
            {
                v.insert(7);
            }
        }
        let dirty = s.dirty_ranges();
        // 7: dirty data charged to a block back on the free list.
        if dirty.iter().any(|d| alloc.get(&d.block) == Some(&false)) {
            v.insert(7);
        }
        // 6: device writes are attributed to the file they were made through.
        if dirty.iter().any(|d| d.attributed != d.owner) {
            v.insert(6);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::{runs_of, PageModel, Pages, PinRequest};
    use std::time::Duration;

    fn pin_a(p: &Pages) -> u64 {
        p.pin(PinRequest {
            holder: 1,
            uid: 0,
            limit_user: false,
            ino: 2,
            index: 0,
            runs: runs_of(&[517], &[vec![(2, 0)]]),
            write: true,
            longterm: false,
        })
        .unwrap()
    }

    /// A proxy pin's block is truncated away (deferred), the device writes,
    /// the pin ends: the page left behind says A[0], map 1, dirty. Once the
    /// block is free that page is stale, and the checker must say so; the
    /// model's own free (blocks_freed) leaves nothing of it.
    #[test]
    fn a_free_blocks_page_must_be_clean() {
        let p = Pages::new(PageModel::Proxy, Duration::from_millis(1));
        let id = pin_a(&p);
        p.deferred(517, 9);
        p.note_dma_write(id, &[(517, vec![])]).unwrap();
        let (_, release) = p.unpin(id).unwrap();
        assert_eq!(release, vec![(517, 9)]);
        let pd = p.view().pages[&517].clone();
        assert_eq!((pd.mapping, pd.mapcount, pd.refcount), (Some(2), 1, 1));
        // The block is on the free list and nobody maps it: a stale page.
        let free = |_: u64| false;
        assert!(p.check(&|_| vec![], &free).contains(&7));
        // The same state with the block still allocated to A is fine.
        let p2 = Pages::new(PageModel::Proxy, Duration::from_millis(1));
        let id2 = pin_a(&p2);
        p2.unpin(id2).unwrap();
        assert!(p2.check(&|_| vec![(2, 0)], &|_| true).is_empty());
        // What the filesystem does when the block is freed: clean.
        p.blocks_freed(517, 1);
        assert!(!p.view().pages.contains_key(&517));
        assert!(p.view().dirty.is_empty());
        assert!(!p.check(&|_| vec![], &free).contains(&7));
    }

    /// Overlapping pins, the later one dropped first: each page reads as
    /// per-page descriptors changed in the same order would. The map count
    /// and shared flag stay as the last pin left them, legacy keeps its
    /// first owner, the proxy list is the live pins' proxies in order.
    #[test]
    fn overlapping_pins_read_back_page_by_page() {
        let own = |ino: u64, from: u64, n: u64| -> Vec<Vec<(u64, u64)>> {
            (0..n).map(|k| vec![(ino, from + k)]).collect()
        };
        for model in [PageModel::Legacy, PageModel::Proxy] {
            let p = Pages::new(model, Duration::from_millis(1));
            let req =
                |holder, ino, index, blocks: Vec<u64>, owners: Vec<Vec<(u64, u64)>>| PinRequest {
                    holder,
                    uid: 0,
                    limit_user: false,
                    ino,
                    index,
                    runs: runs_of(&blocks, &owners),
                    write: false,
                    longterm: false,
                };
            let a = p
                .pin(req(1, 5, 0, (10..14).collect(), own(5, 0, 4)))
                .unwrap();
            // 12 and 13 are shared with inode 6 now; 14, 15 are 6's alone.
            let mut o: Vec<Vec<(u64, u64)>> = (0..2).map(|k| vec![(5, 2 + k), (6, k)]).collect();
            o.extend(own(6, 2, 2));
            let b = p.pin(req(2, 6, 0, (12..16).collect(), o)).unwrap();
            p.unpin(b).unwrap();
            let v = p.view();
            assert_eq!(v.pages.len(), 4, "{:?}", v.pages);
            let pd = &v.pages[&12];
            assert_eq!((pd.pincount, pd.refcount, pd.mapcount), (1, 1025, 2));
            assert_eq!(pd.flags & super::super::PG_SHARED, super::super::PG_SHARED);
            match model {
                PageModel::Legacy => {
                    assert_eq!((pd.mapping, pd.index), (Some(5), 2));
                    assert!(pd.proxies.is_empty());
                }
                _ => {
                    assert_eq!((pd.mapping, pd.index), (None, 2));
                    assert_eq!(pd.proxies, vec![a + 3]);
                    assert_eq!(v.proxies[&(a + 3)].index, 2);
                }
            }
            let pd = &v.pages[&11];
            assert_eq!((pd.mapping, pd.index, pd.mapcount), (Some(5), 1, 1));
            p.unpin(a).unwrap();
            assert!(p.view().pages.is_empty() && p.view().proxies.is_empty());
        }
    }
}
