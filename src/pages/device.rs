//! Device writes through pins (the simulated DMA), the dirty blocks they
//! leave for fsync, and poison: how each page model answers them.

use super::*;

impl Pages {
    /// A device write through pin `id` at byte `off` of the pinned range.
    /// Returns the blocks written (the caller stores the bytes) or an error
    /// string for a refused write.
    pub fn dma_target(
        &self,
        id: u64,
        off: u64,
        len: u64,
        bs: u64,
    ) -> Result<Vec<(u64, u64, u64)>, i32> {
        let s = self.state.lock();
        let pin = s.pins.get(&id).ok_or(libc::ENOENT)?;
        let total = pin.pages * bs;
        if off.checked_add(len).is_none_or(|e| e > total) {
            return Err(libc::EINVAL);
        }
        let mut out = Vec::new();
        let mut o = off;
        while o < off + len {
            let i = o / bs;
            let inner = o % bs;
            let n = (bs - inner).min(off + len - o);
            out.push((pin.block_at(i).ok_or(libc::EINVAL)?, inner, n));
            o += n;
        }
        Ok(out)
    }

    /// Record a device write through pin `id`; `owners_now` are the current
    /// ground-truth owners of each written block. Refuses writes through a
    /// read pin except in the legacy model.
    pub fn note_dma_write(&self, id: u64, blocks: &[(u64, Vec<(u64, u64)>)]) -> Result<(), i32> {
        let mut s = self.state.lock();
        let model = self.model;
        let pin = s.pins.get_mut(&id).ok_or(libc::ENOENT)?;
        if !pin.write && model != PageModel::Legacy {
            return Err(libc::EPERM);
        }
        // Its proxies are dirty with it (proxy_of).
        pin.dirty = true;
        let (ino, index) = (pin.ino, pin.index);
        for (b, owners) in blocks {
            // Invariant 2: the bytes may be visible only in (ino, index + i).
            let i = pin.position(*b).unwrap_or(0);
            if owners.iter().any(|o| *o != (ino, index + i)) {
                pin.violated.insert(2);
            }
        }
        s.dirty_pins.insert((ino, id));
        let written: Vec<u64> = blocks.iter().map(|(b, _)| *b).collect();
        for (a, z) in ranges(&written) {
            s.pages.update(a, z, false, |pd, _, _| {
                pd.flags |= PG_DIRTY;
                true
            });
        }
        Ok(())
    }

    /// fsync of `ino`: the dirty ranges attributed to it, removed from the list.
    pub fn take_dirty_of(&self, ino: u64) -> Vec<u64> {
        let mut s = self.state.lock();
        let mut out: Vec<u64> = s
            .dirty
            .remove(&ino)
            .unwrap_or_default()
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        // Live pins of this file with device writes: proxies know their owner.
        if self.model != PageModel::Legacy {
            let blocks: Vec<u64> = s
                .dirty_pins
                .range((ino, 0)..=(ino, u64::MAX))
                .filter_map(|(_, id)| s.pins.get(id))
                .flat_map(|p| p.blocks())
                .filter(|b| *b != ZERO_PAGE)
                .collect();
            out.extend(blocks);
        }
        for (a, z) in ranges(&out) {
            s.pages.update(a, z, false, |pd, _, _| {
                pd.flags &= !PG_DIRTY;
                true
            });
        }
        out
    }

    /// Poison a block. `owners` are its ground-truth owners. Returns the
    /// owners the model notifies (they get EIO on reads of it).
    pub fn poison(&self, block: u64, owners: &[(u64, u64)]) -> Vec<u64> {
        let mut s = self.state.lock();
        let model = self.model;
        let mut mapping = None;
        s.pages.update(block, block + 1, true, |pd, _, _| {
            pd.flags |= PG_POISONED;
            if pd.mapping.is_none() && model == PageModel::Legacy {
                if let Some((ino, idx)) = owners.iter().min() {
                    pd.mapping = Some(*ino);
                    pd.index = *idx;
                }
            }
            mapping = pd.mapping;
            true
        });
        let mut notified: Vec<u64> = match model {
            // memory_failure() used page->mapping only.
            PageModel::Legacy => mapping.into_iter().collect(),
            // The filesystem's reverse map (upstream) or extents + proxies (proxy).
            PageModel::Upstream | PageModel::Proxy => owners.iter().map(|o| o.0).collect(),
        };
        if model == PageModel::Proxy {
            notified.extend(s.proxies_on(block).iter().map(|p| p.owner));
        }
        notified.sort();
        notified.dedup();
        let all: BTreeSet<u64> = owners.iter().map(|o| o.0).collect();
        if !all.iter().all(|o| notified.contains(o)) {
            s.violated.insert(5);
        }
        if s.poisoned.insert(block) {
            self.npoisoned.fetch_add(1, Ordering::Relaxed);
        }
        s.poison_notified.insert(block, notified.clone());
        notified
    }

    /// The poisoned blocks in `first..first + n`, in order.
    pub fn poisoned_in(&self, first: u64, n: u64) -> Vec<u64> {
        if !self.any_poisoned() {
            return Vec::new();
        }
        let s = self.state.lock();
        s.poisoned
            .range(first..first.saturating_add(n))
            .copied()
            .collect()
    }

    /// Is a read of `block` by `ino` refused (poisoned and `ino` was told)?
    /// The second value: poisoned but `ino` was not told (it reads bad data).
    pub fn poison_check(&self, block: u64, ino: u64) -> (bool, bool) {
        if !self.any_poisoned() {
            return (false, false);
        }
        let s = self.state.lock();
        if !s.poisoned.contains(&block) {
            return (false, false);
        }
        let told = self.model != PageModel::Legacy
            || s.poison_notified
                .get(&block)
                .is_some_and(|v| v.contains(&ino));
        (told, !told)
    }

    pub fn is_poisoned(&self, block: u64) -> bool {
        self.any_poisoned() && self.state.lock().poisoned.contains(&block)
    }

    /// Every dirty block (flushed at unmount).
    pub fn all_dirty(&self) -> Vec<u64> {
        let s = self.state.lock();
        let mut v: Vec<u64> = s.dirty_ranges().iter().map(|d| d.block).collect();
        v.extend(
            s.pins
                .values()
                .filter(|p| p.dirty)
                .flat_map(|p| p.blocks())
                .filter(|b| *b != ZERO_PAGE),
        );
        v
    }
}
