//! Leases: what a direct-access client holds while it loads and stores into
//! a file's blocks through its own mapping of the image.
//!
//! A lease is the kernel's short-term pin (`pin_user_pages` without
//! FOLL_LONGTERM, held for one copy): it never blocks a layout change, it is
//! recalled by one (the daemon bumps the file's generation in the control
//! page and waits until no client is inside an access that began under the
//! old one), so its recall is the same in every page model. One lease per
//! open file (FUSE handle), replaced by its next MAP and dropped at its
//! RELEASE: O(1) memory each, bounded by the open files.

use std::collections::HashMap;

use parking_lot::Mutex;

/// One lease: who holds it (the open file and the process that asked
/// through it) on which inode, and whether it lets the holder store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    /// The FUSE file handle (the open file the MAP came through).
    pub holder: u64,
    /// The process that asked (for `daxlink owners`, SNAPSHOT and logs).
    pub pid: u32,
    pub uid: u32,
    pub ino: u64,
    pub write: bool,
}

#[derive(Default)]
struct Table {
    next: u64,
    by_holder: HashMap<u64, Lease>,
    /// Writable leases per inode.
    writers: HashMap<u64, u32>,
}

impl Table {
    fn drop_writer(&mut self, ino: u64) {
        if let Some(n) = self.writers.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.writers.remove(&ino);
            }
        }
    }
}

/// The lease table of a mount.
#[derive(Default)]
pub struct Leases {
    t: Mutex<Table>,
}

/// What a grant did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub id: u64,
    /// The inode had no writable lease before this one.
    pub first_writer: bool,
    /// This open file's lease on the inode became writable now.
    pub new_writer: bool,
}

impl Leases {
    /// Record (or replace) the lease of open file `holder`.
    pub fn grant(&self, holder: u64, pid: u32, uid: u32, ino: u64, write: bool) -> Granted {
        let mut t = self.t.lock();
        let mut was_writer = false;
        if let Some(old) = t.by_holder.remove(&holder) {
            if old.write {
                was_writer = old.ino == ino;
                t.drop_writer(old.ino);
            }
        }
        t.next += 1;
        let id = t.next;
        let mut first_writer = false;
        if write {
            let n = t.writers.entry(ino).or_insert(0);
            first_writer = *n == 0;
            *n += 1;
        }
        t.by_holder.insert(
            holder,
            Lease {
                id,
                holder,
                pid,
                uid,
                ino,
                write,
            },
        );
        Granted {
            id,
            first_writer,
            new_writer: write && !was_writer,
        }
    }

    /// Drop the lease of open file `holder` (its RELEASE).
    pub fn release(&self, holder: u64) -> Option<Lease> {
        let mut t = self.t.lock();
        let l = t.by_holder.remove(&holder)?;
        if l.write {
            t.drop_writer(l.ino);
        }
        Some(l)
    }

    /// Does open file `holder` hold a lease (it is a direct client's)?
    pub fn holds(&self, holder: u64) -> bool {
        self.t.lock().by_holder.contains_key(&holder)
    }

    /// Does an open file other than `holder` hold a writable lease on `ino`?
    pub fn other_writer(&self, ino: u64, holder: u64) -> bool {
        let t = self.t.lock();
        let own = t
            .by_holder
            .get(&holder)
            .is_some_and(|l| l.write && l.ino == ino);
        t.writers.get(&ino).copied().unwrap_or(0) > u32::from(own)
    }

    /// Does an open file other than `holder` hold a lease on `ino`?
    pub fn others_on(&self, ino: u64, holder: u64) -> bool {
        self.t
            .lock()
            .by_holder
            .values()
            .any(|l| l.ino == ino && l.holder != holder)
    }

    /// Does any open file hold a writable lease on `ino`?
    pub fn writable_on(&self, ino: u64) -> bool {
        self.t.lock().writers.contains_key(&ino)
    }

    /// The leases on `ino`, by id.
    pub fn on(&self, ino: u64) -> Vec<Lease> {
        let t = self.t.lock();
        let mut v: Vec<Lease> = t
            .by_holder
            .values()
            .filter(|l| l.ino == ino)
            .cloned()
            .collect();
        v.sort_by_key(|l| l.id);
        v
    }

    /// Every lease, by id.
    pub fn all(&self) -> Vec<Lease> {
        let t = self.t.lock();
        let mut v: Vec<Lease> = t.by_holder.values().cloned().collect();
        v.sort_by_key(|l| l.id);
        v
    }

    pub fn count(&self) -> usize {
        self.t.lock().by_holder.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_replaces_its_holders_lease_and_release_drops_it() {
        let l = Leases::default();
        let a = l.grant(7, 100, 1000, 42, false);
        assert!(!a.first_writer);
        assert!(!l.writable_on(42));
        let b = l.grant(7, 100, 1000, 42, true);
        assert!(b.first_writer && b.id > a.id);
        assert_eq!(l.count(), 1, "one lease per open file");
        let c = l.grant(8, 101, 1000, 42, true);
        assert!(!c.first_writer, "a second writer is not the first");
        assert_eq!(l.on(42).len(), 2);
        assert_eq!(l.release(7).map(|x| x.id), Some(b.id));
        assert!(l.writable_on(42));
        l.release(8);
        assert!(!l.writable_on(42));
        assert!(l.all().is_empty());
        assert_eq!(l.release(8), None);
        // Replacing a writable lease by a read lease drops the writer.
        l.grant(9, 1, 1, 5, true);
        l.grant(9, 1, 1, 5, false);
        assert!(!l.writable_on(5));
    }
}
