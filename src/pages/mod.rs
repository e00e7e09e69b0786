//! The page model: the kernel's `struct page` for every data block (allocated
//! lazily), pins (`pin_user_pages`), per-mapping proxy records (the 2018
//! thread's `struct dynamic_page`), poison, and the three page models.
//!
//! This module holds the DRAM state and the policy decisions; the core
//! filesystem (src/fs) consults it on every layout change. PAGES.md maps each
//! structure to its kernel counterpart.
//!
//! Lock order: inode locks → meta → this module's mutex. Nothing here takes an
//! inode or the meta lock while holding the page mutex.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

mod check;
mod device;
mod free;
pub mod lease;
mod limits;
mod pin;
mod runs;

use limits::Usage;
pub use limits::{PinLimitHit, PinLimits};
pub use pin::{push_page, runs_of, Pin, PinRun};
use runs::PageRuns;

/// `GUP_PIN_COUNTING_BIAS`: a pin adds this to the page refcount.
pub const PIN_BIAS: u32 = 1024;

/// Which kernel behaviour to reproduce (mount option `page_model=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PageModel {
    /// The 2018 kernel: first owner wins page->mapping/index; pins are ignored
    /// by truncate, punch, CoW and clone; poison reaches page->mapping only.
    Legacy,
    /// What Linux shipped: share count, write pins unshare first, layout
    /// changes wait for pins (EBUSY after a bound), long-term pins refused,
    /// poison through the filesystem's reverse map.
    Upstream,
    /// The fix from the thread: per-owner proxies; layout changes proceed and
    /// pinned blocks are freed only at the last unpin (deferred, on media).
    #[default]
    Proxy,
}

impl PageModel {
    pub fn name(self) -> &'static str {
        match self {
            PageModel::Legacy => "legacy",
            PageModel::Upstream => "upstream",
            PageModel::Proxy => "proxy",
        }
    }
    pub fn parse(s: &str) -> Option<PageModel> {
        match s {
            "legacy" => Some(PageModel::Legacy),
            "upstream" => Some(PageModel::Upstream),
            "proxy" => Some(PageModel::Proxy),
            _ => None,
        }
    }
}

/// The zero page: what a read pin holds where the file has a hole, as a
/// DAX read fault maps the shared zero page (`dax_load_hole`). No block is
/// allocated, no descriptor made, nothing counted as pinned; a device may
/// read zeros through it and never write it.
pub const ZERO_PAGE: u64 = u64::MAX;

pub const PG_DIRTY: u32 = 1;
pub const PG_SHARED: u32 = 2;
pub const PG_POISONED: u32 = 4;
pub const PG_DYNAMIC: u32 = 8;

/// `struct page` of one data block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageDesc {
    /// `_refcount`: 1 (the block is allocated) + PIN_BIAS per pin.
    pub refcount: u32,
    /// Pins on this page (the bias divided out).
    pub pincount: u32,
    /// `_mapcount`: owners associated with the page (share count upstream).
    pub mapcount: u32,
    /// page->mapping (inode number) and page->index, single-owner fields.
    pub mapping: Option<u64>,
    pub index: u64,
    pub flags: u32,
    /// Proxy records on this page (N:1).
    pub proxies: Vec<u64>,
}

/// `struct dynamic_page`: one owner's view of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub id: u64,
    pub page: u64,
    /// Overrides page->mapping for this owner.
    pub owner: u64,
    /// Overrides page->index (file page offset).
    pub index: u64,
    /// The open file (FUSE file handle) that made it.
    pub holder: u64,
    pub vaddr: u64,
    pub pins: u32,
    pub dirty: bool,
}

/// One pin on a block, as `Pages::pins_on` reports it: `index` is the
/// file page of that block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRef {
    pub id: u64,
    pub holder: u64,
    pub uid: u32,
    pub ino: u64,
    pub index: u64,
    pub write: bool,
    pub longterm: bool,
}

/// Where a device write is attributed (for fsync): (block, attributed inode, pin owner inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyRange {
    pub block: u64,
    pub attributed: u64,
    pub owner: u64,
}

