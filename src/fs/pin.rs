//! The filesystem side of the page model: pinning file ranges (GUP), device
//! DMA through pins, unpinning (with deferred frees), memory failure
//! (poison), the reverse map, and the invariant checker.

use std::collections::BTreeSet;

use super::*;
use crate::pages::{push_page, PageModel, PinRequest, ZERO_PAGE};

/// Largest pin: 16384 pages (64 MiB). More gives ENOMEM, as GUP would.
/// The number of pins and of pinned pages are capped by `PinLimits`.
pub const MAX_PIN_PAGES: u64 = 16384;
/// The owners a pin may record: 4 per page on average, plus 16. Past it, ENOMEM.
pub const MAX_PIN_OWNERS_PER_PAGE: u64 = 4;
pub const MAX_PIN_OWNERS_EXTRA: u64 = 16;

/// Who asks for a pin, and through what (the FUSE edge fills it in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinCaller {
    /// Charged for the pin (the caller's fs uid).
    pub uid: u32,
    /// The per-user caps apply (not with CAP_IPC_LOCK, as RLIMIT_MEMLOCK).
    pub limit_user: bool,
    /// The descriptor is open for writing.
    pub fd_writable: bool,
}

impl PinCaller {
    /// The core's own callers (tests, the crash harness): root, no per-user cap.
    pub const TRUSTED: PinCaller = PinCaller {
        uid: 0,
        limit_user: false,
        fd_writable: true,
    };
}

/// One owner of a block, for `daxlink owners`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub ino: u64,
    /// `None` where the asker could not look the file up (or it has no name).
    pub path: Option<String>,
    /// Byte offset in the file.
    pub offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinInfo {
    pub id: u64,
    pub ino: u64,
    pub offset: u64,
    pub write: bool,
    pub longterm: bool,
    pub holder: u64,
}

/// The result of a memory failure: the block, the inodes the model told,
/// and every (inode, page) that maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poisoned {
    pub block: u64,
    pub notified: Vec<u64>,
    pub owners: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnersReport {
    pub block: u64,
    /// As the page model's reverse map answers.
    pub owners: Vec<Owner>,
    /// Owners left out because the asker could not read them.
    pub hidden_owners: usize,
    pub pins: Vec<PinInfo>,
    /// Direct-access leases on the owners shown (short-term pins, with the
    /// process holding each).
    pub leases: Vec<crate::pages::lease::Lease>,
    pub poisoned: bool,
}

impl Fs {
    /// Pin `len` bytes at `off` of `ino` through the open file `holder`
    /// (pin_user_pages), as a trusted caller (`PinCaller::TRUSTED`).
    pub fn pin(
        &self,
        ino: u64,
        holder: u64,
        off: u64,
        len: u64,
        write: bool,
        longterm: bool,
    ) -> FsResult<u64> {
        self.pin_as(ino, holder, off, len, (write, longterm), PinCaller::TRUSTED)
    }

