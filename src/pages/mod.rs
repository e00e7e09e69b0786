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
mod free;
pub mod lease;
mod limits;

use limits::Usage;
pub use limits::{PinLimitHit, PinLimits};

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
    /// The physical block of each pinned page, fixed at pin time (GUP result);
    /// `ZERO_PAGE` where a read pin found a hole.
    pub blocks: Vec<u64>,
    pub write: bool,
    pub longterm: bool,
    pub proxies: Vec<u64>,
    /// Owners (inode, page) of each block when pinned: invariant 1 allows these.
    pub owners_at_pin: Vec<(u64, u64)>,
    /// The device wrote through this pin since the last flush.
    pub dirty: bool,
    /// Sticky invariant violations observed on this pin.
    pub violated: BTreeSet<u8>,
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
    pages: HashMap<u64, PageDesc>,
    proxies: HashMap<u64, Proxy>,
    pins: BTreeMap<u64, Pin>,
    /// (holder, pin id): the pins of one open file, for its release.
    by_holder: BTreeSet<(u64, u64)>,
    /// Pins and pages per user, and pages over all pins.
    usage: HashMap<u32, Usage>,
    pinned_pages: u64,
    limits: PinLimits,
    /// Pinned block → number of pins on it (fast "is pinned" query).
    pinned: HashMap<u64, u32>,
    /// Blocks whose free was deferred (proxy): block → orphan record slot.
    deferred: HashMap<u64, u64>,
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
    pub blocks: Vec<u64>,
    pub write: bool,
    pub longterm: bool,
    /// Ground-truth owners of each block now (from the extent maps).
    pub owners: Vec<Vec<(u64, u64)>>,
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
        (phys..phys + len)
            .filter(|b| s.pinned.contains_key(b))
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
            if !blocks.iter().any(|b| s.pinned.contains_key(b)) {
                return true;
            }
            if self.changed.wait_until(&mut s, deadline).timed_out() {
                return !blocks.iter().any(|b| s.pinned.contains_key(b));
            }
        }
    }

    /// Record a pin. Returns its id, or the cap it would go past.
    pub fn pin(&self, r: PinRequest) -> Result<u64, PinLimitHit> {
        let mut s = self.state.lock();
        let npages = r.blocks.len() as u64;
        Self::fits(&s, r.uid, r.limit_user, npages)?;
        s.pinned_pages += npages;
        let u = s.usage.entry(r.uid).or_default();
        u.pins += 1;
        u.pages += npages;
        let id = s.next_id;
        s.by_holder.insert((r.holder, id));
        s.next_id += 1;
        let mut violated = BTreeSet::new();
        let mut proxies = Vec::new();
        let mut owners_at_pin = Vec::new();
        for (i, b) in r.blocks.iter().enumerate() {
            if *b == ZERO_PAGE {
                // Nothing to count or describe; keep the proxy list parallel.
                if self.model == PageModel::Proxy {
                    proxies.push(0);
                }
                continue;
            }
            let owners = &r.owners[i];
            owners_at_pin.extend(owners.iter().copied());
            // Invariant 3: a write pin's block has one owner when created.
            if r.write && owners.len() > 1 {
                violated.insert(3);
            }
            let model = self.model;
            let pd = s.pages.entry(*b).or_insert_with(|| PageDesc {
                refcount: 1,
                ..PageDesc::default()
            });
            pd.pincount += 1;
            pd.refcount += PIN_BIAS;
            pd.mapcount = owners.len() as u32;
            if owners.len() > 1 {
                pd.flags |= PG_SHARED;
            } else {
                pd.flags &= !PG_SHARED;
            }
            match model {
                // First owner wins and is never updated (dax_associate_entry, 2018).
                PageModel::Legacy => {
                    if pd.mapping.is_none() {
                        let (ino, idx) = owners
                            .iter()
                            .min()
                            .copied()
                            .unwrap_or((r.ino, r.index + i as u64));
                        pd.mapping = Some(ino);
                        pd.index = idx;
                    }
                }
                // Shared pages have no owner, only a share count.
                PageModel::Upstream | PageModel::Proxy => {
                    if owners.len() == 1 {
                        pd.mapping = Some(owners[0].0);
                        pd.index = owners[0].1;
                    } else {
                        pd.mapping = None;
                        pd.index = owners.len() as u64;
                    }
                }
            }
            if model == PageModel::Proxy {
                pd.flags |= PG_DYNAMIC;
            }
            if self.model == PageModel::Proxy {
                let pid = s.next_id;
                s.next_id += 1;
                let px = Proxy {
                    id: pid,
                    page: *b,
                    owner: r.ino,
                    index: r.index + i as u64,
                    holder: r.holder,
                    vaddr: (id << 32) | ((i as u64) << 12),
                    pins: 1,
                    dirty: false,
                };
                s.proxies.insert(pid, px);
                s.pages.get_mut(b).expect("page").proxies.push(pid);
                proxies.push(pid);
            }
            *s.pinned.entry(*b).or_default() += 1;
        }
        s.pins.insert(
            id,
            Pin {
                id,
                holder: r.holder,
                uid: r.uid,
                ino: r.ino,
                index: r.index,
                blocks: r.blocks,
                write: r.write,
                longterm: r.longterm,
                proxies,
                owners_at_pin,
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
        if !s.pinned.contains_key(&block) {
            return Vec::new();
        }
        s.pins
            .values()
            .filter_map(|p| {
                p.blocks.iter().position(|b| *b == block).map(|i| PinRef {
                    id: p.id,
                    holder: p.holder,
                    uid: p.uid,
                    ino: p.ino,
                    index: p.index + i as u64,
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
        let npages = pin.blocks.len() as u64;
        s.pinned_pages -= npages;
        if let Some(u) = s.usage.get_mut(&pin.uid) {
            u.pins -= 1;
            u.pages -= npages;
            if u.pins == 0 {
                s.usage.remove(&pin.uid);
            }
        }
        let mut release = Vec::new();
        for (i, b) in pin.blocks.iter().enumerate() {
            if *b == ZERO_PAGE {
                continue;
            }
            if let Some(c) = s.pinned.get_mut(b) {
                *c -= 1;
                if *c == 0 {
                    s.pinned.remove(b);
                    if let Some(slot) = s.deferred.remove(b) {
                        release.push((*b, slot));
                    }
                }
            }
            let mut drop_page = false;
            if let Some(pd) = s.pages.get_mut(b) {
                pd.pincount = pd.pincount.saturating_sub(1);
                pd.refcount = pd.refcount.saturating_sub(PIN_BIAS);
                if let Some(px) = pin.proxies.get(i) {
                    pd.proxies.retain(|p| p != px);
                }
                if pd.proxies.is_empty() {
                    pd.flags &= !PG_DYNAMIC;
                }
                drop_page = pd.pincount == 0 && pd.flags & (PG_POISONED | PG_DIRTY) == 0;
            }
            if let Some(px) = pin.proxies.get(i) {
                s.proxies.remove(px);
            }
            if drop_page {
                s.pages.remove(b);
            }
        }
        // Dirty data written through the pin: set_page_dirty at unpin.
        if pin.dirty {
            for b in pin.blocks.iter().filter(|b| **b != ZERO_PAGE) {
                let attributed = match self.model {
                    // page->mapping, whoever that is now (maybe another file).
                    PageModel::Legacy => s.pages.get(b).and_then(|p| p.mapping).unwrap_or(pin.ino),
                    // Upstream: a write pin's page was made private to the pinner.
                    // Proxy: the proxy names its owner.
                    PageModel::Upstream | PageModel::Proxy => pin.ino,
                };
                s.dirty.entry(attributed).or_default().insert((*b, pin.ino));
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
        let total = pin.blocks.len() as u64 * bs;
        if off.checked_add(len).is_none_or(|e| e > total) {
            return Err(libc::EINVAL);
        }
        let mut out = Vec::new();
        let mut o = off;
        while o < off + len {
            let i = o / bs;
            let inner = o % bs;
            let n = (bs - inner).min(off + len - o);
            out.push((pin.blocks[i as usize], inner, n));
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
        pin.dirty = true;
        let (ino, index) = (pin.ino, pin.index);
        for (b, owners) in blocks {
            // Invariant 2: the bytes may be visible only in (ino, index + i).
            let i = pin.blocks.iter().position(|x| x == b).unwrap_or(0) as u64;
            if owners.iter().any(|o| *o != (ino, index + i)) {
                pin.violated.insert(2);
            }
        }
        let proxies = pin.proxies.clone();
        s.dirty_pins.insert((ino, id));
        for px in proxies {
            if let Some(p) = s.proxies.get_mut(&px) {
                p.dirty = true;
            }
        }
        for (b, _) in blocks {
            if let Some(pd) = s.pages.get_mut(b) {
                pd.flags |= PG_DIRTY;
            }
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
                .flat_map(|p| p.blocks.iter().copied())
                .filter(|b| *b != ZERO_PAGE)
                .collect();
            out.extend(blocks);
        }
        for b in &out {
            if let Some(pd) = s.pages.get_mut(b) {
                pd.flags &= !PG_DIRTY;
            }
        }
        out
    }

    /// Poison a block. `owners` are its ground-truth owners. Returns the
    /// owners the model notifies (they get EIO on reads of it).
    pub fn poison(&self, block: u64, owners: &[(u64, u64)]) -> Vec<u64> {
        let mut s = self.state.lock();
        let model = self.model;
        let pd = s.pages.entry(block).or_insert_with(|| PageDesc {
            refcount: 1,
            ..PageDesc::default()
        });
        pd.flags |= PG_POISONED;
        if pd.mapping.is_none() && model == PageModel::Legacy {
            if let Some((ino, idx)) = owners.iter().min() {
                pd.mapping = Some(*ino);
                pd.index = *idx;
            }
        }
        let mut notified: Vec<u64> = match model {
            // memory_failure() used page->mapping only.
            PageModel::Legacy => pd.mapping.into_iter().collect(),
            // The filesystem's reverse map (upstream) or extents + proxies (proxy).
            PageModel::Upstream | PageModel::Proxy => owners.iter().map(|o| o.0).collect(),
        };
        if model == PageModel::Proxy {
            let px: Vec<u64> = pd.proxies.clone();
            for p in px {
                if let Some(p) = s.proxies.get(&p) {
                    notified.push(p.owner);
                }
            }
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

    /// The model's answer to "who maps this block?" given the ground truth.
    pub fn rmap(&self, block: u64, truth: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let s = self.state.lock();
        match self.model {
            PageModel::Legacy => match s
                .pages
                .get(&block)
                .and_then(|p| p.mapping.map(|m| (m, p.index)))
            {
                Some(o) => vec![o],
                None => truth.iter().min().copied().into_iter().collect(),
            },
            PageModel::Upstream => truth.to_vec(),
            PageModel::Proxy => {
                let mut v = truth.to_vec();
                if let Some(pd) = s.pages.get(&block) {
                    for px in &pd.proxies {
                        if let Some(p) = s.proxies.get(px) {
                            if !v.contains(&(p.owner, p.index))
                                && truth.contains(&(p.owner, p.index))
                            {
                                v.push((p.owner, p.index));
                            }
                        }
                    }
                }
                v.sort();
                v
            }
        }
    }

    /// A copy of the whole model, for pictures (`Fs::snapshot`).
    pub fn view(&self) -> PagesView {
        let s = self.state.lock();
        PagesView {
            pages: s.pages.iter().map(|(b, p)| (*b, p.clone())).collect(),
            proxies: s.proxies.iter().map(|(i, p)| (*i, p.clone())).collect(),
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
                .flat_map(|p| p.blocks.iter().copied())
                .filter(|b| *b != ZERO_PAGE),
        );
        v
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

    /// DRAM used by the page model (descriptors, proxies, pins), approximately.
    pub fn memory_bytes(&self) -> usize {
        let s = self.state.lock();
        s.pages.len() * (std::mem::size_of::<PageDesc>() + 16 + 8)
            + s.pages
                .values()
                .map(|p| p.proxies.capacity() * 8)
                .sum::<usize>()
            + s.proxies.len() * (std::mem::size_of::<Proxy>() + 16)
            + s.pins
                .values()
                .map(|p| {
                    std::mem::size_of::<Pin>()
                        + p.blocks.capacity() * 8
                        + p.proxies.capacity() * 8
                        + p.owners_at_pin.capacity() * 16
                })
                .sum::<usize>()
            + s.pinned.len() * 24
    }
}