/// A copy of the page model's state at one moment (see `Pages::view`).
#[derive(Clone, Debug, Default)]
pub struct PagesView {
    pub pages: BTreeMap<u64, PageDesc>,
    pub proxies: BTreeMap<u64, Proxy>,
    pub pins: Vec<Pin>,
    /// Blocks whose free waits for their last unpin (proxy).
    pub deferred: BTreeSet<u64>,
    pub poisoned: BTreeSet<u64>,
    /// Poisoned block -> the inodes the model told.
    pub notified: BTreeMap<u64, Vec<u64>>,
    pub dirty: Vec<DirtyRange>,
}

#[derive(Default)]
struct State {
    /// Page descriptors, as runs (runs.rs): a pinned page's pin count says
    /// it is pinned (the fast "is pinned" query).
    pages: PageRuns,
    pins: BTreeMap<u64, Pin>,
    /// (holder, pin id): the pins of one open file, for its release.
    by_holder: BTreeSet<(u64, u64)>,
    /// Pins and pages per user, and pages over all pins.
    usage: HashMap<u32, Usage>,
    pinned_pages: u64,
    limits: PinLimits,
    /// Blocks whose free was deferred (proxy): block → orphan record slot.
    deferred: BTreeMap<u64, u64>,
    poisoned: BTreeSet<u64>,
    /// Owners told about each poisoned block (sticky for invariant 5).
    poison_notified: HashMap<u64, Vec<u64>>,
    /// Dirty ranges by the inode they are charged to: inode -> (block, owner).
    dirty: BTreeMap<u64, BTreeSet<(u64, u64)>>,
    /// (inode, pin id) of the live pins a device wrote through.
    dirty_pins: BTreeSet<(u64, u64)>,
    /// Sticky violations not tied to a live pin.
    violated: BTreeSet<u8>,
    next_id: u64,
}

impl State {
    fn dirty_ranges(&self) -> Vec<DirtyRange> {
        self.dirty
            .iter()
            .flat_map(|(a, set)| {
                set.iter().map(|(b, o)| DirtyRange {
                    block: *b,
                    attributed: *a,
                    owner: *o,
                })
            })
            .collect()
    }

    fn is_pinned(&self, b: u64) -> bool {
        self.pages.get(b).is_some_and(|d| d.pincount > 0)
    }

    /// The proxy records on `block`, oldest first: one per live pin on it
    /// (proxy model). A page's proxy list is exactly that (each pin added
    /// its own and removed it at unpin), so it is not stored per page.
    fn proxies_on(&self, block: u64) -> Vec<Proxy> {
        let mut v = Vec::new();
        for p in self.pins.values() {
            for r in &p.runs {
                if r.proxy != 0
                    && r.block != ZERO_PAGE
                    && (r.block..r.block + r.len).contains(&block)
                {
                    v.push(proxy_of(p, r, block - r.block));
                }
            }
        }
        v
    }

    /// Every page descriptor, block by block, with its proxy list.
    fn page_descs(&self) -> BTreeMap<u64, PageDesc> {
        let mut m: BTreeMap<u64, PageDesc> = self.pages.blocks().collect();
        for p in self.pins.values() {
            for r in p.runs.iter().filter(|r| r.proxy != 0) {
                for k in 0..r.len {
                    if let Some(d) = m.get_mut(&(r.block + k)) {
                        d.proxies.push(r.proxy + k);
                    }
                }
            }
        }
        m
    }
}

/// Proxy record `k` of run `r` of pin `p`.
fn proxy_of(p: &Pin, r: &PinRun, k: u64) -> Proxy {
    let i = r.off + k;
    Proxy {
        id: r.proxy + k,
        page: r.block + k,
        owner: p.ino,
        index: p.index + i,
        holder: p.holder,
        vaddr: (p.id << 32) | (i << 12),
        pins: 1,
        dirty: p.dirty,
    }
}

/// The model's reverse map of a block whose descriptor is `pd`, given the
/// ground truth and the (owner, index) of each proxy on it.
fn rmap_of(
    model: PageModel,
    pd: Option<&PageDesc>,
    truth: &[(u64, u64)],
    proxies: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    match model {
        PageModel::Legacy => match pd.and_then(|p| p.mapping.map(|m| (m, p.index))) {
            Some(o) => vec![o],
            None => truth.iter().min().copied().into_iter().collect(),
        },
        PageModel::Upstream => truth.to_vec(),
        PageModel::Proxy => {
            let mut v = truth.to_vec();
            for o in proxies {
                if !v.contains(o) && truth.contains(o) {
                    v.push(*o);
                }
            }
            v.sort();
            v
        }
    }
}