    /// Pin for `by`. Refused (ENOMEM) past the caps on pins and pinned pages.
    /// A write pin faults its holes in (allocates them) and, in the upstream
    /// and proxy models, is made private first. A read pin allocates nothing
    /// and changes no time: a hole gets the zero page. Upstream refuses
    /// long-term pins, and any pin through a descriptor not open for
    /// writing (it outlives the call, so it is a long-term pin in effect,
    /// and it would let a reader stall the owner's truncate); its read pins
    /// of shared blocks unshare them first, so that a pin never holds a
    /// block another file maps (PAGES.md).
    pub fn pin_as(
        &self,
        ino: u64,
        holder: u64,
        off: u64,
        len: u64,
        (write, longterm): (bool, bool),
        by: PinCaller,
    ) -> FsResult<u64> {
        if len == 0 {
            return Err(FsError::Invalid);
        }
        let first = off / BS;
        let end = off.checked_add(len).ok_or(FsError::Invalid)?.div_ceil(BS);
        if end - first > MAX_PIN_PAGES {
            return Err(FsError::NoMemory);
        }
        self.pages
            .may_pin(by.uid, by.limit_user, end - first)
            .map_err(|hit| refused(ino, by.uid, hit))?;
        let upstream = self.pages.model == PageModel::Upstream;
        if upstream && (longterm || !by.fd_writable) {
            // check_vma_flags(): FOLL_LONGTERM on fsdax is refused.
            return Err(FsError::NotSupported);
        }
        {
            let a = self.getattr(ino)?;
            if a.is_dir() {
                return Err(FsError::IsDir);
            }
            if a.mode & libc::S_IFMT != libc::S_IFREG || off + len > a.size {
                return Err(FsError::Invalid);
            }
        }
        if write {
            // A write fault allocates: holes get (zeroed) blocks.
            self.fallocate(
                ino,
                first * BS,
                (end - first) * BS,
                libc::FALLOC_FL_KEEP_SIZE,
            )?;
        }
        let r = self.get(ino)?;
        let mut g = r.write()?;
        if write {
            g.not_immutable()?;
        }
        let unshare = match self.pages.model {
            PageModel::Legacy => false,
            PageModel::Proxy => write,
            PageModel::Upstream => write || self.any_shared(&g, first, end),
        };
        if unshare {
            // A write fault on a shared DAX extent copies first (dax_iomap_copy_around).
            self.unshare_steps(&mut g, first * BS, end * BS)?;
        }
        // Every owner of every page is recorded (mapcount, invariant 1's
        // oracle): within a budget, so that blocks shared by thousands of
        // clones cannot make one pin cost unbounded DRAM or time. Pages
        // are recorded as runs (consecutive blocks whose owners step
        // alike, or holes), so a pin costs DRAM per run, not per page.
        let budget = MAX_PIN_OWNERS_PER_PAGE * (end - first) + MAX_PIN_OWNERS_EXTRA;
        let mut recorded = 0u64;
        let mut runs = Vec::new();
        for l in first..end {
            let b = match g.find(l) {
                Some((s, e)) => e.phys + (l - s),
                None if !write => ZERO_PAGE,
                None => return Err(FsError::Busy),
            };
            let o = match b {
                ZERO_PAGE => Vec::new(),
                b => self.owners_of(b),
            };
            recorded += o.len() as u64;
            if recorded > budget {
                log::info!("pin of inode {ino}: its pages have too many owners (ENOMEM)");
                return Err(FsError::NoMemory);
            }
            push_page(&mut runs, b, o);
        }
        let id = self
            .pages
            .pin(PinRequest {
                holder,
                uid: by.uid,
                limit_user: by.limit_user,
                ino,
                index: first,
                runs,
                write,
                longterm,
            })
            .map_err(|hit| refused(ino, by.uid, hit))?;
        log::debug!("pin {id}: inode {ino} pages {first}..{end} write={write} longterm={longterm}");
        Ok(id)
    }

    /// Does any block of logical blocks `[first, end)` of `g` have another owner?
    fn any_shared(&self, g: &Inode, first: u64, end: u64) -> bool {
        let m = self.meta.lock();
        g.segments(first, end).into_iter().any(|(_, n, p)| {
            p.is_some_and(|p| {
                ctx::ref_pieces(&m.refs, p, n)
                    .into_iter()
                    .any(|(_, _, c)| c > 1)
            })
        })
    }

    /// Drop a pin; blocks whose free was deferred on it are freed now.
    pub fn unpin(&self, id: u64) -> FsResult<()> {
        // Under the meta lock: a transaction that is deferring one of this
        // pin's blocks (Ctx::blocks_free) registers the deferral before we
        // look for it, so the last unpin always finds and frees it.
        let (_pin, release) = {
            let _m = nowait::lock(&self.meta)?;
            nowait::changing();
            self.pages.unpin(id).ok_or(FsError::NotFound)?
        };
        if release.is_empty() {
            return Ok(());
        }
        let mut ctx = self.ctx()?;
        for (b, slot) in &release {
            ctx.blocks_free(*b, 1)?;
            ctx.slot_free(RecKind::Orphan, *slot);
        }
        ctx.commit()?;
        log::debug!("unpin {id}: freed {} deferred block(s)", release.len());
        Ok(())
    }

