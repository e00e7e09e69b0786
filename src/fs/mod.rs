//! The core filesystem: inodes, extent maps, directories, xattrs, file data.
//!
//! An API returning `FsResult`, usable without FUSE. DRAM indexes (extent
//! B-tree maps, directory hash maps) are rebuilt from the on-media records at
//! mount; every metadata change goes through one journaled transaction ([`Ctx`]).
//!
//! Lock order: `ns` (namespace) → inode locks in ascending inode number →
//! `meta` (allocator, record slots, journal). File data is copied while holding
//! only that file's inode lock.

mod atime;
pub mod flags;
pub mod meta;
mod node;
mod pin;
mod reflink;
mod xattr;

pub use atime::AtimeMode;
pub use pin::{Owner, OwnersReport, PinInfo, Poisoned};
pub use reflink::{DedupeStatus, ExtentInfo, ShareStats};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::chain;
use crate::error::{FsError, FsResult};
use crate::format::{
    self, ftype_byte, DirentRec, ExtentRec, InodeRec, OrphanRec, RecKind, RefcountRec, Roots,
    Superblock, Timespec, XattrMap, BLOCK_SIZE, MAX_FILE_SIZE, MAX_LINKS, MAX_NAME, ROOT_INO,
};
use crate::journal::{Journal, JournalGeometry, Recovery};
use crate::media::Media;
use crate::pages::{PageModel, Pages};
use crate::space::Space;
use meta::{Ctx, Meta, Records};

const BS: u64 = BLOCK_SIZE;
/// Extent records changed per transaction at most when freeing (keeps each
/// transaction far below the smallest journal).
const FREE_BATCH: usize = 1024;
/// Largest xattr value and total per inode.
pub use format::XATTR_VALUE_MAX;
pub const XATTR_TOTAL_MAX: usize = 1 << 20;

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// The creator's umask: applied to a new inode's mode when its parent
    /// has no default ACL (the kernel leaves it to the filesystem).
    pub umask: u32,
}

impl Cred {
    pub const ROOT: Cred = Cred {
        uid: 0,
        gid: 0,
        umask: 0,
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub generation: u32,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// A time to set: a value or "now".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timespec),
}

#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Resume readdir after this entry by passing this offset.
    pub offset: u64,
    pub ino: u64,
    pub mode_type: u32,
    pub name: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext {
    pub phys: u64,
    pub len: u64,
    /// Media offset of the extent record.
    pub slot: u64,
}

#[derive(Clone, Debug)]
struct DEnt {
    child: u64,
    ftype: u8,
    slot: u64,
}

#[derive(Default, Debug)]
struct Dir {
    parent: u64,
    by_name: HashMap<Vec<u8>, DEnt>,
    by_slot: BTreeMap<u64, Vec<u8>>,
}

pub struct Inode {
    pub ino: u64,
    pub rec: InodeRec,
    pub extents: BTreeMap<u64, Ext>,
    pub mapped: u64,
    dir: Option<Dir>,
    xattrs: Option<XattrMap>,
    open: u32,
    orphan_slot: Option<u64>,
}

impl Inode {
    fn new(ino: u64, rec: InodeRec) -> Inode {
        let dir = if rec.mode & libc::S_IFMT == libc::S_IFDIR {
            Some(Dir::default())
        } else {
            None
        };
        Inode {
            ino,
            rec,
            extents: BTreeMap::new(),
            mapped: 0,
            dir,
            xattrs: None,
            open: 0,
            orphan_slot: None,
        }
    }

    fn is_dir(&self) -> bool {
        self.dir.is_some()
    }

    fn ftype(&self) -> u32 {
        self.rec.mode & libc::S_IFMT
    }

    pub fn attr(&self) -> Attr {
        // A directory reports the space its entries take, rounded to blocks (as ext4).
        let size = match &self.dir {
            Some(d) => {
                ((d.by_name.len() as u64 + 2) * format::DIRENT_SIZE as u64).div_ceil(BS) * BS
            }
            None => self.rec.size,
        };
        Attr {
            ino: self.ino,
            size,
            blocks: (self.mapped + self.rec.xattr_blocks as u64) * (BS / 512),
            atime: self.rec.atime,
            mtime: self.rec.mtime,
            ctime: self.rec.ctime,
            crtime: self.rec.crtime,
            mode: self.rec.mode,
            nlink: self.rec.nlink,
            uid: self.rec.uid,
            gid: self.rec.gid,
            rdev: self.rec.rdev,
            generation: self.rec.generation,
        }
    }

    /// The extent containing logical block `l`, if any.
    pub fn find(&self, l: u64) -> Option<(u64, Ext)> {
        self.extents
            .range(..=l)
            .next_back()
            .filter(|(s, e)| l < *s + e.len)
            .map(|(s, e)| (*s, *e))
    }

    /// Mapped pieces and holes covering logical blocks [first, end).
    /// Each item: (logical start, block count, Some(phys) or None for a hole).
    pub fn segments(&self, first: u64, end: u64) -> Vec<(u64, u64, Option<u64>)> {
        let mut out = Vec::new();
        if first >= end {
            return out;
        }
        let mut l = first;
        if let Some((s, e)) = self.find(first) {
            let n = (s + e.len).min(end) - l;
            out.push((l, n, Some(e.phys + (l - s))));
            l += n;
        }
        for (s, e) in self.extents.range(l..end) {
            if *s > l {
                out.push((l, s - l, None));
            }
            let n = (s + e.len).min(end) - s;
            out.push((*s, n, Some(e.phys)));
            l = s + n;
        }
        if l < end {
            out.push((l, end - l, None));
        }
        out
    }
}

type InodeRef = node::Node;
use node::WGuard;

/// Mount-time options the core cares about.
#[derive(Clone, Debug)]
pub struct FsOptions {
    pub read_only: bool,
    pub page_model: PageModel,
    /// upstream model: how long a layout change waits for pins before EBUSY.
    pub layout_timeout: std::time::Duration,
    /// When reads update access times (`fs/atime.rs`).
    pub atime: AtimeMode,
    /// Directory listings never update access times.
    pub nodiratime: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            read_only: false,
            page_model: PageModel::default(),
            layout_timeout: std::time::Duration::from_secs(2),
            atime: AtimeMode::Never,
            nodiratime: false,
        }
    }
}

pub struct Fs {
    pub media: Arc<Media>,
    pub sb: Superblock,
    opts: FsOptions,
    /// Inodes whose access time is newer in DRAM than on media.
    atime_pending: atime::Pending,
    ns: RwLock<()>,
    inodes: RwLock<HashMap<u64, InodeRef>>,
    meta: Mutex<Meta>,
    next_fh: AtomicU64,
    pub recovery: Recovery,
    /// The page model: struct pages, pins, proxies, poison.
    pub pages: Pages,
    /// DRAM reverse map (physical block start, inode, logical start) -> length,
    /// the ground truth of who maps a block (XFS's rmapbt, in memory).
    rmap: Mutex<BTreeMap<(u64, u64, u64), u64>>,
}

fn now() -> Timespec {
    Timespec::now()
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid);
    }
    if name.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if name == b"." || name == b".." {
        return Err(FsError::Exists);
    }
    Ok(())
}

/// Read both superblocks and pick the valid one with the highest generation.
pub fn read_superblock(media: &Media) -> FsResult<(Superblock, Vec<String>)> {
    let mut best: Option<Superblock> = None;
    let mut problems = Vec::new();
    for (i, off) in [0u64, BS].iter().enumerate() {
        let b = media.read_vec(*off, format::SB_SIZE)?;
        match Superblock::decode(&b, media.len()) {
            Ok(sb) => {
                if best.as_ref().is_none_or(|x| sb.generation > x.generation) {
                    best = Some(sb);
                }
            }
            Err(e) => problems.push(format!("superblock copy {i}: {e}")),
        }
    }
    match best {
        Some(sb) => Ok((sb, problems)),
        None => Err(FsError::Corrupt(format!(
            "no valid superblock ({})",
            problems.join("; ")
        ))),
    }
}

pub fn journal_geometry(sb: &Superblock, media_len: u64) -> JournalGeometry {
    JournalGeometry {
        start_block: sb.journal_start,
        blocks: sb.journal_blocks,
        media_len: media_len.min(sb.total_blocks * BS),
    }
}

/// Write both superblock copies, persisting each before the next.
pub fn write_superblocks(media: &Media, sb: &Superblock) -> FsResult<()> {
    let b = sb.encode();
    media.write_persist(0, &b)?;
    media.write_persist(BS, &b)?;
    Ok(())
}

/// Walk one record chain, calling `f(slot_offset, slot_bytes)` for every slot;
/// a bad link fails (the walker is `chain::walk`).
pub fn walk_chain(
    media: &Media,
    sb: &Superblock,
    kind: RecKind,
    head: u64,
    mut f: impl FnMut(u64, &[u8]) -> FsResult<()>,
) -> FsResult<u64> {
    let read = |blk: u64| -> FsResult<_> { Ok(Some(media.read_vec(blk * BS, BS as usize)?)) };
    let w = chain::walk(sb, kind, head, read, |blk, b| {
        chain::slots(kind, blk, b).try_for_each(|(off, s)| f(off, s))
    })?;
    let Some(bad) = w.broken else {
        return Ok(w.blocks);
    };
    let blk = bad.blk;
    Err(FsError::Corrupt(match bad.problem {
        chain::Problem::Header(e) => format!("record block {blk}: {e}"),
        chain::Problem::Kind(k) => format!("record block {blk} is {k:?} in the {kind:?} chain"),
        _ => {
            format!("{kind:?} record chain points at block {blk} (outside the data area or a loop)")
        }
    }))
}

