//! A block going back on the free list, as the page model sees it.

use super::{PageDesc, Pages, PG_POISONED};

impl Pages {
    /// Blocks `[phys, phys+len)` went back on the free list: their pages
    /// leave every file (dax_disassociate_entry), so no mapping, map count
    /// or dirty charge survives. A page still pinned keeps its descriptor
    /// (legacy frees pinned blocks: invariant 7 sees it), a poisoned one
    /// only its poison.
    pub fn blocks_freed(&self, phys: u64, len: u64) {
        let mut s = self.state.lock();
        if s.pages.is_empty() && s.dirty.is_empty() {
            return;
        }
        let end = phys.saturating_add(len);
        let hit: Vec<u64> = if len as usize <= s.pages.len() {
            (phys..end).filter(|b| s.pages.contains_key(b)).collect()
        } else {
            s.pages
                .keys()
                .copied()
                .filter(|b| (phys..end).contains(b))
                .collect()
        };
        for b in hit {
            let Some(pd) = s.pages.get_mut(&b) else {
                continue;
            };
            if pd.pincount > 0 {
                continue;
            }
            if pd.flags & PG_POISONED != 0 {
                *pd = PageDesc {
                    refcount: 1,
                    flags: PG_POISONED,
                    ..PageDesc::default()
                };
            } else {
                s.pages.remove(&b);
            }
        }
        for set in s.dirty.values_mut() {
            set.retain(|(b, _)| !(phys..end).contains(b));
        }
        s.dirty.retain(|_, set| !set.is_empty());
    }
}
