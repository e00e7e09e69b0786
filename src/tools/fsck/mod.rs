//! The offline filesystem checker and repairer (fsck) of format v2.
//!
//! [`check`] reads an image that is not mounted and verifies every invariant of
//! the format (FORMAT.md): both superblock copies, the journal, the roots block,
//! the record chains and every record slot, the inode table, extents, xattr
//! blobs, orphan records, the directory tree, link counts and the allocation
//! bitmap. With `repair` it fixes what it finds and checks again.
//!
//! It never panics on a hostile image: every offset and length read from the
//! media is bounds-checked before use, chains are walked with loop detection,
//! and counts are limited by the geometry (a last-resort `catch_unwind` turns a
//! bug into an operational error rather than a crash).
//!
//! # How a check runs
//!
//! One *pass* reads everything, decides in DRAM what is wrong and what the
//! repaired filesystem must look like, and plans every repair store: the
//! superblock and journal repairs as direct stores (`sb::Direct`), the rest
//! in a [`Tx`]. Nothing is written while the pass decides, so a pass that
//! refuses the image (exit 8), in repair mode as in check-only mode, leaves
//! it untouched, and `-n` runs the very plan `-y` would. A check-only pass
//! throws the plan away. A repair pass writes it at its end: the direct
//! stores first (superblock copies, then journal replay or reset), then the
//! queue through the journal as one atomic transaction when it fits (so a
//! crash during `fsck -y` leaves either the old or the repaired state), else
//! by direct stores followed by a fence. After a repair pass, passes repeat
//! until one finds nothing (at most three repair passes, then a final
//! check-only pass whose findings are reported as not fixed).
//!
//! A committed-but-unapplied journal transaction is overlaid on every read,
//! so the rest of the check sees the state that mount (or `fsck -y`) would
//! produce after replay.
//!
//! This file holds the finding codes, the repair rounds and the pass order
//! (`Ck::run`; the report is `report.rs`); each pass lives with what it checks: `sb`
//! (superblocks, journal), `records` (roots, record chains, extents, orphan
//! records), `inodes` (inode table, root, xattrs and ACLs, symlinks), `dirs`
//! (directory entries, reachability, lost+found, link counts), `space`
//! (bitmap, block claims, refcounts) and `repair` (new slots, the write-out).
//!
//! # Policies
//!
//! - A **torn** journal transaction (no valid commit record) is the normal
//!   trace of a crash during a commit: it is a *note* (informational, it does
//!   not change the exit status). Repair zeroes its header so it is not
//!   reported again.
//! - An inode with `nlink == 0` named by an orphan record (unlinked while open,
//!   then a crash) is a finding `orphan-reclaim`; repair reclaims it exactly as
//!   mount would (extents, xattr blob, inode and orphan record freed).
//! - Unreachable inodes with `nlink > 0`, and directories detached from the
//!   root (or in a cycle), are moved into `/lost+found` (created when missing)
//!   under the name `#INO`. An unreachable inode with `nlink == 0` and no orphan
//!   record is freed (`inode-unlinked`), as its last unlink evidently happened.
//! - Extents may share blocks (reflink): the truth is the extent records, and
//!   the refcount records must say, for every block mapped twice or more, how
//!   many times it is mapped (and nothing for the others). A mismatch is
//!   `refcount-wrong`; repair rewrites the refcount records from the extents
//!   (as xfs_repair rebuilds its refcount btree), so no mapping is lost.
//! - Any other double use is `block-dup`: record blocks, xattr blobs and
//!   deferred-free ranges own their blocks exclusively. The first owner in the
//!   order record blocks, xattr blobs, extents (chain order), deferred-free
//!   ranges keeps the block; the later extent record / xattr pointer / orphan
//!   record is dropped.
//! - Bad records are zeroed (their slot becomes free); bad inodes are freed;
//!   bad xattr pointers are cleared; a broken record chain is cut before the
//!   bad link; an unreadable roots block is rebuilt by scanning the data area
//!   for record blocks.
//!
//! # Exit status (fsck(8))
//!
//! 0 no findings, 1 every finding fixed, 4 findings left (always so with
//! findings in check-only mode), 8 operational error (cannot open or map the
//! image, the image is in use (mounted, or another fsck or mkfs), no valid
//! superblock, unknown read-only-compatible features in the superblock mount
//! trusts (`FsError::RoCompat`, the line mount says too), repair of a
//! read-only mapping, write failure). Every exit 8 but a write failure
//! comes before anything is written.