    /// Drop every pin made through `holder` (its open file was released).
    pub fn unpin_holder(&self, holder: u64) -> FsResult<()> {
        for id in self.pages.pins_of_holder(holder) {
            self.unpin(id)?;
        }
        Ok(())
    }

    /// A device writes `data` at byte `off` of the pinned range: straight into
    /// the blocks the pin holds, bypassing the write path and copy-on-write.
    /// The stores are not flushed (they sit in the CPU cache until an fsync of
    /// the file they are attributed to). Returns the inodes that map the
    /// written blocks now (whose cached pages must be dropped).
    pub fn dma_write(&self, id: u64, off: u64, data: &[u8]) -> FsResult<Vec<u64>> {
        let targets = self
            .pages
            .dma_target(id, off, data.len() as u64, BS)
            .map_err(errno_err)?;
        if targets.iter().any(|(b, _, _)| *b == ZERO_PAGE) {
            // The zero page is shared by every hole: no device writes it.
            return Err(FsError::Perm);
        }
        let owners: Vec<(u64, Vec<(u64, u64)>)> = targets
            .iter()
            .map(|(b, _, _)| (*b, self.owners_of(*b)))
            .collect();
        self.pages.note_dma_write(id, &owners).map_err(errno_err)?;
        let mut done = 0usize;
        for (b, inner, n) in &targets {
            self.media
                .device_write(b * BS + inner, &data[done..done + *n as usize])?;
            done += *n as usize;
        }
        let mut inos: Vec<u64> = owners
            .iter()
            .flat_map(|(_, o)| o.iter().map(|x| x.0))
            .collect();
        inos.sort();
        inos.dedup();
        Ok(inos)
    }

    /// A device reads `len` bytes at `off` of the pinned range.
    pub fn dma_read(&self, id: u64, off: u64, len: u64) -> FsResult<Vec<u8>> {
        let targets = self.pages.dma_target(id, off, len, BS).map_err(errno_err)?;
        let mut out = Vec::with_capacity(len as usize);
        for (b, inner, n) in targets {
            if b == ZERO_PAGE {
                out.resize(out.len() + n as usize, 0);
            } else {
                out.extend(self.media.read_vec(b * BS + inner, n as usize)?);
            }
        }
        Ok(out)
    }

    /// The physical block under byte `off` of `ino` (EINVAL in a hole).
    fn block_under(&self, ino: u64, off: u64) -> FsResult<u64> {
        let r = self.get(ino)?;
        let g = r.read()?;
        let l = off / BS;
        let (s, e) = g.find(l).ok_or(FsError::Invalid)?;
        Ok(e.phys + (l - s))
    }

    /// Memory failure of the block under `off` of `ino`. Its contents are
    /// lost (overwritten with a poison pattern); the owners the model reaches
    /// get EIO on reads of it. Returns (block, notified inodes, all owners).
    pub fn poison(&self, ino: u64, off: u64) -> FsResult<Poisoned> {
        let block = self.block_under(ino, off)?;
        let owners = self.owners_of(block);
        let notified = self.pages.poison(block, &owners);
        let pattern: Vec<u8> = (0..BS)
            .map(|i| if i % 2 == 0 { 0xDE } else { 0xAD })
            .collect();
        self.media.device_write(block * BS, &pattern)?;
        self.media.persist(block * BS, BS)?;
        // Direct readers of the block's owners map it again: a file the
        // model told finds it left out of its map (a hole to the client,
        // whose kernel-path read gets EIO); the others read what is there,
        // as the model says they would.
        let mut inos: Vec<u64> = owners.iter().map(|o| o.0).collect();
        inos.sort_unstable();
        inos.dedup();
        for i in inos {
            if let Ok(r) = self.get(i) {
                if let Ok(_g) = r.write() {
                    self.recall_layout(i);
                }
            }
        }
        log::warn!(
            "memory failure on block {block} ({} model): owners {:?}, notified {:?}",
            self.pages.model.name(),
            owners,
            notified
        );
        Ok(Poisoned {
            block,
            notified,
            owners,
        })
    }

