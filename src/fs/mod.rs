//! The core filesystem: the `Fs` and `Inode` types, their locks, and the
//! helpers every part shares. The operations live one concern per file:
//! `mount.rs`, `attr.rs`, `namespace.rs`, `data.rs`, `truncate.rs`,
//! `xattr.rs`, `flags.rs`, `atime.rs`, `reflink.rs`, `pin.rs`, `state.rs`,
//! `admin.rs` (FITRIM, the label), `snapshot.rs`, `counters.rs`;
//! `node.rs`: inode locks one thread cannot take twice; `nowait.rs`: the
//! no-wait mode of the io_uring ring threads (busy locks fail with
//! WouldBlock). Transactions, in
//! [`tx`]: `tx/ctx.rs` ([`Ctx`], refcount records), `tx/steps.rs` (long
//! operations in journal-sized steps) and `tx/recblocks.rs` (record block
//! slots). DRAM indexes, in [`index`]: `index/chunked.rs` (the two-level
//! sorted map), `index/extmap.rs` (extent map and reverse map on it),
//! `index/dir.rs` (directories). Unit tests: `tests.rs`, `tests_paths.rs`,
//! `tests_dram.rs`.
//!
//! An API returning `FsResult`, usable without FUSE. DRAM indexes (extent
//! and reverse maps in `Chunked` maps, directories with a hash table of
//! names) are rebuilt from the on-media records at mount; every metadata
//! change goes through one journaled transaction ([`Ctx`]).
//!
//! Lock order: `ns` (namespace) → inode locks in ascending inode number →
//! `meta` (allocator, record slots, journal). File data is copied while holding
//! only that file's inode lock.

// Deny, not forbid: the one media call site (`Fs::read_with`'s
// `Media::read_in_place`, in data.rs) allows it for that statement only.
#![deny(unsafe_code)]

mod admin;
mod atime;
mod attr;
mod counters;
mod data;
pub mod flags;
pub mod index;
mod lease;
pub mod make;
mod mount;
mod namespace;
mod node;
mod nowait;
mod pin;
mod reflink;
mod snapshot;
mod state;
pub mod stop;
mod truncate;
pub mod tx;
mod xattr;

pub use admin::FSLABEL_MAX;
pub use atime::AtimeMode;
pub use data::{setid_cleared_by_data_change, Clearer};
pub use lease::{LeaseMap, Recall};
pub use nowait::no_wait;
pub use pin::{Owner, OwnersReport, PinCaller, PinInfo, Poisoned};
pub use reflink::{DedupeStatus, ExtentInfo, ShareStats};
pub use state::ShutdownMode;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::check::chain;
use crate::error::{FsError, FsResult};
use crate::format::{
    self, ftype_byte, DirentRec, ExtentRec, InodeRec, OrphanRec, RecKind, RefcountRec, Roots,
    Superblock, Timespec, XattrMap, BLOCK_SIZE, MAX_FILE_SIZE, MAX_LINKS, MAX_NAME, ROOT_INO,
};
use crate::journal::{Journal, JournalGeometry, Recovery};
use crate::media::Media;
use crate::pages::{PageModel, Pages};
use crate::space::Space;
use index::dir::{DEnt, Dir};
use index::extmap::{ExtentMap, RMap};
use tx::ctx::{self, Ctx, Meta, Records};
use tx::steps::{self, Budget};

const BS: u64 = BLOCK_SIZE;
/// Extent records changed per step at most when freeing or mapping in steps
/// (a bound on a step's length; its journal bytes are bounded by
/// `Ctx::step_budget`, see `tx/steps.rs`).
const FREE_BATCH: usize = 1024;
/// Largest xattr value and total per inode.
pub use format::{XATTR_TOTAL_MAX, XATTR_VALUE_MAX};

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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// Set-ID bits to clear with this change (`S_ISUID`, `S_ISGID`): under
    /// FUSE_HANDLE_KILLPRIV_V2 the kernel leaves that decision for chown
    /// and truncate to the filesystem, and the FUSE layer makes it for the
    /// caller as the VFS would (`fuse::DaxFuse::setattr`).
    pub clear_mode: u32,
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
    /// Free for ordinary use: `bfree` less the reserve (see `Meta::reserved`).
    pub bavail: u64,
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

pub struct Inode {
    pub ino: u64,
    pub rec: InodeRec,
    pub extents: ExtentMap,
    pub mapped: u64,
    /// Boxed: most inodes are not directories.
    dir: Option<Box<Dir>>,
    /// Loaded on first use; boxed: most inodes never load theirs.
    xattrs: Option<Box<XattrMap>>,
    open: u32,
    /// The slot of its kind-1 orphan record (never 0: a media offset past
    /// the superblocks).
    orphan_slot: Option<std::num::NonZeroU64>,
}

