//! The invariant checker (docs/KERNEL.md section 3): the page model against
//! the ground truth the filesystem gives.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Pages, PIN_BIAS, ZERO_PAGE};

impl Pages {
    /// Blocks the model tracks (pages with a descriptor).
    pub fn tracked_blocks(&self) -> Vec<u64> {
        let s = self.state.lock();
        let mut v: Vec<u64> = s.pages.keys().copied().collect();
        v.extend(s.pinned.keys().copied());
        v.sort();
        v.dedup();
        v
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
        let rmaps: HashMap<u64, Vec<(u64, u64)>> = tracked
            .iter()
            .map(|b| (*b, self.rmap(*b, &truth[b])))
            .collect();
        let s = self.state.lock();
        let mut v = s.violated.clone();
        let get = |b: &u64| truth.get(b).map(Vec::as_slice).unwrap_or(&[]);
        let is_alloc = |b: &u64| alloc.get(b).copied().unwrap_or(true);
        for pin in s.pins.values() {
            v.extend(pin.violated.iter().copied());
            let at_pin: HashSet<&(u64, u64)> = pin.owners_at_pin.iter().collect();
            for b in pin.blocks.iter().filter(|b| **b != ZERO_PAGE) {
                // 1: a pinned block is never free nor given to another file.
                if !is_alloc(b) || get(b).iter().any(|o| !at_pin.contains(o)) {
                    v.insert(1);
                }
            }
        }
        for (b, pd) in &s.pages {
            // 4: the model's reverse map names every owner (and only owners).
            let mut t = get(b).to_vec();
            t.sort();
            let mut r = rmaps.get(b).cloned().unwrap_or_default();
            r.sort();
            if t.iter().any(|o| !r.contains(o)) || r.iter().any(|o| !t.contains(o)) {
                v.insert(4);
            }
            // 7: refcount = base + pins x bias, and no pinned or proxied page is free.
            if pd.refcount != 1 + pd.pincount * PIN_BIAS
                || ((pd.pincount > 0 || !pd.proxies.is_empty()) && !is_alloc(b))
            {
                v.insert(7);
            }
        }
        // 6: device writes are attributed to the file they were made through.
        if s.dirty_ranges().iter().any(|d| d.attributed != d.owner) {
            v.insert(6);
        }
        v
    }
}