impl Fs {
    /// Mount: recover the journal, load every index, reclaim orphans.
    pub fn mount(media: Media, opts: FsOptions) -> FsResult<Fs> {
        let (mut sb, problems) = read_superblock(&media)?;
        for p in &problems {
            log::warn!("{p}; using the other copy");
        }
        if sb.needs_read_only() && !(opts.read_only || media.read_only()) {
            return Err(FsError::Corrupt(format!(
                "unknown read-only-compatible features {:#x}: mount with -o ro",
                sb.ro_compat
            )));
        }
        if !sb.clean {
            log::info!("the filesystem was not cleanly unmounted; recovering");
        }
        let ro = opts.read_only || media.read_only();
        let geo = journal_geometry(&sb, media.len());
        if ro {
            let (_, st) = Journal::inspect(&media, geo)?;
            if matches!(st, format::TxState::Committed { .. }) {
                return Err(FsError::Corrupt(
                    "the journal holds a committed transaction that needs replay; mount read-write or run fsck-daxlink -y".into(),
                ));
            }
        }
        let (journal, recovery) = Journal::recover(&media, geo)?;
        match &recovery {
            Recovery::Clean => {}
            Recovery::Replayed { seq, entries } => {
                log::info!("journal: replayed transaction {seq} ({entries} entries)")
            }
            Recovery::DiscardedTorn { seq } => {
                log::info!("journal: discarded torn transaction {seq}")
            }
        }
        let space = Space::load(&media, &sb)?;
        let roots = Roots::decode(&media.read_vec(sb.roots_block * BS, format::ROOTS_SIZE)?)?;

        // Inodes.
        let mut inodes: HashMap<u64, Inode> = HashMap::new();
        let mut free_inos = meta::InoMap::new(sb.inode_count);
        // Read the inode table a chunk at a time.
        let per_chunk = 4096u64;
        let mut ino = 1u64;
        while ino <= sb.inode_count {
            let n = per_chunk.min(sb.inode_count - ino + 1);
            let buf = media.read_vec(sb.inode_offset(ino), (n as usize) * format::INODE_SIZE)?;
            for (i, slot) in buf.chunks_exact(format::INODE_SIZE).enumerate() {
                let this = ino + i as u64;
                let rec = InodeRec::decode(slot)
                    .map_err(|e| FsError::Corrupt(format!("inode {this}: {e}")))?;
                if rec.is_free() {
                    free_inos.insert(this);
                } else {
                    inodes.insert(this, Inode::new(this, rec));
                }
            }
            ino += n;
        }
        match inodes.get(&ROOT_INO) {
            Some(r) if r.is_dir() => {}
            _ => return Err(FsError::Corrupt("root inode is not a directory".into())),
        }
        inodes
            .get_mut(&ROOT_INO)
            .unwrap()
            .dir
            .as_mut()
            .unwrap()
            .parent = ROOT_INO;

        let mut rec = Records {
            heads: roots.heads,
            free: Default::default(),
            blocks: [0; format::NKINDS],
        };
        let data_end = sb.total_blocks;
        let data_start = sb.data_start;
        // Extents.
        let mut free = Vec::new();
        rec.blocks[RecKind::Extent.index()] = walk_chain(
            &media,
            &sb,
            RecKind::Extent,
            roots.heads[RecKind::Extent.index()],
            |off, b| {
                match ExtentRec::decode(b)
                    .map_err(|e| FsError::Corrupt(format!("record at {off:#x}: {e}")))?
                {
                    None => free.push(off),
                    Some(x) => {
                        let ino = inodes.get_mut(&x.ino).ok_or_else(|| {
                            FsError::Corrupt(format!(
                                "extent record at {off:#x} belongs to free inode {}",
                                x.ino
                            ))
                        })?;
                        if x.phys < data_start || x.phys + x.len as u64 > data_end {
                            return Err(FsError::Corrupt(format!(
                                "extent of inode {} at block {} (+{}) lies beyond the device",
                                x.ino, x.phys, x.len
                            )));
                        }
                        let overlap = ino.find(x.logical).map(|(s, _)| s).or_else(|| {
                            ino.extents
                                .range(x.logical..x.logical + x.len as u64)
                                .next()
                                .map(|(s, _)| *s)
                        });
                        if let Some(s) = overlap {
                            return Err(FsError::Corrupt(format!(
                                "inode {}: extents overlap at logical block {s}",
                                x.ino
                            )));
                        }
                        ino.mapped += x.len as u64;
                        ino.extents.insert(
                            x.logical,
                            Ext {
                                phys: x.phys,
                                len: x.len as u64,
                                slot: off,
                            },
                        );
                    }
                }
                Ok(())
            },
        )?;
        free.reverse();
        rec.free[RecKind::Extent.index()] = free;
        // Directory entries.
        let mut free = Vec::new();
        let mut dirents = Vec::new();
        rec.blocks[RecKind::Dirent.index()] = walk_chain(
            &media,
            &sb,
            RecKind::Dirent,
            roots.heads[RecKind::Dirent.index()],
            |off, b| {
                match DirentRec::decode(b)
                    .map_err(|e| FsError::Corrupt(format!("directory entry at {off:#x}: {e}")))?
                {
                    None => free.push(off),
                    Some(d) => dirents.push((off, d)),
                }
                Ok(())
            },
        )?;
        free.reverse();
        rec.free[RecKind::Dirent.index()] = free;
        for (off, d) in dirents {
            let child_mode = match inodes.get(&d.child) {
                Some(c) => c.rec.mode,
                None => {
                    return Err(FsError::Corrupt(format!(
                        "directory entry {:?} in inode {} points at free inode {}",
                        String::from_utf8_lossy(&d.name),
                        d.parent,
                        d.child
                    )))
                }
            };
            if child_mode & libc::S_IFMT == libc::S_IFDIR {
                if let Some(c) = inodes.get_mut(&d.child) {
                    c.dir.as_mut().unwrap().parent = d.parent;
                }
            }
            let p = inodes
                .get_mut(&d.parent)
                .and_then(|p| p.dir.as_mut())
                .ok_or_else(|| {
                    FsError::Corrupt(format!(
                        "directory entry at {off:#x} has a parent {} that is not a directory",
                        d.parent
                    ))
                })?;
            if p.by_name.contains_key(&d.name) {
                return Err(FsError::Corrupt(format!(
                    "directory {} holds the name {:?} twice",
                    d.parent,
                    String::from_utf8_lossy(&d.name)
                )));
            }
            p.by_slot.insert(off, d.name.clone());
            p.by_name.insert(
                d.name,
                DEnt {
                    child: d.child,
                    ftype: d.ftype,
                    slot: off,
                },
            );
        }
        // Orphans.
        let mut free = Vec::new();
        let mut orphans = Vec::new();
        rec.blocks[RecKind::Orphan.index()] = walk_chain(
            &media,
            &sb,
            RecKind::Orphan,
            roots.heads[RecKind::Orphan.index()],
            |off, b| {
                match OrphanRec::decode(b)
                    .map_err(|e| FsError::Corrupt(format!("orphan record at {off:#x}: {e}")))?
                {
                    None => free.push(off),
                    Some(o) => orphans.push((off, o)),
                }
                Ok(())
            },
        )?;
        free.reverse();
        rec.free[RecKind::Orphan.index()] = free;
        // Reference counts of shared ranges.
        let mut free = Vec::new();
        let mut refs: BTreeMap<u64, meta::Ref> = BTreeMap::new();
        rec.blocks[RecKind::Refcount.index()] = walk_chain(
            &media,
            &sb,
            RecKind::Refcount,
            roots.heads[RecKind::Refcount.index()],
            |off, b| {
                match RefcountRec::decode(b)
                    .map_err(|e| FsError::Corrupt(format!("refcount record at {off:#x}: {e}")))?
                {
                    None => free.push(off),
                    Some(r) => {
                        if r.phys < data_start || r.phys + r.len > data_end {
                            return Err(FsError::Corrupt(format!(
                                "refcount record at {off:#x} covers blocks outside the data area"
                            )));
                        }
                        let overlaps = refs
                            .range(..r.phys + r.len)
                            .next_back()
                            .is_some_and(|(k, x)| k + x.len > r.phys);
                        if overlaps {
                            return Err(FsError::Corrupt(format!(
                                "refcount records overlap at block {}",
                                r.phys
                            )));
                        }
                        refs.insert(
                            r.phys,
                            meta::Ref {
                                len: r.len,
                                count: r.count,
                                slot: off,
                            },
                        );
                    }
                }
                Ok(())
            },
        )?;
        free.reverse();
        rec.free[RecKind::Refcount.index()] = free;

        let meta = Meta {
            refs,
            space,
            rec,
            journal,
            free_inos,
            broken: false,
        };
        let fs = Fs {
            media: Arc::new(media),
            sb: sb.clone(),
            pages: Pages::new(opts.page_model, opts.layout_timeout),
            rmap: Mutex::new(BTreeMap::new()),
            opts: FsOptions {
                read_only: ro,
                ..opts.clone()
            },
            ns: RwLock::new(()),
            inodes: RwLock::new(
                inodes
                    .into_iter()
                    .map(|(k, v)| (k, node::Node::new(v)))
                    .collect(),
            ),
            meta: Mutex::new(meta),
            next_fh: AtomicU64::new(1),
            recovery,
            atime_pending: Default::default(),
        };
        {
            let mut rm = fs.rmap.lock();
            for r in fs.inodes.read().values() {
                let g = r.read()?;
                for (l, e) in &g.extents {
                    rm.insert((e.phys, g.ino, *l), e.len);
                }
            }
        }
        if !ro {
            for (off, o) in orphans {
                match o {
                    OrphanRec::Inode(ino) => {
                        let Ok(r) = fs.get(ino) else {
                            log::warn!("orphan record for free inode {ino}: dropping it");
                            let mut ctx = fs.ctx()?;
                            ctx.slot_free(RecKind::Orphan, off);
                            ctx.commit()?;
                            continue;
                        };
                        let mut g = r.write()?;
                        if g.rec.nlink > 0 {
                            log::warn!("orphan record for linked inode {ino}: dropping it");
                            let mut ctx = fs.ctx()?;
                            ctx.slot_free(RecKind::Orphan, off);
                            ctx.commit()?;
                            continue;
                        }
                        g.orphan_slot = Some(off);
                        log::info!("reclaiming orphan inode {ino}");
                        fs.destroy(&mut g)?;
                    }
                    OrphanRec::Truncate { ino, from } => {
                        log::info!("finishing the truncate of inode {ino} from block {from}");
                        match fs.get(ino) {
                            Ok(r) => {
                                let mut g = r.write()?;
                                fs.unmap_tail(&mut g, from, Some(off))?;
                            }
                            Err(_) => {
                                let mut ctx = fs.ctx()?;
                                ctx.slot_free(RecKind::Orphan, off);
                                ctx.commit()?;
                            }
                        }
                    }
                    OrphanRec::Blocks { phys, len } => {
                        log::info!("reclaiming deferred free of blocks {phys}+{len}");
                        let mut ctx = fs.ctx()?;
                        ctx.blocks_free(phys, len)?;
                        ctx.slot_free(RecKind::Orphan, off);
                        ctx.commit()?;
                    }
                }
            }
            sb.clean = false;
            sb.generation += 1;
            sb.mount_count += 1;
            write_superblocks(&fs.media, &sb)?;
        }
        Ok(fs)
    }