#![forbid(unsafe_code)]

mod dirs;
mod geometry;
mod inodes;
mod records;
mod repair;
mod report;
mod sb;
mod space;

pub use report::{Counts, Finding, Report};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::check::name_text;
use crate::format::{
    DirentRec, ExtentRec, InodeRec, OrphanRec, RefcountRec, Roots, Superblock,
    BITS_PER_BITMAP_BLOCK, BLOCK_SIZE, REC_KINDS,
};
use crate::fs::journal_geometry;
use crate::journal::{JournalGeometry, Tx};
use crate::media::Media;
use sb::superblocks;
use space::{Bits, Owner};

const BS: u64 = BLOCK_SIZE;
/// Findings of one code reported in detail; more are summarized in one line.
const MAX_DETAILED: usize = 100;
/// Repair passes before giving up.
const MAX_ROUNDS: usize = 3;
/// Words of the DRAM bitmap per on-media bitmap block (32704 bits = 511 words).
const WORDS_PER_BITMAP_BLOCK: usize = (BITS_PER_BITMAP_BLOCK / 64) as usize;

/// Every finding code, with what it means (the table of images/README.md).
pub const CODES: &[(&str, &str)] = &[
    (
        "superblock-bad",
        "a superblock copy does not decode (magic, crc, version, geometry)",
    ),
    (
        "superblock-mismatch",
        "the two superblock copies disagree on identity or geometry",
    ),
    ("journal-header", "the journal header does not decode"),
    (
        "journal-replay",
        "a committed transaction was not applied in place yet",
    ),
    (
        "journal-bad-entry",
        "a committed transaction targets bytes outside the metadata area",
    ),
    ("roots-bad", "the roots block does not decode"),
    (
        "roots-mark",
        "an initialization mark of the roots block lies outside the geometry",
    ),
    (
        "chain-bad",
        "a record chain leaves the data area, loops, or links a bad block",
    ),
    (
        "record-bad",
        "a record slot is neither all-zero nor a valid record",
    ),
    ("inode-bad", "an inode slot does not decode"),
    ("inode-free-dirty", "a free inode slot holds stale fields"),
    ("root-bad", "inode 1 is missing, bad or not a directory"),
    (
        "xattr-bad",
        "an inode's xattr blob pointer, checksum or contents are invalid",
    ),
    (
        "acl-bad",
        "a POSIX ACL xattr is malformed, or a default ACL is on a non-directory",
    ),
    ("extent-orphan", "an extent record belongs to a free inode"),
    (
        "extent-bad-owner",
        "an extent record belongs to an inode that cannot have data",
    ),
    (
        "extent-range",
        "an extent lies outside the data area or the file size limit",
    ),
    ("extent-overlap", "two extents of one file overlap"),
    ("block-dup", "a block is used by an extent and by a record block, an xattr blob or a deferred-free range, or by two of those"),
    ("refcount-bad", "a refcount record lies outside the data area or overlaps another"),
    ("refcount-wrong", "the refcount records disagree with the number of extents mapping a block"),
    (
        "bitmap-mark",
        "a block in use lies past the bitmap's initialization mark",
    ),
    ("symlink-bad", "a symlink's target block or size is invalid"),
    (
        "orphan-bad",
        "an orphan record names a free or linked inode or a bad range",
    ),
    (
        "orphan-reclaim",
        "an orphan record is pending (reclaimed as mount would)",
    ),
    (
        "dirent-bad-parent",
        "a directory entry's parent is not an in-use directory",
    ),
    (
        "dirent-free-inode",
        "a directory entry points at a free inode",
    ),
    (
        "dirent-to-root",
        "a directory entry names the root directory",
    ),
    ("dirent-dup-name", "a directory holds a name twice"),
    (
        "dirent-ftype",
        "a directory entry's file type differs from the inode's",
    ),
    (
        "dir-multi-link",
        "a directory is named by more than one entry",
    ),
    (
        "dir-cycle",
        "directories form a cycle detached from the root",
    ),
    (
        "dir-unreachable",
        "a directory is not reachable from the root",
    ),
    (
        "inode-unreachable",
        "an in-use inode with links is in no directory",
    ),
    (
        "inode-unlinked",
        "an in-use inode has no links and no orphan record",
    ),
    ("nlink-wrong", "an inode's link count is wrong"),
    ("bitmap-crc", "a bitmap block's checksum fails"),
    (
        "bitmap-tail",
        "bitmap bits past the last data block are set",
    ),
    (
        "block-unmarked",
        "a block in use is marked free in the bitmap",
    ),
    (
        "block-leaked",
        "a block marked used is referenced by nothing",
    ),
];

