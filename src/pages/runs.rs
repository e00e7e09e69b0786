//! Page descriptors kept as runs: one record stands for consecutive blocks
//! whose `struct page` would be equal but for `index`, which steps by one
//! per block where `mapping` is set (a run of one file's pages) and is the
//! same where it is not (a share count). Every change applies to a block
//! range and splits and merges runs as needed, so what a caller reads for a
//! block is exactly what per-block descriptors changed the same way would
//! hold, while a pin of a contiguous range costs one record, not one per
//! page. Proxy lists are not kept here: a page's proxies are the live pins
//! on it (`Pages::proxies_on`).

use std::collections::BTreeMap;

use super::PageDesc;

/// Block → (run length, descriptor of the run's first block).
#[derive(Default)]
pub(super) struct PageRuns {
    map: BTreeMap<u64, (u64, PageDesc)>,
}

/// The descriptor of the block `k` blocks into a run starting with `d`.
fn shifted(d: &PageDesc, k: u64) -> PageDesc {
    let mut d = d.clone();
    if d.mapping.is_some() {
        d.index += k;
    }
    d
}

/// May a run of `alen` blocks described by `a` take the run `b` right after it?
fn continues(a: &PageDesc, alen: u64, b: &PageDesc) -> bool {
    let index = if a.mapping.is_some() {
        a.index.checked_add(alen)
    } else {
        Some(a.index)
    };
    a.refcount == b.refcount
        && a.pincount == b.pincount
        && a.mapcount == b.mapcount
        && a.mapping == b.mapping
        && a.flags == b.flags
        && index == Some(b.index)
}

impl PageRuns {
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of records (for the memory estimate).
    pub(super) fn records(&self) -> usize {
        self.map.len()
    }

    /// The descriptor of `b` (its `proxies` left empty).
    pub(super) fn get(&self, b: u64) -> Option<PageDesc> {
        let (k, (len, d)) = self.map.range(..=b).next_back()?;
        (b - k < *len).then(|| shifted(d, b - k))
    }

    /// (first block, length, descriptor of the first block) of every run
    /// that meets `[s, e)`, clipped to it.
    pub(super) fn pieces(&self, s: u64, e: u64) -> Vec<(u64, u64, PageDesc)> {
        let mut out = Vec::new();
        let from = self
            .map
            .range(..=s)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(s);
        for (k, (len, d)) in self.map.range(from..e) {
            let (a, z) = ((*k).max(s), (k + len).min(e));
            if a < z {
                out.push((a, z - a, shifted(d, a - k)));
            }
        }
        out
    }

    /// Every block with a descriptor, in order.
    pub(super) fn blocks(&self) -> impl Iterator<Item = (u64, PageDesc)> + '_ {
        self.map
            .iter()
            .flat_map(|(k, (len, d))| (0..*len).map(move |i| (k + i, shifted(d, i))))
    }

    /// Make `b` the first block of a run if a run covers it.
    fn split(&mut self, b: u64) {
        let Some((&k, &mut (ref mut len, ref d))) = self.map.range_mut(..b).next_back() else {
            return;
        };
        if k + *len <= b {
            return;
        }
        let rest = k + *len - b;
        *len = b - k;
        let tail = shifted(d, b - k);
        self.map.insert(b, (rest, tail));
    }

    /// Change every block of `[s, e)`: `f(descriptor, offset from s,
    /// blocks)` is called once per piece of equal descriptors and returns
    /// whether the piece keeps its descriptors. Blocks without one get a
    /// fresh descriptor (refcount 1) first when `create`, else are skipped.
    pub(super) fn update(
        &mut self,
        s: u64,
        e: u64,
        create: bool,
        mut f: impl FnMut(&mut PageDesc, u64, u64) -> bool,
    ) {
        if s >= e {
            return;
        }
        self.split(s);
        self.split(e);
        let existing: Vec<(u64, u64)> = self.map.range(s..e).map(|(k, (l, _))| (*k, *l)).collect();
        let mut pieces = Vec::with_capacity(existing.len() + 1);
        let mut at = s;
        for (k, l) in existing {
            if k > at && create {
                pieces.push((at, k - at, false));
            }
            pieces.push((k, l, true));
            at = k + l;
        }
        if at < e && create {
            pieces.push((at, e - at, false));
        }
        for (k, l, had) in pieces {
            let mut d = match had {
                true => self.map.remove(&k).map(|x| x.1).unwrap_or_default(),
                false => PageDesc {
                    refcount: 1,
                    ..PageDesc::default()
                },
            };
            if f(&mut d, k - s, l) {
                self.map.insert(k, (l, d));
            }
        }
        self.merge(s, e);
    }

    /// Merge neighbouring runs that continue each other, from the run
    /// before `s` to the run at `e`.
    fn merge(&mut self, s: u64, e: u64) {
        let mut cur = match self.map.range(..s).next_back() {
            Some((k, _)) => *k,
            None => s,
        };
        loop {
            let Some((&k, &(klen, ref kd))) = self.map.range(cur..).next() else {
                return;
            };
            let Some((&n, (_, nd))) = self.map.range(k + 1..).next() else {
                return;
            };
            if n > e {
                return;
            }
            if k + klen == n && continues(kd, klen, nd) {
                let (nlen, _) = self.map.remove(&n).unwrap_or_default();
                if let Some(r) = self.map.get_mut(&k) {
                    r.0 += nlen;
                }
                cur = k;
            } else {
                cur = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(ino: u64, index: u64) -> PageDesc {
        PageDesc {
            refcount: 1,
            mapcount: 1,
            mapping: Some(ino),
            index,
            ..PageDesc::default()
        }
    }

    /// A run behaves as the per-block descriptors it stands for: a change
    /// in its middle splits it, undoing the change merges it again.
    #[test]
    fn runs_split_and_merge_as_blocks() {
        let mut r = PageRuns::default();
        r.update(100, 200, true, |d, k, _| {
            *d = owned(7, 10 + k);
            true
        });
        assert_eq!(r.records(), 1);
        assert_eq!(r.get(150), Some(owned(7, 60)));
        assert_eq!(r.get(200), None);
        r.update(150, 151, false, |d, _, _| {
            d.flags |= 1;
            true
        });
        assert_eq!(r.records(), 3);
        assert_eq!(r.get(151), Some(owned(7, 61)));
        assert_eq!(r.get(150).unwrap().flags, 1);
        r.update(150, 151, false, |d, _, _| {
            d.flags = 0;
            true
        });
        assert_eq!(r.records(), 1);
        // Dropping the middle leaves two runs; blocks() lists each block.
        r.update(120, 130, false, |_, _, _| false);
        assert_eq!(r.records(), 2);
        assert_eq!(r.blocks().count(), 90);
        let p = r.pieces(110, 140);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].0, p[0].1, p[0].2.index), (110, 10, 20));
        assert_eq!((p[1].0, p[1].1, p[1].2.index), (130, 10, 40));
        // Without a mapping the index is a share count: equal, not stepping.
        let mut r = PageRuns::default();
        r.update(0, 10, true, |d, _, _| {
            d.index = 2;
            d.mapcount = 2;
            true
        });
        assert_eq!(r.get(9).unwrap().index, 2);
        assert!(r.get(10).is_none() && !r.is_empty());
    }
}