impl Inode {
    fn new(ino: u64, rec: InodeRec) -> Inode {
        let dir = if rec.mode & libc::S_IFMT == libc::S_IFDIR {
            Some(Box::default())
        } else {
            None
        };
        Inode {
            ino,
            rec,
            extents: ExtentMap::new(),
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
            Some(d) => ((d.len() as u64 + 2) * format::DIRENT_SIZE as u64).div_ceil(BS) * BS,
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
            .last_at_or_below(l)
            .filter(|(s, e)| l < *s + e.len)
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
        for (s, e) in self.extents.range(l, end) {
            if s > l {
                out.push((l, s - l, None));
            }
            let n = (s + e.len).min(end) - s;
            out.push((s, n, Some(e.phys)));
            l = s + n;
        }
        if l < end {
            out.push((l, end - l, None));
        }
        out
    }
}

type InodeRef = node::Node;
use node::{RGuard, WGuard};

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
    /// With `read_only`: mount without recovery (`norecovery`): a committed
    /// journal transaction is not replayed and orphans are kept, so the
    /// image is not changed at all (it may show a transaction half applied).
    pub norecovery: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            read_only: false,
            page_model: PageModel::default(),
            layout_timeout: std::time::Duration::from_secs(2),
            atime: AtimeMode::Never,
            nodiratime: false,
            norecovery: false,
        }
    }
}