/// Open an image or device and check it. `repair` maps it writable and locks it
/// exclusively; a check-only run takes a shared lock (see [`crate::media::lock`]),
/// so neither runs on a mounted read-write image.
pub fn check_path(path: &Path, repair: bool) -> Report {
    if let Err(e) = std::fs::metadata(path) {
        return Report::failed(format!("cannot open {}: {e}", path.display()), repair);
    }
    let file = match crate::media::open_image(path, repair, false) {
        Ok(f) => f,
        Err(e) => return Report::failed(format!("cannot open {}: {e}", path.display()), repair),
    };
    // A repair writes what others could change under it: refused (before
    // the lock, whoever holds it) if group or other users can write the image.
    if repair {
        let r = file.metadata().map_err(|e| e.to_string()).and_then(|md| {
            crate::tools::access::check_repair(path, &md).map_err(|e| e.to_string())
        });
        if let Err(e) = r {
            return Report::failed(e, repair);
        }
    }
    let locked = match crate::media::lock_file(file, repair, path) {
        Ok(l) => l,
        Err(e) => return Report::failed(format!("cannot open {}: {e}", path.display()), repair),
    };
    // Repairs persist as the media needs (see `Media::map_locked`).
    match Media::map_locked(locked, None, !repair) {
        Ok(m) => check(&m, repair),
        Err(e) => Report::failed(format!("cannot map {}: {e}", path.display()), repair),
    }
}

/// Check the filesystem on `media` (not mounted) and, with `repair`, fix it.
pub fn check(media: &Media, repair: bool) -> Report {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_inner(media, repair)));
    match r {
        Ok(rep) => rep,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Report::failed(format!("internal error: fsck panicked: {what}"), repair)
        }
    }
}