    /// Mark the filesystem cleanly unmounted.
    pub fn unmount(&self) -> FsResult<()> {
        if self.opts.read_only {
            return Ok(());
        }
        self.flush_atimes(None)?;
        // Write back device writes still in the CPU cache, as sync at unmount does.
        for b in self.pages.all_dirty() {
            self.media.flush(b * BS, BS)?;
        }
        self.media.fence();
        let broken = self.meta.lock().broken;
        let (mut sb, _) = read_superblock(&self.media)?;
        sb.clean = !broken;
        sb.generation += 1;
        write_superblocks(&self.media, &sb)
    }

    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    fn ctx(&self) -> FsResult<Ctx<'_>> {
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        Ctx::new(&self.media, &self.sb, self.meta.lock(), Some(&self.pages))
    }

    fn get(&self, ino: u64) -> FsResult<InodeRef> {
        self.inodes
            .read()
            .get(&ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    /// Write-lock several inodes in ascending order (deduplicated).
    fn lock_many(&self, inos: &[u64]) -> FsResult<BTreeMap<u64, WGuard>> {
        let set: BTreeSet<u64> = inos.iter().copied().collect();
        let mut out = BTreeMap::new();
        for ino in set {
            out.insert(ino, self.get(ino)?.write()?);
        }
        Ok(out)
    }

    pub fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    // ------------------------------------------------------------------
    // Attributes
    // ------------------------------------------------------------------

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        Ok(self.get(ino)?.read()?.attr())
    }

    /// `name` in directory `parent`. "." and ".." are how the kernel turns a
    /// file handle (inode number + generation) back into an inode it no
    /// longer caches: "." of any inode still linked is that inode (its
    /// generation tells a reused number apart), ".." of a directory its
    /// parent.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        let _ns = self.ns.read();
        let p = self.get(parent)?;
        let child = {
            let g = p.read()?;
            if name == b"." {
                if g.rec.nlink == 0 {
                    return Err(FsError::NotFound);
                }
                return Ok(g.attr());
            }
            let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
            if name == b".." {
                d.parent
            } else {
                d.by_name.get(name).ok_or(FsError::NotFound)?.child
            }
        };
        self.getattr(child)
    }

    /// chmod, chown, utimes and truncate. With `default_permissions` the
    /// kernel has already decided that the caller may make this change and
    /// computed the new mode (set-user-ID and set-group-ID clearing on chmod,
    /// chown, write and truncate included), with the caller's supplementary
    /// groups and capabilities: the daemon applies what it is asked, and
    /// checks only what the kernel cannot know (file type, size limits).
    pub fn setattr(&self, ino: u64, s: &SetAttr) -> FsResult<Attr> {
        let r = self.get(ino)?;
        let mut g = r.write()?;
        // Inode flags: nothing changes on an immutable inode; an append-only
        // one may only have its times set to now (touch).
        let only_touch = s.mode.is_none()
            && s.uid.is_none()
            && s.gid.is_none()
            && s.size.is_none()
            && !matches!(s.atime, Some(SetTime::At(_)))
            && !matches!(s.mtime, Some(SetTime::At(_)));
        g.not_immutable()?;
        if !only_touch {
            g.fully_mutable()?;
        }
        let mut rec = g.rec.clone();
        let t = now();
        if let Some(mode) = s.mode {
            rec.mode = (rec.mode & libc::S_IFMT) | (mode & 0o7777);
        }
        if let Some(uid) = s.uid {
            rec.uid = uid;
        }
        if let Some(gid) = s.gid {
            rec.gid = gid;
        }
        let at = |v: SetTime| match v {
            SetTime::Now => t,
            SetTime::At(ts) => ts,
        };
        if let Some(v) = s.atime {
            rec.atime = at(v);
        }
        if let Some(v) = s.mtime {
            rec.mtime = at(v);
        }
        rec.ctime = t;
        // A mode change rewrites the access ACL's owner, mask (or group) and
        // other entries (POSIX 1003.1e chmod), in the same transaction.
        let acl_blob = match s.mode {
            Some(_) => self.acl_after_chmod(&mut g, rec.mode)?,
            None => None,
        };
        if let Some(size) = s.size {
            if g.is_dir() {
                return Err(FsError::IsDir);
            }
            if g.ftype() != libc::S_IFREG {
                return Err(FsError::Invalid);
            }
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            if s.mtime.is_none() {
                rec.mtime = t;
            }
            self.truncate_locked(&mut g, size, rec, acl_blob)?;
            return Ok(g.attr());
        }
        match acl_blob {
            Some(m) => self.store_xattrs(&mut g, m, rec)?,
            None => {
                let mut ctx = self.ctx()?;
                ctx.put_inode(ino, &rec);
                ctx.commit()?;
                g.rec = rec;
            }
        }
        Ok(g.attr())
    }

    // ------------------------------------------------------------------
    // Namespace
    // ------------------------------------------------------------------

    fn new_inode_rec(&self, parent: &Inode, mode: u32, cred: Cred, rdev: u32) -> InodeRec {
        let t = now();
        let mut mode = mode;
        let mut gid = cred.gid;
        if parent.rec.mode & libc::S_ISGID != 0 {
            gid = parent.rec.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                mode |= libc::S_ISGID;
            }
        }
        InodeRec {
            mode,
            uid: cred.uid,
            gid,
            nlink: if mode & libc::S_IFMT == libc::S_IFDIR {
                2
            } else {
                1
            },
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev,
            ..Default::default()
        }
    }

    /// Create a node of any type (regular, dir, device, fifo, socket, symlink).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: Cred,
    ) -> FsResult<Attr> {
        self.create_node(parent, name, mode, rdev, cred, None)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, cred: Cred) -> FsResult<Attr> {
        self.create_node(parent, name, libc::S_IFDIR | (mode & 0o7777), 0, cred, None)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], cred: Cred) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() >= 4096 {
            return Err(FsError::NameTooLong);
        }
        self.create_node(parent, name, libc::S_IFLNK | 0o777, 0, cred, Some(target))
    }

    fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: Cred,
        link_target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        check_name(name)?;
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let ftype = mode & libc::S_IFMT;
        let mode = if ftype == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        let _ns = self.ns.write();
        let pr = self.get(parent)?;
        let mut pg = pr.write()?;
        {
            let d = pg.dir.as_ref().ok_or(FsError::NotDir)?;
            if pg.rec.nlink == 0 {
                return Err(FsError::NotFound);
            }
            pg.not_immutable()?;
            if d.by_name.contains_key(name) {
                return Err(FsError::Exists);
            }
        }
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && pg.rec.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        let (mode, xattrs) = self.inherit_acls(&mut pg, mode, cred.umask)?;
        let mut rec = self.new_inode_rec(&pg, mode, cred, rdev);
        // Symlink target: its data block is written before the metadata commits.
        let mut target_run = None;
        let mut ctx = self.ctx()?;
        ctx.ensure_slots(RecKind::Dirent, 1)?;
        if link_target.is_some() {
            ctx.ensure_slots(RecKind::Extent, 1)?;
        }
        let ino = ctx.alloc_ino()?;
        let old = InodeRec::decode(
            &self
                .media
                .read_vec(self.sb.inode_offset(ino), format::INODE_SIZE)?,
        )
        .unwrap_or_default();
        rec.generation = old.generation;
        if let Some(t) = link_target {
            let runs = ctx.reserve(1, None)?;
            let (p, _) = runs[0];
            let mut blk = vec![0u8; BS as usize];
            blk[..t.len()].copy_from_slice(t);
            self.media.write_at(p * BS, &blk)?;
            self.media.persist(p * BS, BS)?;
            ctx.blocks_used(p, 1)?;
            rec.size = t.len() as u64;
            target_run = Some(p);
        }
        let slot = ctx.slot_alloc(RecKind::Dirent)?;
        ctx.slot_write(
            slot,
            &DirentRec {
                parent,
                child: ino,
                ftype: ftype_byte(mode),
                name: name.to_vec(),
            }
            .encode(),
        );
        let mut ext_slot = None;
        if let Some(p) = target_run {
            let es = ctx.slot_alloc(RecKind::Extent)?;
            ctx.slot_write(
                es,
                &ExtentRec {
                    ino,
                    logical: 0,
                    phys: p,
                    len: 1,
                }
                .encode(),
            );
            ext_slot = Some((p, es));
        }
        if !xattrs.is_empty() {
            self.stage_xattrs(&mut ctx, &InodeRec::default(), &xattrs, &mut rec)?;
        }
        ctx.put_inode(ino, &rec);
        let mut prec = pg.rec.clone();
        prec.mtime = rec.ctime;
        prec.ctime = rec.ctime;
        if is_dir {
            prec.nlink += 1;
        }
        ctx.put_inode(parent, &prec);
        ctx.commit()?;
        // DRAM.
        pg.rec = prec;
        let d = pg.dir.as_mut().expect("dir");
        d.by_slot.insert(slot, name.to_vec());
        d.by_name.insert(
            name.to_vec(),
            DEnt {
                child: ino,
                ftype: ftype_byte(mode),
                slot,
            },
        );
        let mut inode = Inode::new(ino, rec);
        inode.xattrs = Some(xattrs);
        if let Some(dd) = inode.dir.as_mut() {
            dd.parent = parent;
        }
        if let Some((p, es)) = ext_slot {
            inode.extents.insert(
                0,
                Ext {
                    phys: p,
                    len: 1,
                    slot: es,
                },
            );
            inode.mapped = 1;
            self.rmap.lock().insert((p, ino, 0), 1);
        }
        let attr = inode.attr();
        self.inodes.write().insert(ino, node::Node::new(inode));
        Ok(attr)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let _ns = self.ns.write();
        let mut gs = self.lock_many(&[ino, newparent])?;
        {
            let c = &gs[&ino];
            if c.is_dir() {
                return Err(FsError::Perm);
            }
            c.fully_mutable()?;
            gs[&newparent].not_immutable()?;
            if c.rec.nlink >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            if c.rec.nlink == 0 {
                return Err(FsError::NotFound);
            }
            let p = &gs[&newparent];
            let d = p.dir.as_ref().ok_or(FsError::NotDir)?;
            if d.by_name.contains_key(newname) {
                return Err(FsError::Exists);
            }
        }
        let t = now();
        let mut ctx = self.ctx()?;
        let slot = ctx.slot_alloc(RecKind::Dirent)?;
        let ft = ftype_byte(gs[&ino].rec.mode);
        ctx.slot_write(
            slot,
            &DirentRec {
                parent: newparent,
                child: ino,
                ftype: ft,
                name: newname.to_vec(),
            }
            .encode(),
        );
        let mut crec = gs[&ino].rec.clone();
        crec.nlink += 1;
        crec.ctime = t;
        let mut prec = gs[&newparent].rec.clone();
        prec.mtime = t;
        prec.ctime = t;
        ctx.put_inode(ino, &crec);
        ctx.put_inode(newparent, &prec);
        ctx.commit()?;
        gs.get_mut(&ino).unwrap().rec = crec;
        let p = gs.get_mut(&newparent).unwrap();
        p.rec = prec;
        let d = p.dir.as_mut().unwrap();
        d.by_slot.insert(slot, newname.to_vec());
        d.by_name.insert(
            newname.to_vec(),
            DEnt {
                child: ino,
                ftype: ft,
                slot,
            },
        );
        Ok(gs[&ino].attr())
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let _ns = self.ns.write();
        let child = {
            let p = self.get(parent)?;
            let g = p.read()?;
            let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
            d.by_name.get(name).ok_or(FsError::NotFound)?.child
        };
        let mut gs = self.lock_many(&[parent, child])?;
        gs[&parent].fully_mutable()?;
        let c = &gs[&child];
        c.fully_mutable()?;
        if dir {
            let d = c.dir.as_ref().ok_or(FsError::NotDir)?;
            if !d.by_name.is_empty() {
                return Err(FsError::NotEmpty);
            }
            if child == ROOT_INO {
                return Err(FsError::Busy);
            }
        } else if c.is_dir() {
            return Err(FsError::IsDir);
        }
        let t = now();
        let dent_slot = gs[&parent].dir.as_ref().unwrap().by_name[name].slot;
        let mut ctx = self.ctx()?;
        let mut crec = gs[&child].rec.clone();
        crec.nlink = if dir { 0 } else { crec.nlink.saturating_sub(1) };
        crec.ctime = t;
        let mut orphan = None;
        if crec.nlink == 0 {
            let s = ctx.slot_alloc(RecKind::Orphan)?;
            ctx.slot_write(s, &OrphanRec::Inode(child).encode());
            orphan = Some(s);
        }
        ctx.slot_free(RecKind::Dirent, dent_slot);
        let mut prec = gs[&parent].rec.clone();
        prec.mtime = t;
        prec.ctime = t;
        if dir {
            prec.nlink -= 1;
        }
        ctx.put_inode(child, &crec);
        if parent != child {
            ctx.put_inode(parent, &prec);
        }
        ctx.commit()?;
        {
            let p = gs.get_mut(&parent).unwrap();
            p.rec = prec;
            let d = p.dir.as_mut().unwrap();
            d.by_name.remove(name);
            d.by_slot.remove(&dent_slot);
        }
        let c = gs.get_mut(&child).unwrap();
        c.rec = crec;
        if let Some(s) = orphan {
            c.orphan_slot = Some(s);
            if c.open == 0 {
                self.destroy(c)?;
            }
        }
        Ok(())
    }

    /// Free an inode whose link count is 0 and that nobody has open: extents in
    /// batches (each a consistent state), then the inode and its orphan record.
    fn destroy(&self, g: &mut Inode) -> FsResult<()> {
        let ino = g.ino;
        loop {
            let batch: Vec<(u64, Ext)> = g
                .extents
                .iter()
                .rev()
                .take(FREE_BATCH)
                .map(|(k, v)| (*k, *v))
                .collect();
            let last = batch.len() < FREE_BATCH;
            if last {
                // Leave the inode table before the number can be reused: the
                // commit below returns it to the free inode map, and a create
                // on another thread may take it at once; removing the map
                // entry afterwards would remove that new inode.
                self.inodes.write().remove(&ino);
            }
            let mut ctx = self.ctx()?;
            for (_, e) in &batch {
                ctx.slot_free(RecKind::Extent, e.slot);
                ctx.release(e.phys, e.len)?;
            }
            if last {
                if g.rec.xattr_blocks > 0 {
                    ctx.blocks_free(g.rec.xattr_block, g.rec.xattr_blocks as u64)?;
                }
                if let Some(s) = g.orphan_slot {
                    ctx.slot_free(RecKind::Orphan, s);
                }
                ctx.free_ino(ino, g.rec.generation);
            }
            ctx.commit()?;
            for (l, e) in &batch {
                self.apply_op(g, ExtOp::Remove(*l, e.len));
            }
            if last {
                break;
            }
        }
        g.rec = InodeRec {
            generation: g.rec.generation.wrapping_add(1),
            ..Default::default()
        };
        g.orphan_slot = None;
        Ok(())
    }

    /// rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT
    /// (a whiteout made by this call belongs to root).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.rename_by(parent, name, newparent, newname, flags, Cred::ROOT)
    }

    /// rename(2) on behalf of `cred`, who owns the whiteout that
    /// RENAME_WHITEOUT leaves at the old name (a character device 0:0 with
    /// no permission bits, as overlayfs expects), made in the same
    /// transaction.
    pub fn rename_by(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        cred: Cred,
    ) -> FsResult<()> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let whiteout = flags & libc::RENAME_WHITEOUT != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0
            || (noreplace && exchange)
            || (whiteout && exchange)
        {
            return Err(FsError::Invalid);
        }
        check_name(newname).map_err(|e| {
            if e == FsError::Exists {
                FsError::Busy
            } else {
                e
            }
        })?;
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let _ns = self.ns.write();
        let lookup = |p: u64, n: &[u8]| -> FsResult<Option<DEnt>> {
            let r = self.get(p)?;
            let g = r.read()?;
            let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
            Ok(d.by_name.get(n).cloned())
        };
        let src = lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = lookup(newparent, newname)?;
        if exchange && dst.is_none() {
            return Err(FsError::NotFound);
        }
        if noreplace && dst.is_some() {
            return Err(FsError::Exists);
        }
        if let Some(d) = &dst {
            if d.child == src.child {
                return Ok(());
            }
        }
        // A directory may not move below itself.
        let is_ancestor = |anc: u64, mut node: u64| -> FsResult<bool> {
            loop {
                if node == anc {
                    return Ok(true);
                }
                if node == ROOT_INO {
                    return Ok(false);
                }
                let r = self.get(node)?;
                let p = r.read()?.dir.as_ref().map(|d| d.parent).unwrap_or(ROOT_INO);
                node = p;
            }
        };
        let src_dir = src.ftype as u32 == libc::S_IFDIR >> 12;
        let dst_dir = dst.as_ref().map(|d| d.ftype as u32 == libc::S_IFDIR >> 12);
        if src_dir && is_ancestor(src.child, newparent)? {
            return Err(FsError::Invalid);
        }
        if exchange {
            if dst_dir == Some(true) && is_ancestor(dst.as_ref().unwrap().child, parent)? {
                return Err(FsError::Invalid);
            }
        } else if let Some(dd) = dst_dir {
            if src_dir && !dd {
                return Err(FsError::NotDir);
            }
            if !src_dir && dd {
                return Err(FsError::IsDir);
            }
        }
        let mut inos = vec![parent, newparent, src.child];
        if let Some(d) = &dst {
            inos.push(d.child);
        }
        let mut gs = self.lock_many(&inos)?;
        // Inode flags: the moved inode (and a replaced one) must be fully
        // mutable, the directory losing an entry too, the one gaining one
        // not immutable.
        gs[&src.child].fully_mutable()?;
        gs[&parent].fully_mutable()?;
        gs[&newparent].not_immutable()?;
        if let Some(d) = &dst {
            gs[&d.child].fully_mutable()?;
            gs[&newparent].fully_mutable()?;
        }
        if let (Some(d), Some(true)) = (&dst, dst_dir) {
            if !exchange && !gs[&d.child].dir.as_ref().unwrap().by_name.is_empty() {
                return Err(FsError::NotEmpty);
            }
        }
        let t = now();
        let mut ctx = self.ctx()?;
        ctx.ensure_slots(RecKind::Dirent, 1)?;
        ctx.ensure_slots(RecKind::Orphan, 1)?;
        let mut recs: BTreeMap<u64, InodeRec> =
            gs.iter().map(|(k, v)| (*k, v.rec.clone())).collect();
        let mut orphan = None;
        let mut whiteout_ino = None;
        let new_slot;
        if exchange {
            let d = dst.clone().unwrap();
            // Swap children of the two entries in place.
            ctx.slot_write(
                src.slot,
                &DirentRec {
                    parent,
                    child: d.child,
                    ftype: d.ftype,
                    name: name.to_vec(),
                }
                .encode(),
            );
            ctx.slot_write(
                d.slot,
                &DirentRec {
                    parent: newparent,
                    child: src.child,
                    ftype: src.ftype,
                    name: newname.to_vec(),
                }
                .encode(),
            );
            if parent != newparent {
                if src_dir {
                    recs.get_mut(&parent).unwrap().nlink -= 1;
                    recs.get_mut(&newparent).unwrap().nlink += 1;
                }
                if dst_dir == Some(true) {
                    recs.get_mut(&newparent).unwrap().nlink -= 1;
                    recs.get_mut(&parent).unwrap().nlink += 1;
                }
            }
            recs.get_mut(&d.child).unwrap().ctime = t;
            new_slot = d.slot;
        } else {
            if whiteout {
                // The old name now names a new whiteout inode (same slot).
                let wino = ctx.alloc_ino()?;
                let old = InodeRec::decode(
                    &self
                        .media
                        .read_vec(self.sb.inode_offset(wino), format::INODE_SIZE)?,
                )
                .unwrap_or_default();
                let mut wrec = self.new_inode_rec(&gs[&parent], libc::S_IFCHR, cred, 0);
                wrec.generation = old.generation;
                ctx.slot_write(
                    src.slot,
                    &DirentRec {
                        parent,
                        child: wino,
                        ftype: ftype_byte(libc::S_IFCHR),
                        name: name.to_vec(),
                    }
                    .encode(),
                );
                ctx.put_inode(wino, &wrec);
                whiteout_ino = Some((wino, wrec));
            } else {
                ctx.slot_free(RecKind::Dirent, src.slot);
            }
            let dent = DirentRec {
                parent: newparent,
                child: src.child,
                ftype: src.ftype,
                name: newname.to_vec(),
            };
            if let Some(d) = &dst {
                ctx.slot_write(d.slot, &dent.encode());
                new_slot = d.slot;
                let vr = recs.get_mut(&d.child).unwrap();
                vr.ctime = t;
                if dst_dir == Some(true) {
                    vr.nlink = 0;
                    recs.get_mut(&newparent).unwrap().nlink -= 1;
                } else {
                    vr.nlink -= 1;
                }
                if recs[&d.child].nlink == 0 {
                    let s = ctx.slot_alloc(RecKind::Orphan)?;
                    ctx.slot_write(s, &OrphanRec::Inode(d.child).encode());
                    orphan = Some((d.child, s));
                }
            } else {
                let s = ctx.slot_alloc(RecKind::Dirent)?;
                ctx.slot_write(s, &dent.encode());
                new_slot = s;
            }
            if src_dir && parent != newparent {
                recs.get_mut(&parent).unwrap().nlink -= 1;
                recs.get_mut(&newparent).unwrap().nlink += 1;
            }
        }
        recs.get_mut(&src.child).unwrap().ctime = t;
        for p in [parent, newparent] {
            let r = recs.get_mut(&p).unwrap();
            r.mtime = t;
            r.ctime = t;
        }
        for (ino, r) in &recs {
            if *r != gs[ino].rec {
                ctx.put_inode(*ino, r);
            }
        }
        ctx.commit()?;
        // DRAM.
        for (ino, r) in recs {
            gs.get_mut(&ino).unwrap().rec = r;
        }
        {
            let p = gs.get_mut(&parent).unwrap().dir.as_mut().unwrap();
            p.by_name.remove(name);
            p.by_slot.remove(&src.slot);
        }
        if exchange {
            let d = dst.clone().unwrap();
            let p = gs.get_mut(&parent).unwrap().dir.as_mut().unwrap();
            p.by_name.insert(
                name.to_vec(),
                DEnt {
                    child: d.child,
                    ftype: d.ftype,
                    slot: src.slot,
                },
            );
            p.by_slot.insert(src.slot, name.to_vec());
            if let Some(dd) = gs.get_mut(&d.child).unwrap().dir.as_mut() {
                dd.parent = parent;
            }
        }
        {
            let np = gs.get_mut(&newparent).unwrap().dir.as_mut().unwrap();
            if let Some(d) = &dst {
                np.by_slot.remove(&d.slot);
            }
            np.by_name.insert(
                newname.to_vec(),
                DEnt {
                    child: src.child,
                    ftype: src.ftype,
                    slot: new_slot,
                },
            );
            np.by_slot.insert(new_slot, newname.to_vec());
        }
        if let Some(sd) = gs.get_mut(&src.child).unwrap().dir.as_mut() {
            sd.parent = newparent;
        }
        if let Some((wino, wrec)) = whiteout_ino {
            let p = gs.get_mut(&parent).unwrap().dir.as_mut().unwrap();
            p.by_name.insert(
                name.to_vec(),
                DEnt {
                    child: wino,
                    ftype: ftype_byte(libc::S_IFCHR),
                    slot: src.slot,
                },
            );
            p.by_slot.insert(src.slot, name.to_vec());
            self.inodes
                .write()
                .insert(wino, node::Node::new(Inode::new(wino, wrec)));
        }
        if let Some((victim, s)) = orphan {
            let v = gs.get_mut(&victim).unwrap();
            v.orphan_slot = Some(s);
            if v.open == 0 {
                self.destroy(v)?;
            }
        }
        Ok(())
    }

    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let _ns = self.ns.read();
        let r = self.get(ino)?;
        let g = r.read()?;
        let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry {
                offset: 1,
                ino,
                mode_type: libc::S_IFDIR,
                name: b".".to_vec(),
            });
        }
        if offset < 2 {
            out.push(DirEntry {
                offset: 2,
                ino: d.parent,
                mode_type: libc::S_IFDIR,
                name: b"..".to_vec(),
            });
        }
        for (slot, name) in d.by_slot.range(offset.max(2) + 1..) {
            if out.len() >= max {
                break;
            }
            let e = &d.by_name[name];
            out.push(DirEntry {
                offset: *slot,
                ino: e.child,
                mode_type: (e.ftype as u32) << 12,
                name: name.clone(),
            });
        }
        drop(g);
        if offset == 0 {
            self.touch_atime(ino);
        }
        Ok(out)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let r = self.get(ino)?;
        let g = r.read()?;
        if g.ftype() != libc::S_IFLNK {
            return Err(FsError::Invalid);
        }
        let (_, e) = g
            .find(0)
            .ok_or_else(|| FsError::Corrupt(format!("symlink {ino} has no target block")))?;
        let n = g.rec.size.min(4095) as usize;
        Ok(self.media.read_vec(e.phys * BS, n)?)
    }

    pub fn statfs(&self) -> StatFs {
        let m = self.meta.lock();
        StatFs {
            blocks: m.space.data_blocks(),
            bfree: m.space.free_blocks(),
            files: self.sb.inode_count,
            ffree: m.free_inos.len(),
            bsize: BS as u32,
            namelen: MAX_NAME as u32,
        }
    }

    // ------------------------------------------------------------------
    // Open files
    // ------------------------------------------------------------------

    pub fn open(&self, ino: u64) -> FsResult<u64> {
        let r = self.get(ino)?;
        r.write()?.open += 1;
        Ok(self.new_fh())
    }

    pub fn release(&self, ino: u64) -> FsResult<()> {
        let r = self.get(ino)?;
        let mut g = r.write()?;
        g.open = g.open.saturating_sub(1);
        if g.open == 0 && g.rec.nlink == 0 && g.orphan_slot.is_some() && !self.opts.read_only {
            self.destroy(&mut g)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // File data
    // ------------------------------------------------------------------

    pub fn read(&self, ino: u64, off: u64, size: usize) -> FsResult<Vec<u8>> {
        let r = self.get(ino)?;
        let g = r.read()?;
        let data = self.read_locked(&g, off, size)?;
        drop(g);
        self.touch_atime(ino);
        Ok(data)
    }

    fn read_locked(&self, g: &Inode, off: u64, size: usize) -> FsResult<Vec<u8>> {
        if g.is_dir() {
            return Err(FsError::IsDir);
        }
        if off >= g.rec.size || size == 0 {
            return Ok(Vec::new());
        }
        let n = (g.rec.size - off).min(size as u64) as usize;
        let mut buf = vec![0u8; n];
        let first = off / BS;
        let end = (off + n as u64).div_ceil(BS);
        for (l, cnt, phys) in g.segments(first, end) {
            let Some(p) = phys else { continue };
            if self.pages.any_poisoned() {
                for b in p..p + cnt {
                    if self.pages.poison_check(b, g.ino).0 {
                        log::warn!("inode {}: read of poisoned block {b}: EIO", g.ino);
                        return Err(FsError::Io(format!("block {b} is poisoned")));
                    }
                }
            }
            let seg_start = (l * BS).max(off);
            let seg_end = ((l + cnt) * BS).min(off + n as u64);
            let media_off = p * BS + (seg_start - l * BS);
            self.media.read(
                media_off,
                &mut buf[(seg_start - off) as usize..(seg_end - off) as usize],
            )?;
        }
        Ok(buf)
    }

    /// Write `data` at `off` (or at EOF when `append`). Returns bytes written.
    pub fn write(&self, ino: u64, off: u64, data: &[u8], append: bool) -> FsResult<usize> {
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let r = self.get(ino)?;
        let mut g = r.write()?;
        if g.is_dir() {
            return Err(FsError::IsDir);
        }
        g.not_immutable()?;
        let off = if append || g.append_only() {
            g.rec.size
        } else {
            off
        };
        if data.is_empty() {
            return Ok(0);
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        self.write_locked(&mut g, off, end, Fill::Data(data))?;
        Ok(data.len())
    }

    /// Before a file grows to cover `[size, upto)`: zero whatever is mapped
    /// there. Bytes past EOF are never read, so on media they may hold
    /// anything (an in-place write past EOF whose size change never
    /// committed, blocks preallocated with KEEP_SIZE and written that way, a
    /// truncate's leftovers); every size increase clears them first, persisted
    /// before the growth commits. Shared blocks there are copied first. The
    /// caller then overwrites its own part of the range.
    fn prepare_extend(&self, g: &mut Inode, upto: u64) -> FsResult<()> {
        let size = g.rec.size;
        if upto <= size {
            return Ok(());
        }
        let (first, end) = (size / BS, upto.div_ceil(BS));
        let mapped: Vec<(u64, u64, u64)> = g
            .segments(first, end)
            .into_iter()
            .filter_map(|(l, n, p)| p.map(|p| (l, n, p)))
            .collect();
        if mapped.is_empty() {
            return Ok(());
        }
        let shared = {
            let m = self.meta.lock();
            mapped
                .iter()
                .any(|(_, n, p)| meta::ref_pieces(&m.refs, *p, *n).iter().any(|x| x.2 >= 2))
        };
        if shared {
            self.write_locked(g, size, upto, Fill::Unshare)?;
        }
        for (l, n, p) in g.segments(first, end) {
            let Some(p) = p else { continue };
            let a = (l * BS).max(size);
            let b = ((l + n) * BS).min(upto.div_ceil(BS) * BS);
            if a < b {
                let at = p * BS + (a - l * BS);
                self.media.fill(at, b - a, 0)?;
                self.media.flush(at, b - a)?;
            }
        }
        self.media.fence();
        Ok(())
    }

    /// The write engine. `Fill::Data` writes bytes: holes get fresh zeroed
    /// blocks, unshared mapped blocks are written in place, shared blocks are
    /// copied on write (only the written blocks move; partial blocks keep the
    /// rest of their old bytes). `Fill::Unshare` copies every shared block of
    /// the range to a private one and changes no byte.
    fn write_locked(&self, g: &mut Inode, off: u64, end: u64, fill: Fill<'_>) -> FsResult<()> {
        if matches!(fill, Fill::Data(_)) && end > g.rec.size {
            self.prepare_extend(g, off)?;
        }
        let first = off / BS;
        let lend = end.div_ceil(BS);
        let segs = g.segments(first, lend);
        // Goal: right after the block before the write, to keep files contiguous.
        let goal = first
            .checked_sub(1)
            .and_then(|l| g.find(l))
            .map(|(s, e)| e.phys + (first - 1 - s) + 1);
        struct Piece {
            l: u64,
            n: u64,
            old: Option<u64>,
            cow: bool,
            new: Option<u64>,
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let runs = {
            let mut m = self.meta.lock();
            if m.broken {
                return Err(FsError::ReadOnly);
            }
            for (l, n, phys) in segs {
                match phys {
                    None => {
                        if matches!(fill, Fill::Data(_)) {
                            pieces.push(Piece {
                                l,
                                n,
                                old: None,
                                cow: false,
                                new: None,
                            });
                        }
                    }
                    Some(p) => {
                        for (pp, pl, c) in meta::ref_pieces(&m.refs, p, n) {
                            pieces.push(Piece {
                                l: l + (pp - p),
                                n: pl,
                                old: Some(pp),
                                cow: c >= 2,
                                new: None,
                            });
                        }
                    }
                }
            }
            let need: u64 = pieces
                .iter()
                .filter(|p| p.old.is_none() || p.cow)
                .map(|p| p.n)
                .sum();
            if need == 0 {
                Vec::new()
            } else {
                m.space.reserve_many(need, goal).ok_or(FsError::NoSpace)?
            }
        };
        // Assign reserved runs to the pieces that need new blocks, splitting pieces at run ends.
        let mut assigned: Vec<Piece> = Vec::with_capacity(pieces.len());
        let (mut ri, mut rused) = (0usize, 0u64);
        for p in pieces {
            if p.old.is_some() && !p.cow {
                if matches!(fill, Fill::Data(_)) {
                    assigned.push(p);
                }
                continue;
            }
            let (mut l, mut left, mut old) = (p.l, p.n, p.old);
            while left > 0 {
                let (rp, rl) = runs[ri];
                let take = (rl - rused).min(left);
                assigned.push(Piece {
                    l,
                    n: take,
                    old,
                    cow: p.cow,
                    new: Some(rp + rused),
                });
                rused += take;
                left -= take;
                l += take;
                old = old.map(|o| o + take);
                if rused == rl {
                    ri += 1;
                    rused = 0;
                }
            }
        }
        // Copy the data (only this inode's lock is held).
        for p in &assigned {
            let seg_start = p.l * BS;
            let seg_end = (p.l + p.n) * BS;
            let (ws, we) = match fill {
                Fill::Data(_) => (seg_start.max(off), seg_end.min(end)),
                Fill::Unshare => (seg_start, seg_start),
            };
            let target = p.new.or(p.old).expect("mapped or new");
            if let Some(np) = p.new {
                // Keep the bytes the write does not cover: old ones (CoW) or zeros (hole).
                for (a, b) in [(seg_start, ws), (we.max(ws), seg_end)] {
                    if b <= a {
                        continue;
                    }
                    let dst = np * BS + (a - seg_start);
                    match p.old {
                        Some(op) => {
                            let old = self
                                .media
                                .read_vec(op * BS + (a - seg_start), (b - a) as usize)?;
                            self.media.write_at(dst, &old)?;
                        }
                        None => self.media.fill(dst, b - a, 0)?,
                    }
                }
            }
            if let Fill::Data(data) = fill {
                self.media.write_at(
                    target * BS + (ws - seg_start),
                    &data[(ws - off) as usize..(we - off) as usize],
                )?;
            }
            let (fs, fe) = if p.new.is_some() {
                (seg_start, seg_end)
            } else {
                (ws, we)
            };
            self.media.flush(target * BS + (fs - seg_start), fe - fs)?;
        }
        self.media.fence();
        // Metadata.
        let t = now();
        let mut rec = g.rec.clone();
        if let Fill::Data(_) = fill {
            rec.size = rec.size.max(end);
            rec.mtime = t;
        }
        rec.ctime = t;
        let res = (|| -> FsResult<()> {
            let mut ctx = self.ctx()?;
            let moved = assigned.iter().filter(|p| p.new.is_some()).count();
            let cows = assigned.iter().filter(|p| p.cow).count();
            ctx.ensure_slots(RecKind::Extent, 3 * moved)?;
            ctx.ensure_slots(RecKind::Refcount, 3 * cows)?;
            for (p, l) in &runs {
                ctx.blocks_used(*p, *l)?;
            }
            for p in assigned.iter().filter(|p| p.new.is_some()) {
                if p.old.is_some() {
                    let (ops, _) = self.unmap_blocks(&mut ctx, g, p.l, p.l + p.n, usize::MAX)?;
                    for op in ops {
                        self.apply_op(g, op);
                    }
                }
                // Apply to DRAM as we go so the next mapping can merge with it.
                for op in self.map_blocks(&mut ctx, g, p.l, p.new.unwrap(), p.n)? {
                    self.apply_op(g, op);
                }
            }
            ctx.put_inode(g.ino, &rec);
            ctx.commit()
        })();
        if let Err(e) = res {
            let mut m = self.meta.lock();
            for (p, l) in runs {
                m.space.unreserve(p, l);
            }
            return Err(e);
        }
        g.rec = rec;
        Ok(())
    }

    /// Map logical [l, l+n) to phys [p, p+n) (a hole before), merging with the
    /// previous extent when contiguous. Returns DRAM changes to apply.
    fn map_blocks(
        &self,
        ctx: &mut Ctx<'_>,
        g: &Inode,
        l: u64,
        p: u64,
        n: u64,
    ) -> FsResult<Vec<ExtOp>> {
        let mut ops = Vec::new();
        let mut l = l;
        let mut p = p;
        let mut n = n;
        if let Some((s, e)) = l.checked_sub(1).and_then(|x| g.find(x)) {
            if s + e.len == l && e.phys + e.len == p && e.len + n <= u32::MAX as u64 {
                let ne = Ext {
                    phys: e.phys,
                    len: e.len + n,
                    slot: e.slot,
                };
                ctx.slot_write(
                    e.slot,
                    &ExtentRec {
                        ino: g.ino,
                        logical: s,
                        phys: e.phys,
                        len: ne.len as u32,
                    }
                    .encode(),
                );
                ops.push(ExtOp::Put(s, ne, n));
                return Ok(ops);
            }
        }
        while n > 0 {
            let take = n.min(u32::MAX as u64);
            let slot = ctx.slot_alloc(RecKind::Extent)?;
            ctx.slot_write(
                slot,
                &ExtentRec {
                    ino: g.ino,
                    logical: l,
                    phys: p,
                    len: take as u32,
                }
                .encode(),
            );
            ops.push(ExtOp::Put(
                l,
                Ext {
                    phys: p,
                    len: take,
                    slot,
                },
                take,
            ));
            l += take;
            p += take;
            n -= take;
        }
        Ok(ops)
    }

    /// Remove the mappings of logical blocks [first, end), at most `limit`
    /// extent records touched. Frees the blocks. Returns (DRAM ops, done).
    fn unmap_blocks(
        &self,
        ctx: &mut Ctx<'_>,
        g: &Inode,
        first: u64,
        end: u64,
        limit: usize,
    ) -> FsResult<(Vec<ExtOp>, bool)> {
        let mut ops = Vec::new();
        if first >= end {
            return Ok((ops, true));
        }
        let mut items: Vec<(u64, Ext)> = Vec::new();
        if let Some((s, e)) = g.find(first) {
            if s < first {
                items.push((s, e));
            }
        }
        items.extend(g.extents.range(first..end).map(|(k, v)| (*k, *v)));
        let done = items.len() <= limit;
        for (s, e) in items.into_iter().take(limit) {
            let es = s + e.len;
            let cut_s = s.max(first);
            let cut_e = es.min(end);
            // Free the cut physical range.
            ctx.release(e.phys + (cut_s - s), cut_e - cut_s)?;
            let head = cut_s - s;
            let tail = es - cut_e;
            ops.push(ExtOp::Remove(s, e.len));
            if head > 0 {
                let he = Ext {
                    phys: e.phys,
                    len: head,
                    slot: e.slot,
                };
                ctx.slot_write(
                    e.slot,
                    &ExtentRec {
                        ino: g.ino,
                        logical: s,
                        phys: e.phys,
                        len: head as u32,
                    }
                    .encode(),
                );
                ops.push(ExtOp::Put(s, he, head));
            }
            if tail > 0 {
                let slot = if head > 0 {
                    ctx.slot_alloc(RecKind::Extent)?
                } else {
                    e.slot
                };
                let te = Ext {
                    phys: e.phys + (cut_e - s),
                    len: tail,
                    slot,
                };
                ctx.slot_write(
                    slot,
                    &ExtentRec {
                        ino: g.ino,
                        logical: cut_e,
                        phys: te.phys,
                        len: tail as u32,
                    }
                    .encode(),
                );
                ops.push(ExtOp::Put(cut_e, te, tail));
            }
            if head == 0 && tail == 0 {
                ctx.slot_free(RecKind::Extent, e.slot);
            }
        }
        Ok((ops, done))
    }

    /// Set the size under the inode lock, freeing blocks past the new end.
    /// `rec` carries the other attribute changes to commit. The first
    /// transaction sets the size, zeroes the tail of the new last block (as a
    /// journaled store, so it is atomic with the size) and frees up to a batch
    /// of extents; if more remain, it also records an orphan `Truncate` so a
    /// crash before the last batch is finished at the next mount.
    /// Truncate `g` to `size` with `rec` as its new inode (and, when given,
    /// `xattrs` as its new xattrs: chmod and truncate in one request).
    fn truncate_locked(
        &self,
        g: &mut Inode,
        size: u64,
        mut rec: InodeRec,
        xattrs: Option<XattrMap>,
    ) -> FsResult<()> {
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let old = g.rec.size;
        if size > old {
            self.prepare_extend(g, size)?;
        }
        rec.size = size;
        let first = size.div_ceil(BS);
        if size < old {
            self.break_layouts(g, size / BS, u64::MAX)?;
        }
        // A shared last block is copied first: its tail is zeroed below in place.
        if size < old && !size.is_multiple_of(BS) {
            if let Some((s, e)) = g.find(size / BS) {
                let p = e.phys + (size / BS - s);
                let shared = meta::ref_pieces(&self.meta.lock().refs, p, 1)[0].2 >= 2;
                if shared {
                    let b = size / BS * BS;
                    self.write_locked(g, b, b + 1, Fill::Unshare)?;
                }
            }
        }
        let mut ctx = self.ctx()?;
        ctx.ensure_slots(RecKind::Extent, 1)?;
        ctx.ensure_slots(RecKind::Orphan, 1)?;
        let (ops, done) = if size < old {
            if !size.is_multiple_of(BS) {
                if let Some((s, e)) = g.find(size / BS) {
                    let p = e.phys + (size / BS - s);
                    let inner = size % BS;
                    ctx.tx
                        .write(p * BS + inner, &vec![0u8; (BS - inner) as usize]);
                }
            }
            self.unmap_blocks(&mut ctx, g, first, u64::MAX, FREE_BATCH)?
        } else {
            (Vec::new(), true)
        };
        let mut orphan = None;
        if !done {
            let s = ctx.slot_alloc(RecKind::Orphan)?;
            ctx.slot_write(
                s,
                &OrphanRec::Truncate {
                    ino: g.ino,
                    from: first,
                }
                .encode(),
            );
            orphan = Some(s);
        }
        if let Some(m) = &xattrs {
            self.stage_xattrs(&mut ctx, &g.rec, m, &mut rec)?;
        }
        ctx.put_inode(g.ino, &rec);
        ctx.commit()?;
        g.rec = rec;
        if xattrs.is_some() {
            g.xattrs = xattrs;
        }
        for op in ops {
            self.apply_op(g, op);
        }
        if let Some(s) = orphan {
            self.unmap_tail(g, first, Some(s))?;
        }
        Ok(())
    }

    /// Free every block of `g` from logical block `first` on, in batches; the
    /// last batch also drops the orphan record `orphan`.
    fn unmap_tail(&self, g: &mut Inode, first: u64, orphan: Option<u64>) -> FsResult<()> {
        loop {
            let mut ctx = self.ctx()?;
            ctx.ensure_slots(RecKind::Extent, 1)?;
            let (ops, done) = self.unmap_blocks(&mut ctx, g, first, u64::MAX, FREE_BATCH)?;
            if done {
                if let Some(s) = orphan {
                    ctx.slot_free(RecKind::Orphan, s);
                }
            }
            ctx.commit()?;
            for op in ops {
                self.apply_op(g, op);
            }
            if done {
                return Ok(());
            }
        }
    }

    pub fn truncate(&self, ino: u64, size: u64) -> FsResult<Attr> {
        self.setattr(
            ino,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
    }

    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        // Data is flushed at write time and metadata at commit; device writes
        // through pins attributed to this file are flushed here.
        self.get(ino)?;
        self.flush_dirty_pages(ino)?;
        self.media.fence();
        self.flush_atimes(Some(ino))
    }

    /// fallocate(2): mode 0 / KEEP_SIZE allocate, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE.
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, mode: i32) -> FsResult<()> {
        if self.opts.read_only {
            return Err(FsError::ReadOnly);
        }
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
        if mode
            & !(libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE)
            != 0
            || (punch && zero)
            || (punch && !keep)
        {
            return Err(FsError::NotSupported);
        }
        if len == 0 {
            return Err(FsError::Invalid);
        }
        let end = off.checked_add(len).ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let r = self.get(ino)?;
        let mut g = r.write()?;
        g.not_immutable()?;
        if g.append_only() && mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(FsError::Perm);
        }
        if g.is_dir() {
            return Err(FsError::IsDir);
        }
        if g.ftype() != libc::S_IFREG {
            return Err(FsError::NoSuchAddr);
        }
        let t = now();
        if punch || zero {
            self.break_layouts(&g, off / BS, end.div_ceil(BS))?;
            // Partial blocks at the edges get zeros written through the write
            // engine (copy-on-write if shared); bytes past EOF are zero already.
            let fb = off.div_ceil(BS);
            let lb = end / BS;
            let size = g.rec.size;
            let mut edges = Vec::new();
            if fb > lb {
                edges.push((off, end));
            } else {
                edges.push((off, fb * BS));
                edges.push((lb * BS, end));
            }
            for (a, b) in edges {
                let b = b.min(size);
                if a < b && (a / BS..b.div_ceil(BS)).any(|l| g.find(l).is_some()) {
                    let zeros = vec![0u8; (b - a) as usize];
                    self.write_locked(&mut g, a, b, Fill::Data(&zeros))?;
                }
            }
            // Whole blocks of a punch: unmapped (references dropped), in batches.
            // (A zero-range replaces them with fresh blocks below, in one transaction.)
            if punch && fb < lb {
                loop {
                    let mut ctx = self.ctx()?;
                    ctx.ensure_slots(RecKind::Extent, 1)?;
                    let (ops, done) = self.unmap_blocks(&mut ctx, &g, fb, lb, FREE_BATCH)?;
                    let mut rec = g.rec.clone();
                    rec.mtime = t;
                    rec.ctime = t;
                    ctx.put_inode(ino, &rec);
                    ctx.commit()?;
                    g.rec = rec;
                    for op in ops {
                        self.apply_op(&mut g, op);
                    }
                    if done {
                        break;
                    }
                }
            }
            if punch {
                return Ok(());
            }
        }
        if !keep && end > g.rec.size {
            self.prepare_extend(&mut g, end)?;
        }
        // Fresh zeroed blocks for the holes of [off, end) and, for a
        // zero-range, in place of its whole mapped blocks: the old blocks are
        // unmapped and the new ones mapped in the same transaction.
        let first = off / BS;
        let lend = end.div_ceil(BS);
        let (zfb, zlb) = if zero {
            (off.div_ceil(BS), end / BS)
        } else {
            (0, 0)
        };
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (l, n, p) in g.segments(first, lend) {
            if p.is_none() {
                ranges.push((l, n));
            } else {
                let (a, b) = (l.max(zfb), (l + n).min(zlb));
                if a < b {
                    ranges.push((a, b - a));
                }
            }
        }
        let need: u64 = ranges.iter().map(|h| h.1).sum();
        let runs = if need == 0 {
            Vec::new()
        } else {
            let mut m = self.meta.lock();
            if m.broken {
                return Err(FsError::ReadOnly);
            }
            m.space.reserve_many(need, None).ok_or(FsError::NoSpace)?
        };
        let mut maps = Vec::new();
        let (mut ri, mut rused) = (0usize, 0u64);
        for (l, n) in &ranges {
            let (mut l, mut left) = (*l, *n);
            while left > 0 {
                let (rp, rl) = runs[ri];
                let take = (rl - rused).min(left);
                maps.push((l, rp + rused, take));
                rused += take;
                left -= take;
                l += take;
                if rused == rl {
                    ri += 1;
                    rused = 0;
                }
            }
        }
        // Zero the new blocks with no lock but this inode's.
        for (_, p, n) in &maps {
            self.media.fill(p * BS, n * BS, 0)?;
            self.media.flush(p * BS, n * BS)?;
        }
        self.media.fence();
        let res = (|| -> FsResult<()> {
            let mut ctx = self.ctx()?;
            ctx.ensure_slots(RecKind::Extent, maps.len() + 2 * ranges.len() + 2)?;
            ctx.ensure_slots(RecKind::Refcount, 3 * ranges.len() + 3)?;
            for (p, l) in &runs {
                ctx.blocks_used(*p, *l)?;
            }
            if zfb < zlb {
                for (l, n) in ranges.iter().filter(|(l, _)| *l >= zfb && *l < zlb) {
                    let (ops, _) = self.unmap_blocks(&mut ctx, &g, *l, l + n, usize::MAX)?;
                    for op in ops {
                        self.apply_op(&mut g, op);
                    }
                }
            }
            for (l, p, n) in &maps {
                let ops = self.map_blocks(&mut ctx, &g, *l, *p, *n)?;
                for op in ops {
                    self.apply_op(&mut g, op);
                }
            }
            let mut rec = g.rec.clone();
            if !keep && end > rec.size {
                rec.size = end;
            }
            rec.ctime = t;
            if zero {
                rec.mtime = t;
            }
            ctx.put_inode(ino, &rec);
            ctx.commit()?;
            g.rec = rec;
            Ok(())
        })();
        if let Err(e) = res {
            let mut m = self.meta.lock();
            for (p, l) in runs {
                m.space.unreserve(p, l);
            }
            return Err(e);
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn lseek(&self, ino: u64, off: u64, whence: i32) -> FsResult<u64> {
        let r = self.get(ino)?;
        let g = r.read()?;
        let size = g.rec.size;
        if off >= size {
            return Err(FsError::NoSuchAddr);
        }
        let l = off / BS;
        match whence {
            libc::SEEK_DATA => {
                if g.find(l).is_some() {
                    return Ok(off);
                }
                match g.extents.range(l..).next() {
                    Some((s, _)) if s * BS < size => Ok(s * BS),
                    _ => Err(FsError::NoSuchAddr),
                }
            }
            libc::SEEK_HOLE => {
                let mut cur = l;
                while let Some((s, e)) = g.find(cur) {
                    cur = s + e.len;
                }
                Ok((cur * BS).max(off).min(size))
            }
            _ => Err(FsError::Invalid),
        }
    }

    /// Every extent of a file: (logical block, phys block, length).
    pub fn extents(&self, ino: u64) -> FsResult<Vec<(u64, u64, u64)>> {
        let r = self.get(ino)?;
        let g = r.read()?;
        Ok(g.extents.iter().map(|(l, e)| (*l, e.phys, e.len)).collect())
    }

    /// Apply one extent-map change to DRAM (the inode's map and the reverse map).
    fn apply_op(&self, g: &mut Inode, op: ExtOp) {
        let mut rm = self.rmap.lock();
        match op {
            ExtOp::Put(l, e, added) => {
                if let Some(old) = g.extents.insert(l, e) {
                    rm.remove(&(old.phys, g.ino, l));
                }
                rm.insert((e.phys, g.ino, l), e.len);
                g.mapped += added;
            }
            ExtOp::Remove(l, len) => {
                if let Some(old) = g.extents.remove(&l) {
                    rm.remove(&(old.phys, g.ino, l));
                }
                g.mapped -= len;
            }
        }
    }

    /// Every (inode, file page) that maps physical block `phys` (ground truth).
    pub fn owners_of(&self, phys: u64) -> Vec<(u64, u64)> {
        let rm = self.rmap.lock();
        let mut v: Vec<(u64, u64)> = rm
            .range(..=(phys, u64::MAX, u64::MAX))
            .filter(|((p, _, _), len)| phys < p + **len)
            .map(|((p, ino, l), _)| (*ino, l + (phys - p)))
            .collect();
        v.sort();
        v
    }

    /// Number of free data blocks (for tests and statfs).
    pub fn free_blocks(&self) -> u64 {
        self.meta.lock().space.free_blocks()
    }

    /// Bug injection for the crash harness (src/crash): journal and core
    /// switches that are all off unless a test sets them.
    pub fn set_inject(&self, inject: crate::journal::Inject) {
        self.meta.lock().journal.inject = inject;
    }
}

/// What the write engine puts into the range.
#[derive(Clone, Copy)]
enum Fill<'a> {
    Data(&'a [u8]),
    Unshare,
}

/// A DRAM extent-map change, applied after its records are in the transaction.
enum ExtOp {
    /// Insert or replace the extent at a logical start; the u64 is blocks newly mapped.
    Put(u64, Ext, u64),
    /// Remove the extent at a logical start; the u64 is its length.
    Remove(u64, u64),
}

#[cfg(test)]
mod tests;
