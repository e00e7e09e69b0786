//! A directory's entries in DRAM, compact: one [`Chunked`] map by slot
//! (readdir order; the cookie is the slot offset) holding each entry once
//! (slot, child and file type packed, the name inline when it is short),
//! and a hash table of slots by name for lookups. About 52 bytes an entry
//! with a name of up to 22 bytes, against 110 for a `HashMap` by name plus a
//! map by slot sharing an `Arc<[u8]>` name.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use hashbrown::HashTable;

use super::chunked::{Chunked, Entry};

/// One entry as the rest of the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DEnt {
    pub child: u64,
    pub ftype: u8,
    pub slot: u64,
}

/// Names up to this length are stored in the entry itself.
const INLINE: usize = 22;

#[derive(Clone, Debug)]
enum Name {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Name {
    fn new(n: &[u8]) -> Name {
        if n.len() <= INLINE {
            let mut b = [0u8; INLINE];
            b[..n.len()].copy_from_slice(n);
            Name::Inline(n.len() as u8, b)
        } else {
            Name::Heap(n.into())
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Name::Inline(l, b) => &b[..*l as usize],
            Name::Heap(b) => b,
        }
    }
}

const CHILD: u64 = (1 << 40) - 1;

#[derive(Clone, Debug)]
struct Slot {
    slot: u64,
    /// Child inode (40 bits) and file type (bits 56..64).
    cf: u64,
    name: Name,
}

impl Slot {
    fn dent(&self) -> DEnt {
        DEnt {
            child: self.cf & CHILD,
            ftype: (self.cf >> 56) as u8,
            slot: self.slot,
        }
    }
}

impl Entry for Slot {
    type Key = u64;
    fn key(&self) -> u64 {
        self.slot
    }
}

fn hash(name: &[u8]) -> u64 {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    STATE.get_or_init(RandomState::new).hash_one(name)
}

/// A directory's entries (see the module documentation).
#[derive(Default, Debug)]
pub struct Dir {
    pub parent: u64,
    ents: Chunked<Slot>,
    /// Slots, hashed by their entry's name.
    index: HashTable<u64>,
}

impl Dir {
    fn slot_of(&self, name: &[u8]) -> Option<u64> {
        let ents = &self.ents;
        self.index
            .find(hash(name), |s| {
                ents.get(*s).is_some_and(|e| e.name.bytes() == name)
            })
            .copied()
    }

    pub fn get(&self, name: &[u8]) -> Option<DEnt> {
        self.ents.get(self.slot_of(name)?).map(Slot::dent)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.slot_of(name).is_some()
    }

    /// Entries (not counting `.` and `..`).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Add the entry `name` -> `e` (at slot `e.slot`), replacing one of the
    /// same name.
    pub fn add(&mut self, name: &[u8], e: DEnt) {
        self.remove(name);
        let _ = self.ents.insert(Slot {
            slot: e.slot,
            cf: (e.child & CHILD) | ((e.ftype as u64) << 56),
            name: Name::new(name),
        });
        let Dir { ents, index, .. } = self;
        index.insert_unique(hash(name), e.slot, |s| {
            ents.get(*s).map_or(0, |x| hash(x.name.bytes()))
        });
    }

    /// Remove the entry `name`.
    pub fn remove(&mut self, name: &[u8]) -> Option<DEnt> {
        let Dir { ents, index, .. } = self;
        let found = index.find_entry(hash(name), |s| {
            ents.get(*s).is_some_and(|e| e.name.bytes() == name)
        });
        let slot = match found {
            Ok(o) => o.remove().0,
            Err(_) => return None,
        };
        ents.remove(slot).map(|(e, _)| e.dent())
    }

    /// Refill the by-slot map in order (mount: the chain gives entries
    /// newest block first).
    pub fn compact(&mut self) {
        let _ = self.ents.compact();
    }

    /// Every entry in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], DEnt)> + '_ {
        self.ents.iter().map(|e| (e.name.bytes(), e.dent()))
    }

    /// The entries at slots from `slot` on, in slot order (readdir).
    pub fn iter_from(&self, slot: u64) -> impl Iterator<Item = (&[u8], DEnt)> + '_ {
        self.ents
            .iter_from(slot)
            .map(|e| (e.name.bytes(), e.dent()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_short_and_long_add_replace_remove() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        let mut d = Dir::default();
        let long = vec![b'x'; 200];
        for (i, n) in [&b"a"[..], &b"exactly-twenty-two-chr"[..], &long]
            .iter()
            .enumerate()
        {
            d.add(
                n,
                DEnt {
                    child: 10 + i as u64,
                    ftype: 8,
                    slot: 100 * (i as u64 + 1),
                },
            );
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.get(&long).unwrap().child, 12);
        assert_eq!(d.get(b"exactly-twenty-two-chr").unwrap().slot, 200);
        d.add(
            b"a",
            DEnt {
                child: 99,
                ftype: 4,
                slot: 50,
            },
        );
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.iter().map(|(_, e)| e.slot).collect::<Vec<_>>(),
            vec![50, 200, 300]
        );
        assert_eq!(d.remove(b"a").unwrap().ftype, 4);
        assert!(d.get(b"a").is_none() && d.remove(b"a").is_none());
        assert_eq!(d.iter_from(201).count(), 1);
    }
}