fn check_inner(media: &Media, repair: bool) -> Report {
    if repair && media.read_only() {
        return Report::failed("the image is mapped read-only: cannot repair", true);
    }
    if !repair {
        let p = pass(media, false);
        return Report {
            findings: p
                .findings
                .into_iter()
                .map(|f| Finding {
                    code: f.code,
                    message: f.message,
                    fixed: false,
                    fixable: f.fixable,
                })
                .collect(),
            notes: p.notes,
            error: p.error,
            counts: p.counts,
            repair: false,
        };
    }
    let mut findings: Vec<Finding> = Vec::new();
    let mut keys: HashMap<(&'static str, String), usize> = HashMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut counts = Counts::default();
    let mut clean_after = false;
    for _ in 0..MAX_ROUNDS {
        let p = pass(media, true);
        for n in p.notes {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        if let Some(e) = p.error {
            return repaired(findings, notes, Some(e), p.counts);
        }
        counts = p.counts;
        if p.findings.is_empty() {
            clean_after = true;
            break;
        }
        for f in p.findings {
            let key = (f.code, f.message.clone());
            if keys.contains_key(&key) {
                continue;
            }
            keys.insert(key, findings.len());
            findings.push(Finding {
                code: f.code,
                message: f.message,
                fixed: f.fixable,
                fixable: f.fixable,
            });
        }
    }
    if !clean_after {
        // Whatever the repair passes could not fix is reported as left.
        let p = pass(media, false);
        if let Some(e) = p.error {
            return repaired(findings, notes, Some(e), p.counts);
        }
        counts = p.counts;
        for f in p.findings {
            let key = (f.code, f.message.clone());
            match keys.get(&key) {
                Some(&i) => findings[i].fixed = false,
                None => findings.push(Finding {
                    code: f.code,
                    message: f.message,
                    fixed: false,
                    fixable: f.fixable,
                }),
            }
        }
    }
    repaired(findings, notes, None, counts)
}

/// The report of a repair run.
fn repaired(
    findings: Vec<Finding>,
    notes: Vec<String>,
    error: Option<String>,
    counts: Counts,
) -> Report {
    Report {
        findings,
        notes,
        error,
        counts,
        repair: true,
    }
}

// ---------------------------------------------------------------------------
// Findings collection
// ---------------------------------------------------------------------------

struct Pending {
    code: &'static str,
    message: String,
    fixable: bool,
}

#[derive(Default)]
struct Out {
    list: Vec<Pending>,
    /// Per code: (count, summarized count, all summarized fixable).
    seen: HashMap<&'static str, (usize, usize, bool)>,
    notes: Vec<String>,
}

impl Out {
    fn add(&mut self, code: &'static str, fixable: bool, message: String) {
        let e = self.seen.entry(code).or_insert((0, 0, true));
        e.0 += 1;
        if e.0 <= MAX_DETAILED {
            self.list.push(Pending {
                code,
                message,
                fixable,
            });
        } else {
            e.1 += 1;
            e.2 &= fixable;
        }
    }

    fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    fn finish(mut self) -> (Vec<Pending>, Vec<String>) {
        let mut extra: Vec<(&'static str, usize, bool)> = self
            .seen
            .iter()
            .filter(|(_, v)| v.1 > 0)
            .map(|(k, v)| (*k, v.1, v.2))
            .collect();
        extra.sort_unstable();
        for (code, n, fixable) in extra {
            self.list.push(Pending {
                code,
                message: format!("... and {n} more {code} findings"),
                fixable,
            });
        }
        (self.list, self.notes)
    }
}

struct PassResult {
    findings: Vec<Pending>,
    notes: Vec<String>,
    error: Option<String>,
    counts: Counts,
}

// ---------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Ext {
    len: u64,
    phys: u64,
    slot: u64,
}

struct Ino {
    /// The record as read (None for inodes fsck creates or rebuilds from a bad slot).
    orig: Option<InodeRec>,
    /// The record as it must be written.
    rec: InodeRec,
    extents: BTreeMap<u64, Ext>,
    xattr_claimed: bool,
    orphan_slot: Option<u64>,
    /// To be freed with everything it owns.
    reclaim: bool,
    /// Made by fsck: its link count is set without a finding.
    fresh: bool,
}

impl Ino {
    fn ftype(&self) -> u32 {
        self.rec.mode & libc::S_IFMT
    }
    fn is_dir(&self) -> bool {
        self.ftype() == libc::S_IFDIR
    }
}

struct Dent {
    slot: u64,
    parent: u64,
    child: u64,
    name: Vec<u8>,
    alive: bool,
}

fn free_inode(generation: u32) -> InodeRec {
    InodeRec {
        generation,
        ..Default::default()
    }
}

struct Ck<'a> {
    media: &'a Media,
    repair: bool,
    /// Pending journal replay overlaid on every read (written, when
    /// repairing, only at the end of the pass).
    view: Tx,
    /// Repair stores, applied at the end of a repair pass.
    fix: Tx,
    /// Superblock and journal repairs made outside the journal, written at
    /// the end of a repair pass before `fix` (nothing is written before the
    /// pass has decided everything).
    direct: Vec<sb::Direct>,
    out: Out,
    sb: Superblock,
    geo: JournalGeometry,
    nblocks: u64,
    /// The on-media bitmap (bits of blocks whose bitmap block is bad are 0).
    bm: Bits,
    bm_bad: Vec<bool>,
    roots: Roots,
    roots_dirty: bool,
    /// Initialized inode slots and bitmap blocks: what is read (the roots
    /// block's marks, within the geometry; the whole geometry when the
    /// roots block is unreadable, `marks_lost`).
    inode_init: u64,
    bitmap_init: u64,
    marks_lost: bool,
    /// The highest inode slot read that is not all zero.
    itable_top: u64,
    /// Free slots per record kind (all-zero, or zeroed by this pass).
    free_slots: Vec<Vec<u64>>,
    inodes: BTreeMap<u64, Ino>,
    /// Undecodable inode slots: rewritten free with this generation.
    bad_inodes: BTreeMap<u64, u32>,
    extents_raw: Vec<(u64, ExtentRec)>,
    dirents_raw: Vec<(u64, DirentRec)>,
    orphans_raw: Vec<(u64, OrphanRec)>,
    /// Accepted block claims: start -> (len, owner). Never overlapping.
    claims: BTreeMap<u64, (u64, Owner)>,
    /// In-range blocks of dropped references that were never claimed: not leaks.
    released: Vec<(u64, u64)>,
    /// Claimed blocks the repair frees.
    /// Accepted extent references as found (blocks may be shared), and their blocks.
    ext_refs: Vec<(u64, u64)>,
    ext_bits: Bits,
    /// Valid, non-overlapping refcount records: start -> (len, count, slot).
    refcounts: BTreeMap<u64, (u64, u32, u64)>,
    refcounts_raw: Vec<(u64, RefcountRec)>,
    refcounts_bad: bool,
    dents: Vec<Dent>,
    names: HashMap<(u64, Vec<u8>), usize>,
    kids: HashMap<u64, Vec<usize>>,
    dir_parent: HashMap<u64, usize>,
    lost_found: Option<Option<u64>>,
    /// Data blocks in use as found.
    used_now: u64,
}

fn pass(media: &Media, repair: bool) -> PassResult {
    let mut out = Out::default();
    let (sb, direct) = match superblocks(media, &mut out) {
        Ok(x) => x,
        Err(e) => {
            let (findings, notes) = out.finish();
            return PassResult {
                findings,
                notes,
                error: Some(e),
                counts: Counts::default(),
            };
        }
    };
    let geo = journal_geometry(&sb, media.len());
    let nblocks = sb.total_blocks - sb.data_start;
    let mut ck = Ck {
        media,
        repair,
        view: Tx::new(),
        fix: Tx::new(),
        direct,
        out,
        geo,
        nblocks,
        bm: Bits::new(nblocks),
        bm_bad: vec![false; sb.bitmap_blocks as usize],
        sb,
        roots: Roots::default(),
        roots_dirty: false,
        inode_init: 0,
        bitmap_init: 0,
        marks_lost: false,
        itable_top: 0,
        free_slots: vec![Vec::new(); REC_KINDS.len()],
        inodes: BTreeMap::new(),
        bad_inodes: BTreeMap::new(),
        extents_raw: Vec::new(),
        dirents_raw: Vec::new(),
        orphans_raw: Vec::new(),
        claims: BTreeMap::new(),
        released: Vec::new(),
        ext_refs: Vec::new(),
        ext_bits: Bits::new(nblocks),
        refcounts: BTreeMap::new(),
        refcounts_raw: Vec::new(),
        refcounts_bad: false,
        dents: Vec::new(),
        names: HashMap::new(),
        kids: HashMap::new(),
        dir_parent: HashMap::new(),
        lost_found: None,
        used_now: 0,
    };
    let r = ck.run();
    let counts = ck.counts();
    let (findings, notes) = ck.out.finish();
    PassResult {
        findings,
        notes,
        error: r.err(),
        counts,
    }
}

impl Ck<'_> {
    fn rd(&self, off: u64, len: usize) -> Option<Vec<u8>> {
        self.view.read_vec(self.media, off, len).ok()
    }

    fn zero(&mut self, off: u64, len: usize) {
        self.fix.write(off, &vec![0u8; len]);
    }

    fn in_data(&self, phys: u64, len: u64) -> bool {
        crate::check::in_data(&self.sb, phys, len)
    }

    fn live(&self, ino: u64) -> Option<&Ino> {
        self.inodes.get(&ino).filter(|i| !i.reclaim)
    }

    fn is_live_dir(&self, ino: u64) -> bool {
        self.live(ino).is_some_and(|i| i.is_dir())
    }

    /// Report `code` (fixable) and free `ino` with everything it owns.
    fn reclaim(&mut self, ino: u64, code: &'static str, message: String) {
        self.out.add(code, true, message);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.reclaim = true;
        }
    }

    /// The passes, in order (each names its file).
    fn run(&mut self) -> Result<(), String> {
        let p = crate::util::progress::Progress::steps("fsck", if self.repair { 21 } else { 20 });
        p.step("journal");
        self.journal()?; // sb
        p.step("marks");
        self.marks(); // records
        p.step("load bitmap");
        self.load_bitmap(); // space
        p.step("roots");
        self.roots(); // records
        p.step("record chains");
        for kind in REC_KINDS {
            self.chain(kind); // records
        }
        p.step("inode table");
        self.inode_table(); // inodes
        p.step("root");
        self.root(); // inodes
        p.step("xattrs");
        self.xattrs(); // inodes
        p.step("extents");
        self.extents(); // records
        p.step("refcounts check");
        self.refcounts_check(); // space
        p.step("orphans");
        self.orphans(); // records
        p.step("symlinks");
        self.symlinks(); // inodes
        p.step("dirents");
        self.dirents(); // dirs
        p.step("orphan inodes");
        self.orphan_inodes(); // dirs
        p.step("namespace");
        self.namespace(); // dirs
        p.step("link counts");
        self.link_counts(); // dirs
        p.step("finish reclaim");
        self.finish_reclaim(); // repair
        p.step("refcounts final");
        self.refcounts_final(); // space
        p.step("bitmap");
        self.bitmap(); // space
        p.step("queue inodes");
        self.queue_inodes(); // repair
        if self.roots_dirty {
            let r = self.roots.encode();
            self.fix.write(self.sb.roots_block * BS, &r);
        }
        if self.repair {
            p.step("write repairs");
            self.write_direct()?;
            self.apply()?;
        }
        Ok(())
    }

    fn counts(&self) -> Counts {
        let mut c = Counts {
            blocks_total: self.nblocks,
            blocks_used: self.used_now,
            blocks_free: self.nblocks.saturating_sub(self.used_now),
            ..Default::default()
        };
        for i in self.inodes.values().filter(|i| i.orig.is_some()) {
            c.inodes += 1;
            c.extents += i.extents.len() as u64;
            match i.ftype() {
                libc::S_IFDIR => c.dirs += 1,
                libc::S_IFREG => c.files += 1,
                libc::S_IFLNK => c.symlinks += 1,
                _ => c.other += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests;