/// Sorted blocks as ranges (first, end).
fn ranges(blocks: &[u64]) -> Vec<(u64, u64)> {
    let mut v: Vec<u64> = blocks.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for b in v {
        match out.last_mut() {
            Some(r) if r.1 == b => r.1 += 1,
            _ => out.push((b, b + 1)),
        }
    }
    out
}

pub struct Pages {
    pub model: PageModel,
    /// Upstream's bound on waiting for pins (break_layouts), then EBUSY.
    pub layout_timeout: Duration,
    state: Mutex<State>,
    changed: Condvar,
    /// Fast path for the I/O paths: any pins / poisoned blocks at all?
    npins: AtomicUsize,
    npoisoned: AtomicUsize,
    /// Direct-access leases (short-term pins, recalled, never waited for).
    pub leases: lease::Leases,
}

/// A new pin's description, as the filesystem resolved it.
pub struct PinRequest {
    pub holder: u64,
    pub uid: u32,
    /// Whether the per-user caps apply (not to CAP_IPC_LOCK, as RLIMIT_MEMLOCK).
    pub limit_user: bool,
    pub ino: u64,
    pub index: u64,
    /// The pages (their blocks, `ZERO_PAGE` in holes) and the ground-truth
    /// owners of each block now (from the extent maps), as runs
    /// (`push_page`, `runs_of`).
    pub runs: Vec<PinRun>,
    pub write: bool,
    pub longterm: bool,
}

impl Pages {
    pub fn new(model: PageModel, layout_timeout: Duration) -> Pages {
        Pages {
            model,
            layout_timeout,
            state: Mutex::new(State {
                next_id: 1,
                limits: PinLimits::UNLIMITED,
                ..State::default()
            }),
            changed: Condvar::new(),
            npins: AtomicUsize::new(0),
            npoisoned: AtomicUsize::new(0),
            leases: lease::Leases::default(),
        }
    }

    pub fn pin_count(&self) -> usize {
        self.npins.load(Ordering::Relaxed)
    }

    pub fn any_pins(&self) -> bool {
        self.npins.load(Ordering::Relaxed) > 0
    }

    pub fn any_poisoned(&self) -> bool {
        self.npoisoned.load(Ordering::Relaxed) > 0
    }

    /// Is any block of `[phys, phys+len)` pinned?
    pub fn pinned_in(&self, phys: u64, len: u64) -> Vec<u64> {
        if !self.any_pins() {
            return Vec::new();
        }
        let s = self.state.lock();
        s.pages
            .pieces(phys, phys.saturating_add(len))
            .into_iter()
            .filter(|(_, _, d)| d.pincount > 0)
            .flat_map(|(b, n, _)| b..b + n)
            .collect()
    }

    /// upstream's break_layouts: wait until none of `blocks` is pinned, at most
    /// `layout_timeout`; false on timeout (the caller fails with EBUSY).
    pub fn wait_unpinned(&self, blocks: &[u64]) -> bool {
        if !self.any_pins() {
            return true;
        }
        let deadline = std::time::Instant::now() + self.layout_timeout;
        let mut s = self.state.lock();
        loop {
            if !blocks.iter().any(|b| s.is_pinned(*b)) {
                return true;
            }
            if self.changed.wait_until(&mut s, deadline).timed_out() {
                return !blocks.iter().any(|b| s.is_pinned(*b));
            }
        }
    }