pub struct Fs {
    pub media: Arc<Media>,
    pub sb: Superblock,
    opts: FsOptions,
    /// Inodes whose access time is newer in DRAM than on media.
    lazy_times: atime::Pending,
    /// Read-only now: set at mount, switched by remount (`state.rs`).
    ro: std::sync::atomic::AtomicBool,
    ns: RwLock<()>,
    inodes: RwLock<HashMap<u64, InodeRef>>,
    meta: Mutex<Meta>,
    next_fh: AtomicU64,
    /// What the journal held at mount (`Replayed` under `norecovery`: a
    /// committed transaction that was left as it is).
    pub recovery: Recovery,
    /// The page model: struct pages, pins, proxies, poison.
    pub pages: Pages,
    /// DRAM reverse map (physical block start, inode, logical start) -> length,
    /// the ground truth of who maps a block (XFS's rmapbt, in memory).
    rmap: Mutex<RMap>,
    /// Which paths ran (`counters.rs`), for tests through SNAPSHOT.
    pub counters: counters::Counters,
    /// Direct access's recall hook, installed by the FUSE edge (`lease.rs`).
    recall: std::sync::OnceLock<Arc<dyn lease::Recall>>,
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
/// Both superblock copies (blocks 0 and 1) as decoded, errors as text.
pub fn superblock_copies(media: &Media) -> [Result<Superblock, String>; 2] {
    [0u64, BS].map(|off| {
        media
            .read_vec(off, format::SB_SIZE)
            .map_err(|e| e.to_string())
            .and_then(|b| Superblock::decode(&b, media.len()).map_err(|e| e.to_string()))
    })
}

/// The copy to trust, the rule mount and fsck share: the valid copy with
/// the highest generation (the first on a tie), among the copies whose size
/// is the media's when there is one (mkfs gives the filesystem the whole
/// media, so a copy claiming another size is damaged, however new it says
/// it is).
pub fn newest_superblock(
    copies: &[Result<Superblock, String>; 2],
    media_len: u64,
) -> Option<usize> {
    let fits = |sb: &Superblock| sb.total_blocks == media_len / BS;
    let any_fits = copies.iter().any(|c| c.as_ref().is_ok_and(fits));
    let mut best: Option<(usize, u64)> = None;
    for (i, c) in copies.iter().enumerate() {
        if let Ok(sb) = c {
            if any_fits && !fits(sb) {
                continue;
            }
            if best.is_none_or(|(_, g)| sb.generation > g) {
                best = Some((i, sb.generation));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// How mount and fsck name superblock copy `i` (FORMAT.md: copies A and B).
pub fn superblock_copy_name(i: usize) -> String {
    format!(
        "superblock copy {} (block {i})",
        if i == 0 { "A" } else { "B" }
    )
}

/// Neither superblock copy starts with daxlink's magic.
pub fn no_magic(media: &Media) -> bool {
    [0u64, BS].into_iter().all(|off| {
        media
            .read_vec(off, format::SB_MAGIC.len())
            .map_or(true, |b| b[..] != format::SB_MAGIC[..])
    })
}

/// Read both superblocks and pick the one to trust (`newest_superblock`).
pub fn read_superblock(media: &Media) -> FsResult<(Superblock, Vec<String>)> {
    let copies = superblock_copies(media);
    let problems: Vec<String> = copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.as_ref()
                .err()
                .map(|e| format!("{}: {e}", superblock_copy_name(i)))
        })
        .collect();
    match newest_superblock(&copies, media.len()) {
        Some(i) => Ok((copies[i].clone().expect("valid copy"), problems)),
        None if other_version(media).is_some() => {
            Err(FsError::Version(other_version(media).unwrap_or_default()))
        }
        None if no_magic(media) => Err(FsError::NotDaxlink),
        None => Err(FsError::Corrupt(format!(
            "no valid superblock ({})",
            problems.join("; ")
        ))),
    }
}

/// One line naming the format version of an image whose superblock is
/// intact but of a version this code does not read (None otherwise).
pub fn other_version(media: &Media) -> Option<String> {
    let v = [0u64, BS].into_iter().find_map(|off| {
        let b = media.read_vec(off, format::SB_SIZE).ok()?;
        Superblock::peek_version(&b).filter(|v| *v != format::FORMAT_VERSION)
    })?;
    Some(format!(
        "format version {v} of this image is not supported by this daxlink (it reads version {}): \
         copy the files out with the daxlink that made it, then make a new filesystem with mkfs-daxlink",
        format::FORMAT_VERSION
    ))
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
/// a bad link fails (the walker is `chain::walk`). Returns the blocks in
/// chain order.
pub fn walk_chain(
    media: &Media,
    sb: &Superblock,
    kind: RecKind,
    head: u64,
    mut f: impl FnMut(u64, &[u8]) -> FsResult<()>,
) -> FsResult<Vec<u64>> {
    let read = |blk: u64| -> FsResult<_> { Ok(Some(media.read_vec(blk * BS, BS as usize)?)) };
    let mut order = Vec::new();
    let w = chain::walk(sb, kind, head, read, |blk, b| {
        order.push(blk);
        chain::slots(kind, blk, b).try_for_each(|(off, s)| f(off, s))
    })?;
    let Some(bad) = w.broken else {
        return Ok(order);
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
    pub fn read_only(&self) -> bool {
        self.ro.load(Ordering::SeqCst)
    }

    fn ctx(&self) -> FsResult<Ctx<'_>> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let meta = nowait::lock(&self.meta)?;
        // A transaction changes things: a no-wait request must finish from
        // here on (its later locks wait).
        nowait::changing();
        // Again under `meta`: a remount to read-only may have marked the
        // superblock clean while this thread waited for the lock.
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        Ctx::new(&self.media, &self.sb, meta, Some(&self.pages))
    }

    /// A transaction of an operation that frees space (unlink, rmdir,
    /// rename over a name, truncate down, punch, freeing an inode): it may
    /// use the reserved blocks, so these work on a full filesystem.
    fn ctx_freeing(&self) -> FsResult<Ctx<'_>> {
        Ok(self.ctx()?.freeing())
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

    /// Apply one extent-map change to DRAM (the inode's map and the reverse map).
    fn apply_op(&self, g: &mut Inode, op: ExtOp) {
        let mut rm = self.rmap.lock();
        match op {
            ExtOp::Put(l, e, added) => {
                if let Some(old) = g.extents.insert(l, e) {
                    rm.remove(old.phys, g.ino, l);
                }
                rm.insert(e.phys, g.ino, l, e.len);
                g.mapped += added;
            }
            ExtOp::Remove(l, len) => {
                if let Some(old) = g.extents.remove(l) {
                    rm.remove(old.phys, g.ino, l);
                }
                g.mapped -= len;
            }
        }
    }

    /// `apply_op` while a transaction is being built (a mapping merges with
    /// the one applied just before it), remembering what each changed extent
    /// was, so that `undo_ops` can put DRAM back if the transaction fails.
    fn apply_op_undoable(&self, g: &mut Inode, op: ExtOp, undo: &mut Vec<(u64, Option<Ext>)>) {
        let l = match op {
            ExtOp::Put(l, ..) | ExtOp::Remove(l, _) => l,
        };
        undo.push((l, g.extents.get(l)));
        self.apply_op(g, op);
    }

    /// Put back the extents `apply_op_undoable` changed (newest first) and
    /// the mapped-block count: the transaction they belonged to failed, so
    /// DRAM must again say what the media says.
    fn undo_ops(&self, g: &mut Inode, undo: Vec<(u64, Option<Ext>)>, mapped: u64) {
        let mut rm = self.rmap.lock();
        for (l, before) in undo.into_iter().rev() {
            if let Some(cur) = g.extents.remove(l) {
                rm.remove(cur.phys, g.ino, l);
            }
            if let Some(e) = before {
                g.extents.insert(l, e);
                rm.insert(e.phys, g.ino, l, e.len);
            }
        }
        g.mapped = mapped;
    }

    /// Every (inode, file page) that maps physical block `phys` (ground
    /// truth), sorted: O(log n) in the extents plus the owners.
    pub fn owners_of(&self, phys: u64) -> Vec<(u64, u64)> {
        self.rmap.lock().owners_of(phys)
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
#[cfg(test)]
mod tests_dram;
#[cfg(test)]
mod tests_nowait;
#[cfg(test)]
mod tests_pages;
#[cfg(test)]
mod tests_paths;