    /// `daxlink owners`: the owners, pins and poison state of the block under
    /// `off` of `ino`, as the page model's reverse map answers. With `who`
    /// (a caller holding `ino` open), it shows only what stat and readdir
    /// would: another owner's inode number, path and pins only if `who` may
    /// read that file and look it up; a path only where `who` could look it
    /// up.
    pub fn owners(
        &self,
        ino: u64,
        off: u64,
        who: Option<&crate::check::acl::Who>,
    ) -> FsResult<OwnersReport> {
        let block = self.block_under(ino, off)?;
        let mut seen: std::collections::HashMap<u64, Option<Option<String>>> = Default::default();
        // None: hidden; Some(path): shown, with the path if it may be looked up.
        let mut look = |i: u64| -> Option<Option<String>> {
            seen.entry(i)
                .or_insert_with(|| match who {
                    None => Some(self.path_of(i).map(|(p, _)| p)),
                    Some(w) if i == ino => Some(self.visible_path(i, w)),
                    Some(w) => self
                        .may_read_ino(i, w)
                        .then(|| self.visible_path(i, w))
                        .flatten()
                        .map(Some),
                })
                .clone()
        };
        let truth = self.owners_of(block);
        let answer = self.pages.rmap(block, &truth);
        let mut owners = Vec::new();
        let mut hidden_owners = 0;
        for (i, idx) in answer {
            match look(i) {
                Some(path) => owners.push(Owner {
                    ino: i,
                    path,
                    offset: idx * BS,
                }),
                None => hidden_owners += 1,
            }
        }
        let pins = self
            .pages
            .pins_on(block)
            .into_iter()
            .filter(|p| look(p.ino).is_some())
            .map(|p| PinInfo {
                id: p.id,
                ino: p.ino,
                offset: p.index * BS,
                write: p.write,
                longterm: p.longterm,
                holder: p.holder,
            })
            .collect();
        let mut shown: Vec<u64> = owners.iter().map(|o: &Owner| o.ino).collect();
        shown.push(ino);
        shown.sort_unstable();
        shown.dedup();
        let leases = shown
            .into_iter()
            .flat_map(|i| self.pages.leases.on(i))
            .collect();
        Ok(OwnersReport {
            block,
            owners,
            hidden_owners,
            pins,
            leases,
            poisoned: self.pages.is_poisoned(block),
        })
    }

    /// May `who` read inode `ino` (mode, owner and access ACL)?
    fn may_read_ino(&self, ino: u64, who: &crate::check::acl::Who) -> bool {
        let Ok(r) = self.get(ino) else { return false };
        let Ok(mut g) = r.write() else { return false };
        let acl = self.access_acl(&mut g);
        let rec = &g.rec;
        crate::check::acl::may_read(who, rec.mode, rec.uid, rec.gid, acl.as_ref())
    }