    /// Record a pin. Returns its id, or the cap it would go past.
    pub fn pin(&self, r: PinRequest) -> Result<u64, PinLimitHit> {
        let mut s = self.state.lock();
        let npages = r.runs.iter().map(|x| x.len).sum::<u64>();
        Self::fits(&s, r.uid, r.limit_user, npages)?;
        s.pinned_pages += npages;
        let u = s.usage.entry(r.uid).or_default();
        u.pins += 1;
        u.pages += npages;
        let id = s.next_id;
        s.by_holder.insert((r.holder, id));
        s.next_id += 1;
        let mut violated = BTreeSet::new();
        let model = self.model;
        let mut runs = r.runs;
        for run in runs.iter_mut() {
            // The zero page: nothing to count or describe.
            if run.block == ZERO_PAGE {
                continue;
            }
            let owners = &run.owners;
            // Invariant 3: a write pin's block has one owner when created.
            if r.write && owners.len() > 1 {
                violated.insert(3);
            }
            let n = owners.len();
            // The least owner of the run's first block; of block k, shifted by k.
            let least = owners
                .iter()
                .min()
                .copied()
                .unwrap_or((r.ino, r.index + run.off));
            let end = run.block.saturating_add(run.len);
            s.pages.update(run.block, end, true, |pd, k, _| {
                pd.pincount += 1;
                pd.refcount += PIN_BIAS;
                pd.mapcount = n as u32;
                if n > 1 {
                    pd.flags |= PG_SHARED;
                } else {
                    pd.flags &= !PG_SHARED;
                }
                match model {
                    // First owner wins and is never updated (dax_associate_entry, 2018).
                    PageModel::Legacy => {
                        if pd.mapping.is_none() {
                            pd.mapping = Some(least.0);
                            pd.index = least.1 + k;
                        }
                    }
                    // Shared pages have no owner, only a share count.
                    PageModel::Upstream | PageModel::Proxy => {
                        if n == 1 {
                            pd.mapping = Some(owners[0].0);
                            pd.index = owners[0].1 + k;
                        } else {
                            pd.mapping = None;
                            pd.index = n as u64;
                        }
                    }
                }
                if model == PageModel::Proxy {
                    pd.flags |= PG_DYNAMIC;
                }
                true
            });
            if model == PageModel::Proxy {
                // One record stands for the run's proxies, ids consecutive.
                run.proxy = s.next_id;
                s.next_id += run.len;
            }
        }
        s.pins.insert(
            id,
            Pin {
                id,
                holder: r.holder,
                uid: r.uid,
                ino: r.ino,
                index: r.index,
                pages: npages,
                runs,
                write: r.write,
                longterm: r.longterm,
                dirty: false,
                violated,
            },
        );
        self.npins.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    pub fn get_pin(&self, id: u64) -> Option<Pin> {
        self.state.lock().pins.get(&id).cloned()
    }

    pub fn pins(&self) -> Vec<Pin> {
        self.state.lock().pins.values().cloned().collect()
    }

    /// The ids of every live pin.
    pub fn pin_ids(&self) -> Vec<u64> {
        self.state.lock().pins.keys().copied().collect()
    }

    /// The holder and inode of pin `id` (no copy of its pages).
    pub fn pin_owner(&self, id: u64) -> Option<(u64, u64)> {
        self.state.lock().pins.get(&id).map(|p| (p.holder, p.ino))
    }

    /// The pins made through `holder`: O(its pins), not O(all pins).
    pub fn pins_of_holder(&self, holder: u64) -> Vec<u64> {
        self.state
            .lock()
            .by_holder
            .range((holder, 0)..=(holder, u64::MAX))
            .map(|(_, id)| *id)
            .collect()
    }

    /// The pins that hold `block` (no copies of their page lists).
    pub fn pins_on(&self, block: u64) -> Vec<PinRef> {
        let s = self.state.lock();
        if !s.is_pinned(block) {
            return Vec::new();
        }
        s.pins
            .values()
            .filter_map(|p| {
                p.position(block).map(|i| PinRef {
                    id: p.id,
                    holder: p.holder,
                    uid: p.uid,
                    ino: p.ino,
                    index: p.index + i,
                    write: p.write,
                    longterm: p.longterm,
                })
            })
            .collect()
    }

    /// Drop a pin. Returns the deferred blocks whose last pin this was
    /// (block, orphan slot): the caller frees them on media.
    pub fn unpin(&self, id: u64) -> Option<(Pin, Vec<(u64, u64)>)> {
        let mut s = self.state.lock();
        let pin = s.pins.remove(&id)?;
        self.npins.fetch_sub(1, Ordering::Relaxed);
        s.by_holder.remove(&(pin.holder, id));
        s.dirty_pins.remove(&(pin.ino, id));
        let npages = pin.pages;
        s.pinned_pages -= npages;
        if let Some(u) = s.usage.get_mut(&pin.uid) {
            u.pins -= 1;
            u.pages -= npages;
            if u.pins == 0 {
                s.usage.remove(&pin.uid);
            }
        }
        let mut release = Vec::new();
        let proxy_model = self.model == PageModel::Proxy;
        for run in pin.runs.iter().filter(|r| r.block != ZERO_PAGE) {
            let start = run.block;
            let mut unpinned: Vec<(u64, u64)> = Vec::new();
            s.pages
                .update(start, start.saturating_add(run.len), false, |pd, k, n| {
                    let was = pd.pincount;
                    pd.pincount = pd.pincount.saturating_sub(1);
                    pd.refcount = pd.refcount.saturating_sub(PIN_BIAS);
                    if was > 0 && pd.pincount == 0 {
                        unpinned.push((start + k, start + k + n));
                    }
                    // Its proxies are the other pins' on it (proxies_on).
                    if !proxy_model || pd.pincount == 0 {
                        pd.flags &= !PG_DYNAMIC;
                    }
                    !(pd.pincount == 0 && pd.flags & (PG_POISONED | PG_DIRTY) == 0)
                });
            for (a, z) in unpinned {
                let hit: Vec<(u64, u64)> = s.deferred.range(a..z).map(|(b, x)| (*b, *x)).collect();
                for (b, slot) in hit {
                    s.deferred.remove(&b);
                    release.push((b, slot));
                }
            }
        }
        // Dirty data written through the pin: set_page_dirty at unpin.
        if pin.dirty {
            for b in pin.blocks().filter(|b| *b != ZERO_PAGE) {
                let attributed = match self.model {
                    // page->mapping, whoever that is now (maybe another file).
                    PageModel::Legacy => s.pages.get(b).and_then(|p| p.mapping).unwrap_or(pin.ino),
                    // Upstream: a write pin's page was made private to the pinner.
                    // Proxy: the proxy names its owner.
                    PageModel::Upstream | PageModel::Proxy => pin.ino,
                };
                s.dirty.entry(attributed).or_default().insert((b, pin.ino));
            }
        }
        for v in &pin.violated {
            s.violated.insert(*v);
        }
        drop(s);
        self.changed.notify_all();
        Some((pin, release))
    }

    /// Record a deferred free (proxy model): block → its orphan record slot.
    pub fn deferred(&self, block: u64, slot: u64) {
        self.state.lock().deferred.insert(block, slot);
    }

    /// The model's answer to "who maps this block?" given the ground truth.
    pub fn rmap(&self, block: u64, truth: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let s = self.state.lock();
        let pd = s.pages.get(block);
        let proxies: Vec<(u64, u64)> = match (self.model, &pd) {
            (PageModel::Proxy, Some(_)) => s
                .proxies_on(block)
                .iter()
                .map(|p| (p.owner, p.index))
                .collect(),
            _ => Vec::new(),
        };
        rmap_of(self.model, pd.as_ref(), truth, &proxies)
    }

    /// A copy of the whole model, page by page, for pictures (`Fs::snapshot`).
    pub fn view(&self) -> PagesView {
        let s = self.state.lock();
        let proxies = s
            .pins
            .values()
            .flat_map(|p| {
                p.runs
                    .iter()
                    .filter(|r| r.proxy != 0)
                    .flat_map(move |r| (0..r.len).map(move |k| proxy_of(p, r, k)))
            })
            .map(|x| (x.id, x))
            .collect();
        PagesView {
            pages: s.page_descs(),
            proxies,
            pins: s.pins.values().cloned().collect(),
            deferred: s.deferred.keys().copied().collect(),
            poisoned: s.poisoned.clone(),
            notified: s
                .poison_notified
                .iter()
                .map(|(b, v)| (*b, v.clone()))
                .collect(),
            dirty: s.dirty_ranges(),
        }
    }

    /// Forget everything (unmount).
    pub fn clear(&self) {
        let mut s = self.state.lock();
        *s = State {
            next_id: s.next_id,
            limits: s.limits,
            ..State::default()
        };
        self.npins.store(0, Ordering::Relaxed);
        self.npoisoned.store(0, Ordering::Relaxed);
    }

    /// DRAM used by the page model (descriptor runs, pins and their runs),
    /// approximately: per run of blocks, not per page.
    pub fn memory_bytes(&self) -> usize {
        let s = self.state.lock();
        s.pages.records() * (std::mem::size_of::<(u64, u64, PageDesc)>() + 16)
            + s.pins
                .values()
                .map(|p| {
                    std::mem::size_of::<Pin>()
                        + 48
                        + p.runs.capacity() * std::mem::size_of::<PinRun>()
                        + p.runs
                            .iter()
                            .map(|r| r.owners.capacity() * 16)
                            .sum::<usize>()
                })
                .sum::<usize>()
            + s.deferred.len() * 24
    }
}
