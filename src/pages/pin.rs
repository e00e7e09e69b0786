//! A pin as runs of its range: what a pin holds costs DRAM per run of
//! consecutive blocks (and per run of holes), not per page.

use std::collections::BTreeSet;

use super::ZERO_PAGE;

/// Pages `off .. off+len` of a pin: blocks `block ..` (or the zero page
/// for each), and the owners each had at pin time: page `off + k` sat in
/// block `block + k`, and each owner `(ino, index)` of the first mapped
/// `(ino, index + k)` for it. In the proxy model, `proxy` is the id of
/// the first page's proxy record and page `off + k` has proxy `proxy + k`
/// (0: none, as for the zero page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRun {
    pub off: u64,
    pub block: u64,
    pub len: u64,
    pub owners: Vec<(u64, u64)>,
    pub proxy: u64,
}

impl PinRun {
    /// Does page `block` of this run continue it (owners shifted alike)?
    fn takes(&self, block: u64, owners: &[(u64, u64)]) -> bool {
        if self.block == ZERO_PAGE || block == ZERO_PAGE {
            return self.block == block;
        }
        self.block.checked_add(self.len) == Some(block)
            && owners.len() == self.owners.len()
            && owners
                .iter()
                .zip(&self.owners)
                .all(|(o, f)| o.0 == f.0 && f.1.checked_add(self.len) == Some(o.1))
    }
}

/// Append the next page (its block, or `ZERO_PAGE`, and its owners now) to
/// the runs of a pin being described.
pub fn push_page(runs: &mut Vec<PinRun>, block: u64, owners: Vec<(u64, u64)>) {
    if let Some(last) = runs.last_mut() {
        if last.takes(block, &owners) {
            last.len += 1;
            return;
        }
    }
    let off = runs.last().map(|r| r.off + r.len).unwrap_or(0);
    runs.push(PinRun {
        off,
        block,
        len: 1,
        owners,
        proxy: 0,
    });
}

/// The runs of pages `blocks` whose owners are `owners` (one list per page).
pub fn runs_of(blocks: &[u64], owners: &[Vec<(u64, u64)>]) -> Vec<PinRun> {
    let mut runs = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        push_page(&mut runs, *b, owners.get(i).cloned().unwrap_or_default());
    }
    runs
}

/// One pin: a range of pages of one file, taken through one open file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub id: u64,
    pub holder: u64,
    /// The user charged for it (the caller's fs uid).
    pub uid: u32,
    pub ino: u64,
    /// File page offset of the first page.
    pub index: u64,
    /// Pages pinned.
    pub pages: u64,
    /// The physical blocks, fixed at pin time (GUP result), and their
    /// owners then (invariant 1 allows these), as runs.
    pub runs: Vec<PinRun>,
    pub write: bool,
    pub longterm: bool,
    /// The device wrote through this pin since the last flush.
    pub dirty: bool,
    /// Sticky invariant violations observed on this pin.
    pub violated: BTreeSet<u8>,
}

impl Pin {
    /// The block of every page, in order (`ZERO_PAGE` in holes).
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|r| {
            (0..r.len).map(move |k| match r.block {
                ZERO_PAGE => ZERO_PAGE,
                b => b + k,
            })
        })
    }

    /// The run holding page `i` of the pin.
    fn run_at(&self, i: u64) -> Option<&PinRun> {
        let n = self.runs.partition_point(|r| r.off + r.len <= i);
        self.runs.get(n).filter(|r| r.off <= i)
    }

    /// The block of page `i` of the pin.
    pub fn block_at(&self, i: u64) -> Option<u64> {
        self.run_at(i).map(|r| match r.block {
            ZERO_PAGE => ZERO_PAGE,
            b => b + (i - r.off),
        })
    }

    /// The first page of the pin that holds `block` (never the zero page).
    pub fn position(&self, block: u64) -> Option<u64> {
        self.runs
            .iter()
            .find(|r| r.block != ZERO_PAGE && (r.block..r.block + r.len).contains(&block))
            .map(|r| r.off + (block - r.block))
    }

    /// The proxy id of every page (0 for the zero page); none at all
    /// outside the proxy model.
    pub fn proxy_ids(&self, proxy_model: bool) -> Vec<u64> {
        if !proxy_model {
            return Vec::new();
        }
        self.runs
            .iter()
            .flat_map(|r| (0..r.len).map(move |k| if r.proxy == 0 { 0 } else { r.proxy + k }))
            .collect()
    }

    /// Was `(ino, index)` an owner of one of the pinned blocks at pin time?
    pub fn owned_at_pin(&self, (ino, index): (u64, u64)) -> bool {
        self.runs.iter().filter(|r| r.block != ZERO_PAGE).any(|r| {
            r.owners
                .iter()
                .any(|o| o.0 == ino && index >= o.1 && index - o.1 < r.len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_become_runs_and_read_back_per_page() {
        let blocks = [10, 11, 12, ZERO_PAGE, ZERO_PAGE, 40, 41, 50];
        let owners = vec![
            vec![(5, 0), (6, 3)],
            vec![(5, 1), (6, 4)],
            vec![(5, 2), (6, 5)],
            vec![],
            vec![],
            vec![(5, 5)],
            vec![(5, 6)],
            vec![(5, 7)],
        ];
        let runs = runs_of(&blocks, &owners);
        assert_eq!(runs.len(), 4);
        let p = Pin {
            id: 1,
            holder: 1,
            uid: 0,
            ino: 5,
            index: 0,
            pages: 8,
            runs,
            write: false,
            longterm: false,
            dirty: false,
            violated: BTreeSet::new(),
        };
        assert_eq!(p.blocks().collect::<Vec<_>>(), blocks);
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(p.block_at(i as u64), Some(*b));
        }
        assert_eq!(p.block_at(8), None);
        assert_eq!(p.position(41), Some(6));
        assert_eq!(p.position(ZERO_PAGE), None);
        assert!(p.owned_at_pin((6, 5)) && !p.owned_at_pin((6, 6)));
        assert!(p.owned_at_pin((5, 7)) && !p.owned_at_pin((5, 3)));
    }
}