    /// One path of an inode (relative to the mount root), found by walking the
    /// directory entries, and the directories on it from the root down.
    /// Slow (a scan); for tools.
    pub fn path_of(&self, ino: u64) -> Option<(String, Vec<u64>)> {
        if ino == ROOT_INO {
            return Some(("/".into(), Vec::new()));
        }
        let dirs: Vec<InodeRef> = self.inodes.read().values().cloned().collect();
        let mut parent_name = None;
        for d in dirs {
            let g = d.read().ok()?;
            if let Some(dir) = &g.dir {
                if let Some((n, _)) = dir.iter().find(|(_, e)| e.child == ino) {
                    parent_name = Some((g.ino, String::from_utf8_lossy(n).into_owned()));
                    break;
                }
            }
        }
        let (p, n) = parent_name?;
        let mut path = format!("/{n}");
        let mut chain = vec![p];
        let mut cur = p;
        while cur != ROOT_INO && chain.len() < 4096 {
            let r = self.get(cur).ok()?;
            let g = r.read().ok()?;
            let up = g.dir.as_ref()?.parent;
            drop(g);
            let pr = self.get(up).ok()?;
            let pg = pr.read().ok()?;
            let name = pg
                .dir
                .as_ref()?
                .iter()
                .find(|(_, e)| e.child == cur)?
                .0
                .to_vec();
            path = format!("/{}{path}", String::from_utf8_lossy(&name));
            chain.push(up);
            cur = up;
        }
        chain.reverse();
        Some((path, chain))
    }

    /// The path of `ino` if `who` could look it up: search permission on
    /// every directory from the root down (mode, owner and access ACL), as
    /// path resolution would check. `None` when it could not (or there is
    /// no path).
    pub fn visible_path(&self, ino: u64, who: &crate::check::acl::Who) -> Option<String> {
        let (path, chain) = self.path_of(ino)?;
        for d in chain {
            let r = self.get(d).ok()?;
            let mut g = r.write().ok()?;
            let acl = self.access_acl(&mut g);
            let rec = &g.rec;
            if !crate::check::acl::may_search(who, rec.mode, rec.uid, rec.gid, acl.as_ref()) {
                return None;
            }
        }
        Some(path)
    }

    /// Invariants 1-7 of docs/KERNEL.md section 3 that do not hold right now
    /// (with sticky ones observed earlier).
    pub fn check_invariants(&self) -> BTreeSet<u8> {
        let owners = |b: u64| self.owners_of(b);
        let allocated = |b: u64| self.meta.lock().space.is_used(b);
        self.pages.check(&owners, &allocated)
    }

    /// The layout of `g` is about to change (truncate down, punch, zero
    /// range, clone or dedupe onto it or from it): first every direct-access
    /// lease on it is recalled (a short-term pin, in every model), then
    /// upstream's break_layouts for blocks `[first, end)`: wait (bounded)
    /// until none of them is pinned, else EBUSY. Other models proceed at once.
    pub(super) fn break_layouts(&self, g: &Inode, first: u64, end: u64) -> FsResult<()> {
        self.recall_layout(g.ino);
        if self.pages.model != PageModel::Upstream || !self.pages.any_pins() {
            return Ok(());
        }
        let blocks: Vec<u64> = g
            .segments(first, end.max(first))
            .into_iter()
            .filter_map(|(_, n, p)| p.map(|p| (p, n)))
            .flat_map(|(p, n)| p..p + n)
            .collect();
        if self.pages.wait_unpinned(&blocks) {
            Ok(())
        } else {
            log::info!(
                "inode {}: layout change blocked by pinned pages (EBUSY)",
                g.ino
            );
            Err(FsError::Busy)
        }
    }

    /// Flush the device writes attributed to `ino` (part of fsync).
    pub(super) fn flush_dirty_pages(&self, ino: u64) -> FsResult<()> {
        if !self.pages.any_pins() && self.pages.all_dirty().is_empty() {
            return Ok(());
        }
        for b in self.pages.take_dirty_of(ino) {
            self.media.flush(b * BS, BS)?;
        }
        Ok(())
    }
}

fn refused(ino: u64, uid: u32, hit: crate::pages::PinLimitHit) -> FsError {
    log::info!("pin of inode {ino} by uid {uid} refused: {hit} reached (ENOMEM)");
    FsError::NoMemory
}

fn errno_err(e: i32) -> FsError {
    match e {
        libc::ENOENT => FsError::NotFound,
        libc::EPERM => FsError::Perm,
        _ => FsError::Invalid,
    }
}
