//! The open files (FUSE file handles) of a mount: each one's open(2) flags,
//! and which of them read through the kernel's page cache.
//!
//! A direct writer stores into the image behind the kernel's back, so while
//! a file has a writable lease no open of it may keep cached pages that a
//! direct write can make stale. Opens made while a writable lease exists
//! bypass the cache (FOPEN_DIRECT_IO); an open made before (a "cached
//! open") keeps it. So a writable map is granted only while every cached
//! open of the file but the asking one's own is a direct client's (it holds
//! a lease): a direct client drops the file's cached pages (TOUCH_INVAL)
//! before a kernel-path read after its own direct writes, or when its map
//! says another open writes the file (MAP_OTHERS) or is stale. Both
//! decisions are taken under this table's lock (a leaf lock), so an open
//! and a grant cannot cross: `settle` decides an open's cache mode seeing
//! every lease granted before it, and a grant sees every open settled
//! before it. When a writable lease ends, the pages its own cached open
//! may have kept are stale: the file's next open is answered without
//! FOPEN_KEEP_CACHE, so the kernel drops them (`stale`).

use std::collections::{HashMap, HashSet};

pub(super) struct Handle {
    pub flags: i32,
    pub ino: u64,
}

#[derive(Default)]
pub(super) struct Handles {
    by_fh: HashMap<u64, Handle>,
    /// Cached opens per inode.
    cached: HashMap<u64, HashSet<u64>>,
    /// Files whose cached pages may be older than a direct write.
    stale: HashSet<u64>,
}

impl Handles {
    pub fn get(&self, fh: &u64) -> Option<&Handle> {
        self.by_fh.get(fh)
    }

    pub fn contains_key(&self, fh: &u64) -> bool {
        self.by_fh.contains_key(fh)
    }

    /// A new open of `ino`, not yet settled (counted as not cached).
    pub fn insert(&mut self, fh: u64, ino: u64, flags: i32) {
        if let Some(old) = self.by_fh.insert(fh, Handle { flags, ino }) {
            self.forget(old.ino, fh);
        }
    }

    pub fn remove(&mut self, fh: &u64) {
        if let Some(h) = self.by_fh.remove(fh) {
            self.forget(h.ino, *fh);
        }
    }

    /// Record whether open `fh` uses the page cache.
    pub fn settle(&mut self, fh: u64, cached: bool) {
        let Some(ino) = self.by_fh.get(&fh).map(|h| h.ino) else {
            return;
        };
        if cached {
            self.cached.entry(ino).or_default().insert(fh);
        } else {
            self.forget(ino, fh);
        }
    }

    /// Does an open of `ino` other than `fh` use the page cache, other
    /// than those `cooperates` says take care of their own cached pages
    /// (direct clients' opens, which drop them before kernel-path reads)?
    pub fn cached_elsewhere(&self, ino: u64, fh: u64, cooperates: impl Fn(u64) -> bool) -> bool {
        self.cached
            .get(&ino)
            .is_some_and(|s| s.iter().any(|&f| f != fh && !cooperates(f)))
    }

    /// A writable lease on `ino` ended.
    pub fn mark_stale(&mut self, ino: u64) {
        self.stale.insert(ino);
    }

    /// Must this open of `ino` drop the kernel's cached pages? (Once.)
    pub fn take_stale(&mut self, ino: u64) -> bool {
        self.stale.remove(&ino)
    }

    fn forget(&mut self, ino: u64, fh: u64) {
        if let Some(s) = self.cached.get_mut(&ino) {
            s.remove(&fh);
            if s.is_empty() {
                self.cached.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_opens_are_counted_per_file_and_forgotten_at_release() {
        let mut h = Handles::default();
        h.insert(1, 10, 0);
        h.insert(2, 10, 0);
        h.insert(3, 11, 0);
        assert!(
            !h.cached_elsewhere(10, 1, |_| false),
            "unsettled opens count as uncached"
        );
        h.settle(1, true);
        assert!(!h.cached_elsewhere(10, 1, |_| false), "its own cached open");
        assert!(h.cached_elsewhere(10, 2, |_| false));
        assert!(!h.cached_elsewhere(11, 3, |_| false), "another file");
        h.settle(2, true);
        h.settle(2, true);
        assert!(h.cached_elsewhere(10, 1, |_| false));
        assert!(
            !h.cached_elsewhere(10, 1, |f| f == 2),
            "a direct client's open"
        );
        h.remove(&2);
        assert!(!h.cached_elsewhere(10, 1, |_| false));
        h.settle(1, false);
        assert!(!h.cached_elsewhere(10, 2, |_| false));
        h.settle(1, true);
        h.insert(1, 11, 0);
        assert!(
            !h.cached_elsewhere(10, 2, |_| false),
            "a reused handle uncounts its old open"
        );
    }
}
