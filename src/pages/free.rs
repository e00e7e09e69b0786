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
        s.pages.update(phys, end, false, |pd, _, _| {
            if pd.pincount > 0 {
                return true;
            }
            if pd.flags & PG_POISONED == 0 {
                return false;
            }
            *pd = PageDesc {
                refcount: 1,
                flags: PG_POISONED,
                ..PageDesc::default()
            };
            true
        });
        for set in s.dirty.values_mut() {
            set.retain(|(b, _)| !(phys..end).contains(b));
        }
        s.dirty.retain(|_, set| !set.is_empty());
    }
}
