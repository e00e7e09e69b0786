//! The offline filesystem checker and repairer (fsck) of format v1.
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
//! repaired filesystem must look like, and queues every repair store in a
//! [`Tx`]. A check-only pass throws the queue away. A repair pass applies it:
//! through the journal as one atomic transaction when it fits (so a crash during
//! `fsck -y` leaves either the old or the repaired state), else by direct stores
//! followed by a fence. Superblock and journal repairs are direct stores made
//! first. After a repair pass, passes repeat until one finds nothing (at most
//! three repair passes, then a final check-only pass whose findings are reported
//! as not fixed).
//!
//! In check-only mode a committed-but-unapplied journal transaction is overlaid
//! on every read, so the rest of the check sees the state that mount (or
//! `fsck -y`) would produce after replay.
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
//! superblock, repair of a read-only mapping, write failure).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::chain;
use crate::format::{
    self, DirentRec, ExtentRec, InodeRec, Le, OrphanRec, RecBlockHdr, RecKind, RefcountRec, Roots,
    Superblock, Timespec, TxState, BITMAP_BYTES, BITS_PER_BITMAP_BLOCK, BLOCK_SIZE,
    INODES_PER_BLOCK, INODE_SIZE, MAX_FILE_SIZE, REC_HDR, REC_KINDS, ROOT_INO, SB_SIZE,
};
use crate::fs::{journal_geometry, XATTR_TOTAL_MAX};
use crate::journal::{Journal, JournalError, JournalGeometry, Tx};
use crate::media::{Media, PersistMode};

const BS: u64 = BLOCK_SIZE;
/// Findings of one code reported in detail; more are summarized in one line.
const MAX_DETAILED: usize = 100;
/// Repair passes before giving up.
const MAX_ROUNDS: usize = 3;
/// Logical blocks a file may have (MAX_FILE_SIZE / 4096).
const MAX_LOGICAL: u64 = MAX_FILE_SIZE / BS;
/// Words of the DRAM bitmap per on-media bitmap block (32704 bits = 511 words).
const WORDS_PER_BITMAP_BLOCK: usize = (BITS_PER_BITMAP_BLOCK / 64) as usize;

/// Every finding code, with what it means (the table of README/images docs).
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

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
    pub fixed: bool,
}

/// What the filesystem holds as the last pass found it (so: after the repair, when repairing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// In-use inodes.
    pub inodes: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub other: u64,
    pub extents: u64,
    /// Blocks of the data area (what statfs reports as the size).
    pub blocks_total: u64,
    pub blocks_used: u64,
    pub blocks_free: u64,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Informational lines (a torn transaction, an unclean unmount): no effect on the exit status.
    pub notes: Vec<String>,
    /// Operational failure: the check could not run (exit status 8).
    pub error: Option<String>,
    pub counts: Counts,
    /// Whether repairs were allowed.
    pub repair: bool,
}

impl Report {
    fn failed(msg: impl Into<String>, repair: bool) -> Report {
        Report {
            error: Some(msg.into()),
            repair,
            ..Default::default()
        }
    }

    /// fsck(8) exit status: 0 clean, 1 all fixed, 4 left uncorrected, 8 operational error.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            8
        } else if self.findings.iter().any(|f| !f.fixed) {
            4
        } else if !self.findings.is_empty() {
            1
        } else {
            0
        }
    }

    /// No findings and no error.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.findings.is_empty()
    }

    /// The distinct finding codes, sorted.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.findings.iter().map(|f| f.code).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The report as the JSON object printed by `fsck-daxlink --json`.
    pub fn to_json(&self, image: &str) -> serde_json::Value {
        serde_json::json!({
            "image": image,
            "clean": self.is_clean(),
            "exit_code": self.exit_code(),
            "error": self.error,
            "findings": self.findings.iter().map(|f| serde_json::json!({
                "code": f.code, "message": f.message, "fixed": f.fixed,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
            "inodes": self.counts.inodes,
            "dirs": self.counts.dirs,
            "files": self.counts.files,
            "symlinks": self.counts.symlinks,
            "extents": self.counts.extents,
            "blocks_used": self.counts.blocks_used,
            "blocks_free": self.counts.blocks_free,
            "blocks_total": self.counts.blocks_total,
        })
    }

    /// The one-line summary printed after the findings.
    pub fn summary(&self, image: &str) -> String {
        if let Some(e) = &self.error {
            return format!("{image}: check failed: {e}");
        }
        let c = &self.counts;
        if self.findings.is_empty() {
            format!(
                "{image}: clean, {} inodes, {} blocks used of {}",
                c.inodes, c.blocks_used, c.blocks_total
            )
        } else {
            let fixed = self.findings.iter().filter(|f| f.fixed).count();
            format!(
                "{image}: {} problems, {} fixed; {} inodes, {} blocks used of {}",
                self.findings.len(),
                fixed,
                c.inodes,
                c.blocks_used,
                c.blocks_total
            )
        }
    }
}

/// Open an image or device and check it. `repair` maps it writable and locks it
/// exclusively; a check-only run takes a shared lock (see [`Media::lock_path`]),
/// so neither runs on a mounted read-write image.
pub fn check_path(path: &Path, repair: bool) -> Report {
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Report::failed(format!("cannot open {}: {e}", path.display()), repair),
    };
    use std::os::unix::fs::FileTypeExt;
    let mode = if md.file_type().is_char_device() {
        PersistMode::Cpu
    } else {
        PersistMode::Msync
    };
    match Media::open(path, mode, !repair) {
        Ok(m) => check(&m, repair),
        Err(e @ crate::media::MediaError::Busy(_)) => {
            Report::failed(format!("cannot open {}: {e}", path.display()), repair)
        }
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
            return Report {
                findings,
                notes,
                error: Some(e),
                counts: p.counts,
                repair: true,
            };
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
            });
        }
    }
    if !clean_after {
        // Whatever the repair passes could not fix is reported as left.
        let p = pass(media, false);
        if let Some(e) = p.error {
            return Report {
                findings,
                notes,
                error: Some(e),
                counts: p.counts,
                repair: true,
            };
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
                }),
            }
        }
    }
    Report {
        findings,
        notes,
        error: None,
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
// A bit set over the data area
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Bits {
    w: Vec<u64>,
    n: u64,
}

impl Bits {
    fn new(n: u64) -> Bits {
        Bits {
            w: vec![0; n.div_ceil(64) as usize],
            n,
        }
    }
    fn get(&self, i: u64) -> bool {
        i < self.n && self.w[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: u64, v: bool) {
        if i < self.n {
            let m = 1u64 << (i % 64);
            if v {
                self.w[(i / 64) as usize] |= m;
            } else {
                self.w[(i / 64) as usize] &= !m;
            }
        }
    }
    /// Set or clear bits [start, start+len) (clipped to the set).
    fn range(&mut self, start: u64, len: u64, v: bool) {
        let end = start.saturating_add(len).min(self.n);
        let mut i = start;
        while i < end {
            if i.is_multiple_of(64) && end - i >= 64 {
                self.w[(i / 64) as usize] = if v { u64::MAX } else { 0 };
                i += 64;
            } else {
                self.set(i, v);
                i += 1;
            }
        }
    }
    fn count(&self) -> u64 {
        self.w.iter().map(|w| w.count_ones() as u64).sum()
    }
}

/// Runs of set bits in `mask` words (bit index relative to the data area).
fn runs_of(words: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (wi, &w) in words.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            let b = w.trailing_zeros() as u64;
            w &= w - 1;
            let i = wi as u64 * 64 + b;
            match out.last_mut() {
                Some((s, l)) if *s + *l == i => *l += 1,
                _ => out.push((i, 1)),
            }
        }
    }
    out
}

fn blocks_text(start: u64, len: u64) -> String {
    if len == 1 {
        format!("block {start}")
    } else {
        format!("blocks {start}-{} ({len})", start + len - 1)
    }
}

// ---------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Owner {
    Record(RecKind),
    Xattr(u64),
    Deferred,
    /// A record block fsck itself allocates (lost+found entries, refcounts).
    New,
    /// Some file extent (shared blocks are legal between extents).
    AnExtent,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Record(k) => write!(f, "the {k:?} record block"),
            Owner::Xattr(i) => write!(f, "the xattr blob of inode {i}"),
            Owner::Deferred => write!(f, "a deferred-free orphan record"),
            Owner::New => write!(f, "a new record block"),
            Owner::AnExtent => write!(f, "a file extent"),
        }
    }
}

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

fn ftype_byte(mode: u32) -> u8 {
    ((mode & libc::S_IFMT) >> 12) as u8
}

fn name_text(n: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(n))
}

fn free_inode(generation: u32) -> InodeRec {
    InodeRec {
        generation,
        ..Default::default()
    }
}

/// Piecewise reference counts of a set of block ranges: start -> (len, count),
/// count >= 1, adjacent pieces of equal count merged.
fn count_pieces(ranges: impl Iterator<Item = (u64, u64)>) -> BTreeMap<u64, (u64, u32)> {
    let mut ev: Vec<(u64, i64)> = Vec::new();
    for (p, l) in ranges {
        ev.push((p, 1));
        ev.push((p.saturating_add(l), -1));
    }
    ev.sort_unstable();
    let mut out: BTreeMap<u64, (u64, u32)> = BTreeMap::new();
    let mut last_piece: Option<u64> = None;
    let (mut cur, mut at) = (0i64, 0u64);
    for (x, d) in ev {
        if x > at && cur > 0 {
            let c = cur.min(u32::MAX as i64) as u32;
            match last_piece.and_then(|k| out.get_mut(&k).map(|v| (k, v))) {
                Some((k, v)) if k + v.0 == at && v.1 == c => v.0 += x - at,
                _ => {
                    out.insert(at, (x - at, c));
                    last_piece = Some(at);
                }
            }
        }
        cur += d;
        at = x;
    }
    out
}

/// Where the refcount records `recs` (start -> (len, count, slot)) disagree
/// with the counts `pieces`: (start, len, mapped, recorded) runs. A block
/// mapped twice or more needs a record with that count; others need none.
fn ref_mismatches(
    pieces: &BTreeMap<u64, (u64, u32)>,
    recs: &BTreeMap<u64, (u64, u32, u64)>,
) -> Vec<(u64, u64, u32, Option<u32>)> {
    let mut cuts: Vec<u64> = Vec::new();
    for (&p, &(l, c)) in pieces {
        if c >= 2 {
            cuts.push(p);
            cuts.push(p + l);
        }
    }
    for (&p, &(l, _, _)) in recs {
        cuts.push(p);
        cuts.push(p + l);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let want_at = |x: u64| {
        pieces
            .range(..=x)
            .next_back()
            .filter(|(k, v)| *k + v.0 > x)
            .map(|(_, v)| v.1)
            .unwrap_or(0)
    };
    let have_at = |x: u64| {
        recs.range(..=x)
            .next_back()
            .filter(|(k, v)| *k + v.0 > x)
            .map(|(_, v)| v.1)
    };
    let mut out: Vec<(u64, u64, u32, Option<u32>)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (want, have) = (want_at(a), have_at(a));
        let bad = if want >= 2 {
            have != Some(want)
        } else {
            have.is_some()
        };
        if !bad {
            continue;
        }
        match out.last_mut() {
            Some(l) if l.0 + l.1 == a && l.2 == want && l.3 == have => l.1 += b - a,
            _ => out.push((a, b - a, want, have)),
        }
    }
    out
}

/// The transaction at the start of the journal area, if it carries `want`
/// (`Journal::pending`; the area lies inside the image by the geometry check,
/// so reading it does not fail).
fn pending(media: &Media, geo: JournalGeometry, want: u64) -> TxState {
    Journal::pending(media, geo, want).unwrap_or(TxState::None)
}

struct Ck<'a> {
    media: &'a Media,
    repair: bool,
    /// Pending journal replay overlaid on every read (check-only mode).
    view: Tx,
    /// Repair stores, applied at the end of a repair pass.
    fix: Tx,
    out: Out,
    sb: Superblock,
    geo: JournalGeometry,
    nblocks: u64,
    /// The on-media bitmap (bits of blocks whose bitmap block is bad are 0).
    bm: Bits,
    bm_bad: Vec<bool>,
    roots: Roots,
    roots_dirty: bool,
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
    let sb = match superblocks(media, repair, &mut out) {
        Ok(sb) => sb,
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
        out,
        geo,
        nblocks,
        bm: Bits::new(nblocks),
        bm_bad: vec![false; sb.bitmap_blocks as usize],
        sb,
        roots: Roots::default(),
        roots_dirty: false,
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

/// Read both copies; report and (repairing) rewrite a bad or diverging one.
fn superblocks(media: &Media, repair: bool, out: &mut Out) -> Result<Superblock, String> {
    let mut copies: Vec<Result<Superblock, String>> = Vec::new();
    for i in 0..2u64 {
        copies.push(
            media
                .read_vec(i * BS, SB_SIZE)
                .map_err(|e| e.to_string())
                .and_then(|b| Superblock::decode(&b, media.len()).map_err(|e| e.to_string())),
        );
    }
    let mut best: Option<(usize, Superblock)> = None;
    for (i, c) in copies.iter().enumerate() {
        if let Ok(sb) = c {
            if best
                .as_ref()
                .is_none_or(|(_, b)| sb.generation > b.generation)
            {
                best = Some((i, sb.clone()));
            }
        }
    }
    let Some((bi, best)) = best else {
        let e = |c: &Result<Superblock, String>| c.as_ref().err().cloned().unwrap_or_default();
        return Err(format!(
            "no valid superblock (copy A: {}; copy B: {}): not a daxlink filesystem, or both copies are damaged",
            e(&copies[0]),
            e(&copies[1])
        ));
    };
    let norm = |s: &Superblock| Superblock {
        generation: 0,
        clean: false,
        mount_count: 0,
        ..s.clone()
    };
    for (i, c) in copies.iter().enumerate() {
        let name = if i == 0 { "A" } else { "B" };
        let msg = match c {
            Err(e) => format!(
                "superblock copy {name} (block {i}): {e}; rewritten from copy {}",
                if bi == 0 { "A" } else { "B" }
            ),
            Ok(sb) if i != bi && norm(sb) != norm(&best) => {
                format!("superblock copy {name} (block {i}) disagrees with the other copy on identity or geometry")
            }
            Ok(_) => continue,
        };
        let code = if c.is_err() {
            "superblock-bad"
        } else {
            "superblock-mismatch"
        };
        out.add(code, true, msg);
        if repair {
            media
                .write_persist(i as u64 * BS, &best.encode())
                .map_err(|e| format!("cannot rewrite superblock copy {name}: {e}"))?;
        }
    }
    if best.needs_read_only() {
        if repair {
            return Err(format!(
                "unknown read-only-compatible features {:#x}: this fsck cannot repair the filesystem",
                best.ro_compat
            ));
        }
        out.note(format!(
            "unknown read-only-compatible features {:#x}: checked as format v1",
            best.ro_compat
        ));
    }
    if !best.clean {
        out.note("the filesystem was not cleanly unmounted".into());
    }
    Ok(best)
}

impl Ck<'_> {
    fn rd(&self, off: u64, len: usize) -> Option<Vec<u8>> {
        self.view.read_vec(self.media, off, len).ok()
    }

    fn zero(&mut self, off: u64, len: usize) {
        self.fix.write(off, &vec![0u8; len]);
    }

    fn in_data(&self, phys: u64, len: u64) -> bool {
        match phys.checked_add(len) {
            Some(end) => len > 0 && phys >= self.sb.data_start && end <= self.sb.total_blocks,
            None => false,
        }
    }

    fn live(&self, ino: u64) -> Option<&Ino> {
        self.inodes.get(&ino).filter(|i| !i.reclaim)
    }

    fn is_live_dir(&self, ino: u64) -> bool {
        self.live(ino).is_some_and(|i| i.is_dir())
    }

    fn run(&mut self) -> Result<(), String> {
        self.journal()?;
        self.load_bitmap();
        self.roots();
        for kind in REC_KINDS {
            self.chain(kind);
        }
        self.inode_table();
        self.root();
        self.xattrs();
        self.extents();
        self.refcounts_check();
        self.orphans();
        self.symlinks();
        self.dirents();
        self.orphan_inodes();
        self.namespace();
        self.link_counts();
        self.finish_reclaim();
        self.refcounts_final();
        self.bitmap();
        self.queue_inodes();
        if self.roots_dirty {
            let r = self.roots.encode();
            self.fix.write(self.sb.roots_block * BS, &r);
        }
        if self.repair {
            self.apply()?;
        }
        Ok(())
    }

    // -- journal ----------------------------------------------------------

    fn journal(&mut self) -> Result<(), String> {
        let geo = self.geo;
        // The reason alone (a journal error's text would repeat "journal header").
        let hdr = Journal::header(self.media, geo).map_err(|e| match e {
            JournalError::Format(e) => e.to_string(),
            JournalError::Media(e) => e.to_string(),
            e => e.to_string(),
        });
        let hdr = match hdr {
            Ok(h) => h,
            Err(e) => {
                // Whatever transaction the area holds is the latest one: replay it
                // if it is committed (idempotent), then start a fresh journal.
                let seq = Journal::area_seq(self.media, geo)
                    .ok()
                    .flatten()
                    .filter(|s| *s != u64::MAX);
                let entries = match seq.map(|s| pending(self.media, geo, s)) {
                    Some(TxState::Committed { entries, .. })
                        if entries.iter().all(|x| geo.entry_ok(x.off, x.data.len())) =>
                    {
                        entries
                    }
                    _ => Vec::new(),
                };
                self.out.add(
                    "journal-header",
                    true,
                    format!(
                        "{e}; journal reset{}",
                        if entries.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " after replaying its committed transaction ({} entries)",
                                entries.len()
                            )
                        }
                    ),
                );
                if self.repair {
                    let m = self.media;
                    Journal::store_direct(m, entries.iter().map(|x| (x.off, &x.data[..])))
                        .map_err(|e| format!("journal replay failed: {e}"))?;
                    let applied = if entries.is_empty() {
                        0
                    } else {
                        seq.unwrap_or(0)
                    };
                    Journal::reset(m, geo, applied)
                        .map_err(|e| format!("journal reset failed: {e}"))?;
                } else {
                    for x in entries {
                        self.view.write(x.off, &x.data);
                    }
                }
                return Ok(());
            }
        };
        let want = hdr.applied_seq + 1;
        match pending(self.media, geo, want) {
            TxState::None => {}
            TxState::Torn { seq } => {
                let cleared = if self.repair {
                    Journal::discard(self.media, geo)
                        .map_err(|e| format!("cannot clear the torn transaction: {e}"))?;
                    " (cleared)"
                } else {
                    ""
                };
                self.out.note(format!(
                    "journal-torn: transaction {seq} was never committed (torn by a crash) and is discarded{cleared}"
                ));
            }
            TxState::Committed { seq, entries } => {
                if let Some(x) = entries.iter().find(|x| !geo.entry_ok(x.off, x.data.len())) {
                    self.out.add(
                        "journal-bad-entry",
                        true,
                        format!(
                            "committed journal transaction {seq} stores {} bytes at {:#x}, outside the metadata area: transaction discarded",
                            x.data.len(),
                            x.off
                        ),
                    );
                    if self.repair {
                        Journal::discard(self.media, geo)
                            .map_err(|e| format!("cannot discard the transaction: {e}"))?;
                    }
                    return Ok(());
                }
                self.out.add(
                    "journal-replay",
                    true,
                    format!(
                        "journal needs replay: transaction {seq} ({} entries) is committed but not applied",
                        entries.len()
                    ),
                );
                if self.repair {
                    Journal::recover(self.media, geo)
                        .map_err(|e| format!("journal replay failed: {e}"))?;
                } else {
                    for x in entries {
                        self.view.write(x.off, &x.data);
                    }
                }
            }
        }
        Ok(())
    }

    // -- bitmap (load) ----------------------------------------------------

    fn load_bitmap(&mut self) {
        let mut tail_set = 0u64;
        for k in 0..self.sb.bitmap_blocks {
            let off = (self.sb.bitmap_start + k) * BS;
            let Some(blk) = self.rd(off, BS as usize) else {
                self.bm_bad[k as usize] = true;
                continue;
            };
            if let Err(e) = format::bitmap_check(&blk) {
                self.bm_bad[k as usize] = true;
                self.out.add(
                    "bitmap-crc",
                    true,
                    format!(
                        "bitmap block {k} (block {}): {e}; rebuilt",
                        self.sb.bitmap_start + k
                    ),
                );
                continue;
            }
            let first = k * BITS_PER_BITMAP_BLOCK;
            for (j, &byte) in blk[..BITMAP_BYTES].iter().enumerate() {
                if byte == 0 {
                    continue;
                }
                for b in 0..8u64 {
                    if byte & (1 << b) != 0 {
                        let i = first + j as u64 * 8 + b;
                        if i < self.nblocks {
                            self.bm.set(i, true);
                        } else {
                            tail_set += 1;
                        }
                    }
                }
            }
        }
        if tail_set > 0 {
            self.out.add(
                "bitmap-tail",
                true,
                format!("{tail_set} bitmap bits past the last data block are set; cleared"),
            );
        }
    }

    fn bitmap_ok(&self, blk: u64) -> Option<bool> {
        let i = blk.checked_sub(self.sb.data_start)?;
        let k = (i / BITS_PER_BITMAP_BLOCK) as usize;
        if i >= self.nblocks || self.bm_bad.get(k).copied().unwrap_or(true) {
            return None;
        }
        Some(self.bm.get(i))
    }

    // -- roots and chains -------------------------------------------------

    fn roots(&mut self) {
        let r = self
            .rd(self.sb.roots_block * BS, format::ROOTS_SIZE)
            .ok_or_else(|| "unreadable".to_string())
            .and_then(|b| Roots::decode(&b).map_err(|e| e.to_string()));
        match r {
            Ok(r) => self.roots = r,
            Err(e) => {
                self.roots = self.scan_heads();
                self.roots_dirty = true;
                self.out.add(
                    "roots-bad",
                    true,
                    format!(
                        "roots block: {e}; rebuilt by scanning the data area (chain heads {:?})",
                        self.roots.heads
                    ),
                );
            }
        }
    }

    /// Find the record chains by scanning the data area for record blocks
    /// (blocks marked used when the bitmap says so): per kind, the longest chain
    /// starting at a block no other block links to.
    fn scan_heads(&self) -> Roots {
        let mut cand: Vec<HashMap<u64, u64>> = vec![HashMap::new(); REC_KINDS.len()];
        for b in self.sb.data_start..self.sb.total_blocks {
            if self.bitmap_ok(b) == Some(false) {
                continue;
            }
            let Some(h) = self.rd(b * BS, REC_HDR) else {
                continue;
            };
            if let Ok(h) = RecBlockHdr::decode(&h) {
                cand[h.kind.index()].insert(b, h.next);
            }
        }
        let mut heads = Roots::default();
        for (k, c) in cand.iter().enumerate() {
            let linked: HashSet<u64> = c.values().copied().collect();
            let mut best = (0usize, 0u64);
            let mut starts: Vec<u64> = c.keys().copied().filter(|b| !linked.contains(b)).collect();
            starts.sort_unstable();
            for s in starts {
                let mut seen = HashSet::new();
                let mut b = s;
                while b != 0 && seen.insert(b) {
                    match c.get(&b) {
                        Some(n) => b = *n,
                        None => break,
                    }
                }
                if seen.len() > best.0 {
                    best = (seen.len(), s);
                }
            }
            if let Some(h) = heads.heads.get_mut(k) {
                *h = best.1;
            }
        }
        heads
    }

    fn chain(&mut self, kind: RecKind) {
        let ki = kind.index();
        // Blocks are read through the replay overlay, which the visits leave alone.
        let view = std::mem::take(&mut self.view);
        let (media, sb) = (self.media, self.sb.clone());
        let read = |blk: u64| Ok(view.read_vec(media, blk * BS, BS as usize).ok());
        let w = chain::walk(&sb, kind, self.roots.heads[ki], read, |blk, b| {
            self.chain_block(kind, blk, b);
            Ok::<(), std::convert::Infallible>(())
        });
        self.view = view;
        let Ok(chain::Walked {
            broken: Some(bad), ..
        }) = w
        else {
            return;
        };
        let blk = bad.blk;
        let p = match bad.problem {
            chain::Problem::Outside => "lies outside the data area".to_string(),
            chain::Problem::Loop => "loops back into the chain".to_string(),
            chain::Problem::Unreadable => "is unreadable".to_string(),
            chain::Problem::Header(e) => e.to_string(),
            chain::Problem::Kind(k) => format!("is a {k:?} block"),
        };
        let from = match bad.prev {
            None => "the roots block".to_string(),
            Some(p) => format!("block {p}"),
        };
        self.out.add(
            "chain-bad",
            true,
            format!("{kind:?} record chain: block {blk} (linked from {from}) {p}; chain cut there"),
        );
        match bad.prev {
            None => {
                self.roots.heads[ki] = 0;
                self.roots_dirty = true;
            }
            Some(p) => {
                let h = RecBlockHdr { kind, next: 0 }.encode();
                self.fix.write(p * BS, &h);
            }
        }
    }

    fn chain_block(&mut self, kind: RecKind, blk: u64, b: &[u8]) {
        self.claim(blk, 1, Owner::Record(kind)).ok();
        let size = kind.slot_size();
        for (i, (slot, s)) in chain::slots(kind, blk, b).enumerate() {
            fn put<T>(v: &mut Vec<(u64, T)>, slot: u64, r: Option<T>) -> bool {
                match r {
                    Some(r) => {
                        v.push((slot, r));
                        true
                    }
                    None => false,
                }
            }
            let res: Result<bool, format::FormatError> = match kind {
                RecKind::Extent => {
                    ExtentRec::decode(s).map(|r| put(&mut self.extents_raw, slot, r))
                }
                RecKind::Dirent => {
                    DirentRec::decode(s).map(|r| put(&mut self.dirents_raw, slot, r))
                }
                RecKind::Orphan => {
                    OrphanRec::decode(s).map(|r| put(&mut self.orphans_raw, slot, r))
                }
                RecKind::Refcount => {
                    RefcountRec::decode(s).map(|r| put(&mut self.refcounts_raw, slot, r))
                }
            };
            match res {
                Ok(true) => {}
                Ok(false) => self.free_slots[kind.index()].push(slot),
                Err(e) => {
                    self.out.add(
                        "record-bad",
                        true,
                        format!(
                            "{kind:?} record at {slot:#x} (block {blk} slot {i}): {e}; cleared"
                        ),
                    );
                    self.zero(slot, size);
                    self.free_slots[kind.index()].push(slot);
                }
            }
        }
    }

    // -- block claims -----------------------------------------------------

    /// The first block of [phys, phys+len) already in use, and by whom: an
    /// exclusive owner (record block, xattr blob, deferred range), or with
    /// `extents` also a file extent (extents may share blocks with each other).
    fn conflict(&self, phys: u64, len: u64, extents: bool) -> Option<(u64, Owner)> {
        let end = phys + len;
        if let Some((&s, &(l, o))) = self.claims.range(..=phys).next_back() {
            if s + l > phys {
                return Some((phys, o));
            }
        }
        if let Some((&s, &(_, o))) = self.claims.range(phys..end).next() {
            return Some((s, o));
        }
        if extents {
            let ds = self.sb.data_start;
            for b in phys..end {
                if self.ext_bits.get(b - ds) {
                    return Some((b, Owner::AnExtent));
                }
            }
        }
        None
    }

    /// Claim [phys, phys+len) exclusively for `owner`, or name the first block
    /// already in use and by whom.
    fn claim(&mut self, phys: u64, len: u64, owner: Owner) -> Result<(), (u64, Owner)> {
        if let Some(c) = self.conflict(phys, len, true) {
            return Err(c);
        }
        self.claims.insert(phys, (len, owner));
        Ok(())
    }

    fn release(&mut self, phys: u64, len: u64) {
        if self.in_data(phys, len) {
            self.released.push((phys, len));
        }
    }

    // -- inodes -----------------------------------------------------------

    fn inode_table(&mut self) {
        let count = self.sb.inode_count;
        let mut ino = 1u64;
        while ino <= count {
            let n = INODES_PER_BLOCK.min(count - ino + 1);
            let off = self.sb.inode_offset(ino);
            let Some(buf) = self.rd(off, n as usize * INODE_SIZE) else {
                break;
            };
            for (i, slot) in buf.chunks_exact(INODE_SIZE).enumerate() {
                let this = ino + i as u64;
                match InodeRec::decode(slot) {
                    Err(e) => {
                        self.out
                            .add("inode-bad", true, format!("inode {this}: {e}; cleared"));
                        self.bad_inodes
                            .insert(this, Le::u32(slot, 76).wrapping_add(1));
                    }
                    Ok(rec) if rec.is_free() => {
                        let clean = free_inode(rec.generation);
                        if rec != clean {
                            self.out.add(
                                "inode-free-dirty",
                                true,
                                format!("free inode {this} holds stale fields; cleaned"),
                            );
                            self.fix.write(self.sb.inode_offset(this), &clean.encode());
                        }
                    }
                    Ok(rec) => {
                        self.inodes.insert(
                            this,
                            Ino {
                                orig: Some(rec.clone()),
                                rec,
                                extents: BTreeMap::new(),
                                xattr_claimed: false,
                                orphan_slot: None,
                                reclaim: false,
                                fresh: false,
                            },
                        );
                    }
                }
            }
            ino += n;
        }
    }

    fn root(&mut self) {
        let why = match self.inodes.get(&ROOT_INO) {
            Some(r) if r.is_dir() => return,
            Some(r) => format!("is not a directory (mode {:#o})", r.rec.mode),
            None if self.bad_inodes.contains_key(&ROOT_INO) => "does not decode".to_string(),
            None => "is free".to_string(),
        };
        self.out.add(
            "root-bad",
            true,
            format!("the root directory (inode 1) {why}; a new empty root is made"),
        );
        let generation = match self.inodes.get(&ROOT_INO) {
            Some(r) => r.rec.generation,
            None => self.bad_inodes.get(&ROOT_INO).copied().unwrap_or(0),
        };
        self.bad_inodes.remove(&ROOT_INO);
        let orig = self.inodes.get(&ROOT_INO).and_then(|r| r.orig.clone());
        let t = Timespec::now();
        self.inodes.insert(
            ROOT_INO,
            Ino {
                orig,
                rec: InodeRec {
                    mode: libc::S_IFDIR | 0o755,
                    nlink: 2,
                    atime: t,
                    mtime: t,
                    ctime: t,
                    crtime: t,
                    generation,
                    ..Default::default()
                },
                extents: BTreeMap::new(),
                xattr_claimed: false,
                orphan_slot: None,
                reclaim: false,
                fresh: true,
            },
        );
    }

    // -- xattrs -----------------------------------------------------------

    fn xattrs(&mut self) {
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            let r = self.inodes[&ino].rec.clone();
            if r.xattr_block == 0 && r.xattr_blocks == 0 && r.xattr_len == 0 && r.xattr_crc == 0 {
                continue;
            }
            let blocks = r.xattr_blocks as u64;
            let len = r.xattr_len as u64;
            let why = if blocks == 0 || len == 0 {
                Some("empty blob with a non-zero pointer".to_string())
            } else if len as usize > XATTR_TOTAL_MAX {
                Some(format!("blob of {len} bytes exceeds the 1 MiB limit"))
            } else if len.div_ceil(BS) != blocks {
                Some(format!("{len} bytes do not fill {blocks} blocks"))
            } else if !self.in_data(r.xattr_block, blocks) {
                Some("blob lies outside the data area".to_string())
            } else {
                match self.rd(r.xattr_block * BS, len as usize) {
                    None => Some("blob unreadable".to_string()),
                    Some(b) if format::crc(&b) != r.xattr_crc => {
                        Some("blob checksum mismatch".to_string())
                    }
                    Some(b) => match format::decode_xattrs(&b) {
                        Err(e) => Some(e.to_string()),
                        Ok(m) => {
                            let blocks = match self.check_acls(ino, &r, m) {
                                Some(n) => n,
                                None => {
                                    self.release(r.xattr_block, blocks);
                                    self.clear_xattr(ino);
                                    continue;
                                }
                            };
                            match self.claim(r.xattr_block, blocks, Owner::Xattr(ino)) {
                                Ok(()) => None,
                                Err((blk, o)) => {
                                    self.out.add(
                                    "block-dup",
                                    true,
                                    format!(
                                        "block {blk} referenced twice: by {o} and by the xattr blob of inode {ino}; xattrs of inode {ino} cleared"
                                    ),
                                );
                                    self.release(r.xattr_block, blocks);
                                    self.clear_xattr(ino);
                                    continue;
                                }
                            }
                        }
                    },
                }
            };
            match why {
                None => {
                    if let Some(i) = self.inodes.get_mut(&ino) {
                        i.xattr_claimed = true;
                    }
                }
                Some(w) => {
                    self.out.add(
                        "xattr-bad",
                        true,
                        format!(
                            "inode {ino}: xattr blob at block {} (+{blocks} blocks, {len} bytes): {w}; xattrs cleared",
                            r.xattr_block
                        ),
                    );
                    self.release(r.xattr_block, blocks);
                    self.clear_xattr(ino);
                }
            }
        }
    }

    /// The ACL xattrs of inode `ino` (whose blob decoded to `m`) must be
    /// valid ACLs, and a default ACL only on a directory, as mount and the
    /// kernel require (`crate::acl` is the one definition). Bad ones are
    /// dropped: the blob is rewritten in place, smaller. Returns the blocks
    /// the blob keeps, or `None` when nothing is left of it.
    fn check_acls(&mut self, ino: u64, r: &InodeRec, mut m: format::XattrMap) -> Option<u64> {
        let is_dir = r.mode & libc::S_IFMT == libc::S_IFDIR;
        let mut bad = Vec::new();
        for name in [crate::acl::ACCESS, crate::acl::DEFAULT] {
            let Some(v) = m.get(name) else { continue };
            let why = match crate::acl::Acl::decode(v) {
                Err(e) => Some(e.to_string()),
                Ok(_) if name == crate::acl::DEFAULT && !is_dir => {
                    Some("a default ACL on a non-directory".to_string())
                }
                Ok(_) => None,
            };
            if let Some(w) = why {
                bad.push((name, w));
            }
        }
        let blocks = r.xattr_blocks as u64;
        if bad.is_empty() {
            return Some(blocks);
        }
        for (name, w) in &bad {
            m.remove(*name);
            self.out.add(
                "acl-bad",
                true,
                format!(
                    "inode {ino}: {}: {w}; removed",
                    String::from_utf8_lossy(name)
                ),
            );
        }
        if m.is_empty() {
            return None;
        }
        let blob = format::encode_xattrs(&m);
        let keep = (blob.len() as u64).div_ceil(BS);
        let mut padded = blob.clone();
        padded.resize((keep * BS) as usize, 0);
        self.fix.write(r.xattr_block * BS, &padded);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.rec.xattr_blocks = keep as u32;
            i.rec.xattr_len = blob.len() as u32;
            i.rec.xattr_crc = format::crc(&blob);
        }
        // The blocks the smaller blob no longer needs return to free space.
        self.release(r.xattr_block + keep, blocks - keep);
        Some(keep)
    }

    fn clear_xattr(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.rec.xattr_block = 0;
            i.rec.xattr_blocks = 0;
            i.rec.xattr_len = 0;
            i.rec.xattr_crc = 0;
            i.xattr_claimed = false;
        }
    }

    // -- extents ----------------------------------------------------------

    fn extents(&mut self) {
        let raw = std::mem::take(&mut self.extents_raw);
        for (slot, x) in raw {
            let len = x.len as u64;
            let what = format!(
                "extent record at {slot:#x} (inode {}, logical {}, block {} +{len})",
                x.ino, x.logical, x.phys
            );
            let owner = self.inodes.get(&x.ino).map(|i| i.ftype());
            let problem: Option<(&'static str, String, bool)> = match owner {
                None => Some((
                    "extent-orphan",
                    format!("{what} belongs to a free inode"),
                    true,
                )),
                Some(t) if t != libc::S_IFREG && t != libc::S_IFLNK => Some((
                    "extent-bad-owner",
                    format!(
                        "{what} belongs to an inode of type {:#o} that has no data",
                        t
                    ),
                    true,
                )),
                Some(_) if !self.in_data(x.phys, len) => Some((
                    "extent-range",
                    format!("{what} lies beyond the device or outside the data area"),
                    false,
                )),
                Some(_) if x.logical.saturating_add(len) > MAX_LOGICAL => Some((
                    "extent-range",
                    format!("{what} lies beyond the largest file size"),
                    true,
                )),
                Some(_) => {
                    let ext = &self.inodes[&x.ino].extents;
                    let before = ext
                        .range(..=x.logical)
                        .next_back()
                        .filter(|(s, e)| **s + e.len > x.logical);
                    let after = ext.range(x.logical..x.logical + len).next();
                    before.or(after).map(|(s, _)| {
                        (
                            "extent-overlap",
                            format!("{what} overlaps the extent at logical block {s}"),
                            true,
                        )
                    })
                }
            };
            if let Some((code, msg, rel)) = problem {
                self.out.add(code, true, format!("{msg}; record dropped"));
                self.zero(slot, format::EXTENT_SIZE);
                if rel {
                    self.release(x.phys, len);
                }
                continue;
            }
            if let Some((blk, o)) = self.conflict(x.phys, len, false) {
                self.out.add(
                    "block-dup",
                    true,
                    format!("block {blk} referenced twice: by {o} and by {what}; the extent record dropped"),
                );
                self.zero(slot, format::EXTENT_SIZE);
                self.release(x.phys, len);
                continue;
            }
            self.ext_refs.push((x.phys, len));
            self.ext_bits.range(x.phys - self.sb.data_start, len, true);
            if let Some(i) = self.inodes.get_mut(&x.ino) {
                i.extents.insert(
                    x.logical,
                    Ext {
                        len,
                        phys: x.phys,
                        slot,
                    },
                );
            }
        }
    }

    fn write_extent(&mut self, ino: u64, logical: u64, e: Ext) {
        let r = ExtentRec {
            ino,
            logical,
            phys: e.phys,
            len: e.len as u32,
        };
        self.fix.write(e.slot, &r.encode());
    }

    /// Free every block of `ino` from logical block `from` on (an unfinished truncate).
    fn truncate_from(&mut self, ino: u64, from: u64) {
        let Some(i) = self.inodes.get(&ino) else {
            return;
        };
        let items: Vec<(u64, Ext)> = i
            .extents
            .iter()
            .filter(|(l, e)| **l + e.len > from)
            .map(|(l, e)| (*l, *e))
            .collect();
        for (l, e) in items {
            if l >= from {
                self.zero(e.slot, format::EXTENT_SIZE);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.extents.remove(&l);
                }
            } else {
                let keep = from - l;
                let ne = Ext { len: keep, ..e };
                self.write_extent(ino, l, ne);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.extents.insert(l, ne);
                }
            }
        }
    }

    // -- orphans ----------------------------------------------------------

    fn orphans(&mut self) {
        let raw = std::mem::take(&mut self.orphans_raw);
        for (slot, o) in raw {
            let bad = |s: &mut Self, msg: String| {
                s.out.add(
                    "orphan-bad",
                    true,
                    format!("orphan record at {slot:#x} {msg}; dropped"),
                );
                s.zero(slot, format::ORPHAN_SIZE);
            };
            match o {
                OrphanRec::Inode(ino) => match self.inodes.get_mut(&ino) {
                    None => bad(self, format!("names free inode {ino}")),
                    Some(i) if i.orphan_slot.is_some() => {
                        bad(self, format!("names inode {ino} a second time"))
                    }
                    Some(i) => i.orphan_slot = Some(slot),
                },
                OrphanRec::Truncate { ino, from } => {
                    if self.inodes.contains_key(&ino) {
                        self.out.add(
                            "orphan-reclaim",
                            true,
                            format!("unfinished truncate of inode {ino} from logical block {from}: finished"),
                        );
                        self.truncate_from(ino, from);
                        self.zero(slot, format::ORPHAN_SIZE);
                    } else {
                        bad(
                            self,
                            format!("(unfinished truncate) names free inode {ino}"),
                        );
                    }
                }
                OrphanRec::Blocks { phys, len } => {
                    if !self.in_data(phys, len) {
                        bad(
                            self,
                            format!(
                                "(deferred free) names blocks {phys}+{len} outside the data area"
                            ),
                        );
                        continue;
                    }
                    match self.claim(phys, len, Owner::Deferred) {
                        Err((blk, o)) => {
                            self.out.add(
                                "block-dup",
                                true,
                                format!("block {blk} referenced twice: by {o} and by the deferred-free orphan record at {slot:#x}; record dropped"),
                            );
                            self.zero(slot, format::ORPHAN_SIZE);
                        }
                        Ok(()) => {
                            self.out.add(
                                "orphan-reclaim",
                                true,
                                format!(
                                    "deferred free of {} pending: freed",
                                    blocks_text(phys, len)
                                ),
                            );
                            self.zero(slot, format::ORPHAN_SIZE);
                        }
                    }
                }
            }
        }
    }

    // -- symlinks ---------------------------------------------------------

    fn symlinks(&mut self) {
        let links: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.ftype() == libc::S_IFLNK)
            .map(|(k, _)| *k)
            .collect();
        for ino in links {
            let (size, exts) = {
                let i = &self.inodes[&ino];
                (
                    i.rec.size,
                    i.extents.iter().map(|(l, e)| (*l, *e)).collect::<Vec<_>>(),
                )
            };
            let mut problems = Vec::new();
            let Some(&(_, first)) = exts.iter().find(|(l, _)| *l == 0) else {
                self.out.add(
                    "symlink-bad",
                    true,
                    format!("symlink {ino} has no target block at logical block 0; removed"),
                );
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.reclaim = true;
                }
                continue;
            };
            for (l, e) in exts.iter().filter(|(l, _)| *l != 0) {
                problems.push(format!("extra extent at logical block {l} dropped"));
                self.zero(e.slot, format::EXTENT_SIZE);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.extents.remove(l);
                }
            }
            if first.len != 1 {
                problems.push(format!("target extent of {} blocks cut to 1", first.len));
                let ne = Ext { len: 1, ..first };
                self.write_extent(ino, 0, ne);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.extents.insert(0, ne);
                }
            }
            if size == 0 || size > 4095 {
                let n = self
                    .rd(first.phys * BS, 4095)
                    .map(|b| b.iter().position(|&c| c == 0).unwrap_or(4095))
                    .unwrap_or(0);
                if n == 0 {
                    self.out.add(
                        "symlink-bad",
                        true,
                        format!("symlink {ino} has size {size} and an empty target; removed"),
                    );
                    if let Some(i) = self.inodes.get_mut(&ino) {
                        i.reclaim = true;
                    }
                    continue;
                }
                problems.push(format!("size {size} set to the target length {n}"));
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.rec.size = n as u64;
                }
            }
            if !problems.is_empty() {
                self.out.add(
                    "symlink-bad",
                    true,
                    format!("symlink {ino}: {}", problems.join(", ")),
                );
            }
        }
    }

    // -- directory entries ------------------------------------------------

    fn add_dent(&mut self, d: Dent) -> usize {
        let idx = self.dents.len();
        self.names.insert((d.parent, d.name.clone()), idx);
        self.kids.entry(d.parent).or_default().push(idx);
        if self.is_live_dir(d.child) {
            self.dir_parent.insert(d.child, idx);
        }
        self.dents.push(d);
        idx
    }

    fn remove_dent(&mut self, idx: usize) {
        let (slot, parent, child, name) = {
            let d = &mut self.dents[idx];
            d.alive = false;
            (d.slot, d.parent, d.child, d.name.clone())
        };
        self.names.remove(&(parent, name));
        if self.dir_parent.get(&child) == Some(&idx) {
            self.dir_parent.remove(&child);
        }
        self.zero(slot, format::DIRENT_SIZE);
        self.free_slots[RecKind::Dirent.index()].push(slot);
    }

    fn dirents(&mut self) {
        let raw = std::mem::take(&mut self.dirents_raw);
        for (slot, d) in raw {
            let what = format!(
                "directory entry {} in inode {} (slot {slot:#x})",
                name_text(&d.name),
                d.parent
            );
            let problem: Option<(&'static str, String)> = if !self.is_live_dir(d.parent) {
                Some((
                    "dirent-bad-parent",
                    format!("{what}: inode {} is not an in-use directory", d.parent),
                ))
            } else if self.live(d.child).is_none() {
                Some((
                    "dirent-free-inode",
                    format!("{what} points at free inode {}", d.child),
                ))
            } else if d.child == ROOT_INO {
                Some(("dirent-to-root", format!("{what} names the root directory")))
            } else if self.names.contains_key(&(d.parent, d.name.clone())) {
                Some((
                    "dirent-dup-name",
                    format!("{what}: the directory already holds this name"),
                ))
            } else if self.is_live_dir(d.child) && self.dir_parent.contains_key(&d.child) {
                Some((
                    "dir-multi-link",
                    format!("{what}: directory {} already has an entry", d.child),
                ))
            } else {
                None
            };
            if let Some((code, msg)) = problem {
                self.out.add(code, true, format!("{msg}; entry removed"));
                self.zero(slot, format::DIRENT_SIZE);
                self.free_slots[RecKind::Dirent.index()].push(slot);
                continue;
            }
            let want = ftype_byte(self.inodes[&d.child].rec.mode);
            if d.ftype != want {
                self.out.add(
                    "dirent-ftype",
                    true,
                    format!(
                        "{what}: file type {} but inode {} has type {want}; corrected",
                        d.ftype, d.child
                    ),
                );
                let r = DirentRec {
                    ftype: want,
                    ..d.clone()
                };
                self.fix.write(slot, &r.encode());
            }
            self.add_dent(Dent {
                slot,
                parent: d.parent,
                child: d.child,
                name: d.name,
                alive: true,
            });
        }
    }

    fn named_count(&self) -> HashMap<u64, u32> {
        let mut m: HashMap<u64, u32> = HashMap::new();
        for d in self.dents.iter().filter(|d| d.alive) {
            *m.entry(d.child).or_default() += 1;
        }
        m
    }

    fn has_kids(&self, ino: u64) -> bool {
        self.kids
            .get(&ino)
            .is_some_and(|v| v.iter().any(|&i| self.dents[i].alive))
    }

    /// Orphan records of inodes: reclaim the unlinked ones, drop the others.
    fn orphan_inodes(&mut self) {
        let named = self.named_count();
        let held: Vec<(u64, u64)> = self
            .inodes
            .iter()
            .filter_map(|(k, i)| i.orphan_slot.map(|s| (*k, s)))
            .collect();
        for (ino, slot) in held {
            let n = named.get(&ino).copied().unwrap_or(0);
            let (nlink, reclaimed) = {
                let i = &self.inodes[&ino];
                (i.rec.nlink, i.reclaim)
            };
            if reclaimed {
                continue;
            }
            if nlink == 0 && n == 0 && !self.has_kids(ino) {
                self.out.add(
                    "orphan-reclaim",
                    true,
                    format!("inode {ino} was unlinked while open (orphan record at {slot:#x}): reclaimed"),
                );
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.reclaim = true;
                }
            } else {
                self.out.add(
                    "orphan-bad",
                    true,
                    format!(
                        "orphan record at {slot:#x} names inode {ino}, which is still linked (nlink {nlink}, {n} entries); dropped"
                    ),
                );
                self.zero(slot, format::ORPHAN_SIZE);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.orphan_slot = None;
                }
            }
        }
    }

    // -- reachability -----------------------------------------------------

    fn mark_reachable(&self, start: u64, reach: &mut HashSet<u64>) {
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            let Some(ks) = self.kids.get(&d) else {
                continue;
            };
            for &i in ks {
                let e = &self.dents[i];
                if e.alive && reach.insert(e.child) && self.is_live_dir(e.child) {
                    stack.push(e.child);
                }
            }
        }
    }

    fn namespace(&mut self) {
        let mut reach = HashSet::new();
        reach.insert(ROOT_INO);
        self.mark_reachable(ROOT_INO, &mut reach);
        let dirs: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(k, i)| !i.reclaim && i.is_dir() && !reach.contains(k))
            .map(|(k, _)| *k)
            .collect();
        for ino in dirs {
            if reach.contains(&ino) {
                continue;
            }
            // Walk up to the top of this detached tree, cutting a cycle if there is one.
            let mut on_path = HashSet::new();
            on_path.insert(ino);
            let mut cur = ino;
            while let Some(&idx) = self.dir_parent.get(&cur) {
                let p = self.dents[idx].parent;
                if on_path.contains(&p) {
                    let name = name_text(&self.dents[idx].name);
                    self.out.add(
                        "dir-cycle",
                        true,
                        format!(
                            "directory {cur} (entry {name} in directory {p}) is in a directory cycle detached from the root; entry removed"
                        ),
                    );
                    self.remove_dent(idx);
                    break;
                }
                if reach.contains(&p) {
                    break;
                }
                on_path.insert(p);
                cur = p;
            }
            let top = cur;
            if reach.contains(&top) {
                continue;
            }
            let nlink = self.inodes[&top].rec.nlink;
            if nlink == 0 && !self.has_kids(top) {
                self.out.add(
                    "inode-unlinked",
                    true,
                    format!("directory {top} has no links, no entries and no orphan record; freed"),
                );
                if let Some(i) = self.inodes.get_mut(&top) {
                    i.reclaim = true;
                }
                reach.insert(top);
                continue;
            }
            let placed = self.attach(top, &mut reach);
            self.out.add(
                "dir-unreachable",
                placed.is_some(),
                match &placed {
                    Some(p) => {
                        format!("directory {top} is not reachable from the root; moved to {p}")
                    }
                    None => format!(
                        "directory {top} is not reachable from the root; cannot create /lost+found"
                    ),
                },
            );
            reach.insert(top);
            self.mark_reachable(top, &mut reach);
        }
        let others: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(k, i)| !i.reclaim && !reach.contains(k))
            .map(|(k, _)| *k)
            .collect();
        for ino in others {
            let nlink = self.inodes[&ino].rec.nlink;
            if nlink == 0 {
                self.out.add(
                    "inode-unlinked",
                    true,
                    format!("inode {ino} has no links and no orphan record; freed"),
                );
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.reclaim = true;
                }
                continue;
            }
            let placed = self.attach(ino, &mut reach);
            self.out.add(
                "inode-unreachable",
                placed.is_some(),
                match &placed {
                    Some(p) => {
                        format!("inode {ino} (nlink {nlink}) is in no directory; moved to {p}")
                    }
                    None => format!(
                        "inode {ino} (nlink {nlink}) is in no directory; cannot create /lost+found"
                    ),
                },
            );
        }
    }

    /// Put `ino` into /lost+found as `#INO`; returns the path.
    fn attach(&mut self, ino: u64, reach: &mut HashSet<u64>) -> Option<String> {
        let lf = self.lost_found(reach)?;
        let mut name = format!("#{ino}").into_bytes();
        let mut k = 1;
        while self.names.contains_key(&(lf, name.clone())) {
            name = format!("#{ino}.{k}").into_bytes();
            k += 1;
        }
        let slot = self.alloc_slot(RecKind::Dirent)?;
        let ftype = ftype_byte(self.inodes.get(&ino)?.rec.mode);
        let d = DirentRec {
            parent: lf,
            child: ino,
            ftype,
            name: name.clone(),
        };
        self.fix.write(slot, &d.encode());
        let lf_name = self
            .dir_parent
            .get(&lf)
            .map(|&i| String::from_utf8_lossy(&self.dents[i].name).into_owned())
            .unwrap_or_default();
        self.add_dent(Dent {
            slot,
            parent: lf,
            child: ino,
            name: name.clone(),
            alive: true,
        });
        reach.insert(ino);
        Some(format!("/{lf_name}/{}", String::from_utf8_lossy(&name)))
    }

    fn lost_found(&mut self, reach: &mut HashSet<u64>) -> Option<u64> {
        if let Some(l) = self.lost_found {
            return l;
        }
        let mut found = None;
        for k in 0..10 {
            let name = if k == 0 {
                b"lost+found".to_vec()
            } else {
                format!("lost+found.{k}").into_bytes()
            };
            match self.names.get(&(ROOT_INO, name.clone())) {
                Some(&i) => {
                    let c = self.dents[i].child;
                    if self.is_live_dir(c) {
                        found = Some(c);
                        break;
                    }
                }
                None => {
                    found = self.make_lost_found(name, reach);
                    break;
                }
            }
        }
        self.lost_found = Some(found);
        found
    }

    fn make_lost_found(&mut self, name: Vec<u8>, reach: &mut HashSet<u64>) -> Option<u64> {
        let ino = (2..=self.sb.inode_count)
            .find(|i| !self.inodes.contains_key(i) && !self.bad_inodes.contains_key(i))?;
        let slot = self.alloc_slot(RecKind::Dirent)?;
        let generation = self
            .rd(self.sb.inode_offset(ino), INODE_SIZE)
            .and_then(|b| InodeRec::decode(&b).ok())
            .map(|r| r.generation)
            .unwrap_or(0);
        let t = Timespec::now();
        let rec = InodeRec {
            mode: libc::S_IFDIR | 0o700,
            nlink: 2,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            generation,
            ..Default::default()
        };
        self.inodes.insert(
            ino,
            Ino {
                orig: None,
                rec,
                extents: BTreeMap::new(),
                xattr_claimed: false,
                orphan_slot: None,
                reclaim: false,
                fresh: true,
            },
        );
        let d = DirentRec {
            parent: ROOT_INO,
            child: ino,
            ftype: ftype_byte(libc::S_IFDIR),
            name: name.clone(),
        };
        self.fix.write(slot, &d.encode());
        self.add_dent(Dent {
            slot,
            parent: ROOT_INO,
            child: ino,
            name,
            alive: true,
        });
        reach.insert(ino);
        Some(ino)
    }

    /// A data block nothing uses (for a new record block).
    fn free_block(&self) -> Option<u64> {
        let ds = self.sb.data_start;
        let mut b = ds;
        while b < self.sb.total_blocks {
            if let Some((&s, &(l, _))) = self.claims.range(..=b).next_back() {
                if s + l > b {
                    b = s + l;
                    continue;
                }
            }
            if self.ext_bits.get(b - ds) {
                b += 1;
                continue;
            }
            return Some(b);
        }
        None
    }

    /// A free record slot of `kind`, linking a new record block when none is left.
    fn alloc_slot(&mut self, kind: RecKind) -> Option<u64> {
        let ki = kind.index();
        if let Some(s) = self.free_slots[ki].pop() {
            return Some(s);
        }
        let b = self.free_block()?;
        self.claims.insert(b, (1, Owner::New));
        let mut blk = vec![0u8; BS as usize];
        blk[..REC_HDR].copy_from_slice(
            &RecBlockHdr {
                kind,
                next: self.roots.heads[ki],
            }
            .encode(),
        );
        self.fix.write(b * BS, &blk);
        self.roots.heads[ki] = b;
        self.roots_dirty = true;
        let size = kind.slot_size();
        for i in (0..kind.slots_per_block()).rev() {
            self.free_slots[ki].push(b * BS + (REC_HDR + i * size) as u64);
        }
        self.free_slots[ki].pop()
    }

    // -- link counts ------------------------------------------------------

    fn link_counts(&mut self) {
        let named = self.named_count();
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        for d in self.dents.iter().filter(|d| d.alive) {
            if self.is_live_dir(d.child) {
                *subdirs.entry(d.parent).or_default() += 1;
            }
        }
        let inos: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| !i.reclaim)
            .map(|(k, _)| *k)
            .collect();
        for ino in inos {
            let i = &self.inodes[&ino];
            let want = if i.is_dir() {
                subdirs.get(&ino).copied().unwrap_or(0).saturating_add(2)
            } else {
                named.get(&ino).copied().unwrap_or(0)
            };
            if i.rec.nlink != want {
                if !i.fresh {
                    self.out.add(
                        "nlink-wrong",
                        true,
                        format!(
                            "inode {ino} has link count {}, should be {want}; corrected",
                            i.rec.nlink
                        ),
                    );
                }
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.rec.nlink = want;
                }
            }
        }
    }

    // -- reclaim ----------------------------------------------------------

    fn finish_reclaim(&mut self) {
        let gone: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.reclaim)
            .map(|(k, _)| *k)
            .collect();
        for ino in gone {
            let (slots, orphan) = {
                let i = &self.inodes[&ino];
                (
                    i.extents.values().map(|e| e.slot).collect::<Vec<_>>(),
                    i.orphan_slot,
                )
            };
            for s in slots {
                self.zero(s, format::EXTENT_SIZE);
            }
            if let Some(s) = orphan {
                self.zero(s, format::ORPHAN_SIZE);
            }
        }
    }

    // -- reference counts -------------------------------------------------

    /// Validate the refcount records and compare them with the extents as found.
    fn refcounts_check(&mut self) {
        let raw = std::mem::take(&mut self.refcounts_raw);
        for (slot, r) in raw {
            let what = format!(
                "refcount record at {slot:#x} ({} count {})",
                blocks_text(r.phys, r.len),
                r.count
            );
            let bad = if !self.in_data(r.phys, r.len) {
                Some("covers blocks outside the data area")
            } else {
                let end = r.phys + r.len;
                let before = self
                    .refcounts
                    .range(..=r.phys)
                    .next_back()
                    .is_some_and(|(k, v)| k + v.0 > r.phys);
                let after = self.refcounts.range(r.phys..end).next().is_some();
                (before || after).then_some("overlaps another refcount record")
            };
            if let Some(why) = bad {
                self.out
                    .add("refcount-bad", true, format!("{what} {why}; dropped"));
                self.refcounts_bad = true;
                self.zero(slot, format::REFCOUNT_SIZE);
                self.free_slots[RecKind::Refcount.index()].push(slot);
                continue;
            }
            self.refcounts.insert(r.phys, (r.len, r.count, slot));
        }
        let found = count_pieces(self.ext_refs.iter().copied());
        for (p, l, want, have) in ref_mismatches(&found, &self.refcounts) {
            let have = match have {
                Some(c) => format!("a refcount of {c}"),
                None => "no refcount record".to_string(),
            };
            self.out.add(
                "refcount-wrong",
                true,
                format!(
                    "{} mapped {want} times but with {have}; corrected",
                    blocks_text(p, l)
                ),
            );
        }
    }

    /// Make the refcount records describe the repaired extents exactly.
    fn refcounts_final(&mut self) {
        let fin = count_pieces(
            self.inodes
                .values()
                .filter(|i| !i.reclaim)
                .flat_map(|i| i.extents.values().map(|e| (e.phys, e.len))),
        );
        if !self.refcounts_bad && ref_mismatches(&fin, &self.refcounts).is_empty() {
            return;
        }
        let old: Vec<u64> = self.refcounts.values().map(|v| v.2).collect();
        for slot in old {
            self.zero(slot, format::REFCOUNT_SIZE);
            self.free_slots[RecKind::Refcount.index()].push(slot);
        }
        for (&p, &(l, c)) in fin.iter().filter(|(_, v)| v.1 >= 2) {
            let Some(slot) = self.alloc_slot(RecKind::Refcount) else {
                self.out.add(
                    "refcount-wrong",
                    false,
                    "no space for refcount records".to_string(),
                );
                return;
            };
            let r = RefcountRec {
                phys: p,
                len: l,
                count: c,
            };
            self.fix.write(slot, &r.encode());
        }
    }

    // -- bitmap (compare and rebuild) -------------------------------------

    fn rel_bits(&self, ranges: &[(u64, u64)]) -> Bits {
        let mut b = Bits::new(self.nblocks);
        for &(p, l) in ranges {
            if let Some(s) = p.checked_sub(self.sb.data_start) {
                b.range(s, l, true);
            }
        }
        b
    }

    fn bitmap(&mut self) {
        let ds = self.sb.data_start;
        // In use as found: exclusive owners and every accepted extent.
        let mut used = self.ext_bits.clone();
        // In use after the repair: record blocks, xattr blobs of surviving
        // inodes, extents of surviving inodes (deferred ranges are freed).
        let mut fin = Bits::new(self.nblocks);
        for (&p, &(l, o)) in &self.claims {
            let s = p - ds;
            if !matches!(o, Owner::New) {
                used.range(s, l, true);
            }
            let keep = match o {
                Owner::Record(_) | Owner::New => true,
                Owner::Xattr(ino) => self
                    .live(ino)
                    .is_some_and(|i| i.xattr_claimed && i.rec.xattr_block == p),
                Owner::Deferred | Owner::AnExtent => false,
            };
            if keep {
                fin.range(s, l, true);
            }
        }
        for i in self.inodes.values().filter(|i| !i.reclaim) {
            for e in i.extents.values() {
                fin.range(e.phys - ds, e.len, true);
            }
        }
        let released = self.rel_bits(&self.released);
        let nw = used.w.len();
        let mut unmarked = vec![0u64; nw];
        let mut leaked = vec![0u64; nw];
        for w in 0..nw {
            if self
                .bm_bad
                .get(w / WORDS_PER_BITMAP_BLOCK)
                .copied()
                .unwrap_or(true)
            {
                continue;
            }
            unmarked[w] = used.w[w] & !self.bm.w[w];
            leaked[w] = self.bm.w[w] & !used.w[w] & !released.w[w];
        }
        for (s, l) in runs_of(&unmarked) {
            self.out.add(
                "block-unmarked",
                true,
                format!(
                    "{} used but marked free; marked used",
                    blocks_text(ds + s, l)
                ),
            );
        }
        for (s, l) in runs_of(&leaked) {
            self.out.add(
                "block-leaked",
                true,
                format!(
                    "{} marked used but referenced by nothing (leaked); freed",
                    blocks_text(ds + s, l)
                ),
            );
        }
        // Rewrite every bitmap block that differs from the repaired state.
        for k in 0..self.sb.bitmap_blocks {
            let off = (self.sb.bitmap_start + k) * BS;
            let mut blk = vec![0u8; BS as usize];
            let first = k * BITS_PER_BITMAP_BLOCK;
            for (j, byte) in blk[..BITMAP_BYTES].iter_mut().enumerate() {
                for b in 0..8u64 {
                    if fin.get(first + j as u64 * 8 + b) {
                        *byte |= 1 << b;
                    }
                }
            }
            let c = format::bitmap_crc(&blk);
            blk[BITMAP_BYTES..BITMAP_BYTES + 4].copy_from_slice(&c.to_le_bytes());
            let cur = self.rd(off, BS as usize - 4);
            if cur.as_deref() != Some(&blk[..BS as usize - 4]) {
                self.fix.write(off, &blk);
            }
        }
        self.used_now = used.count();
    }

    // -- writing ----------------------------------------------------------

    fn queue_inodes(&mut self) {
        let mut w: Vec<(u64, InodeRec)> = Vec::new();
        for (ino, i) in &self.inodes {
            if i.reclaim {
                w.push((*ino, free_inode(i.rec.generation.wrapping_add(1))));
            } else if i.orig.as_ref() != Some(&i.rec) {
                w.push((*ino, i.rec.clone()));
            }
        }
        for (ino, g) in &self.bad_inodes {
            w.push((*ino, free_inode(*g)));
        }
        for (ino, r) in w {
            self.fix.write(self.sb.inode_offset(ino), &r.encode());
        }
    }

    /// Apply the queued repairs: through the journal when they fit, else directly.
    fn apply(&mut self) -> Result<(), String> {
        if self.fix.is_empty() {
            return Ok(());
        }
        // Through the journal when the repairs fit it (commit refuses a
        // transaction too large or storing outside the metadata area before
        // it writes anything); else by direct stores.
        if let Ok((mut j, _)) = Journal::recover(self.media, self.geo) {
            match j.commit(self.media, &self.fix) {
                Err(JournalError::TooLarge { .. } | JournalError::BadEntry { .. }) => {}
                r => return r.map_err(|e| format!("writing the repairs failed: {e}")),
            }
        }
        Journal::store_direct(self.media, self.fix.entries())
            .map_err(|e| format!("writing the repairs failed: {e}"))
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
mod tests {
    use super::*;
    use crate::format::{TX_HDR_SIZE, TX_MAGIC};
    use crate::fs::{Cred, Fs, FsOptions};
    use crate::mkfs::{mkfs, MkfsOptions};
    use std::sync::Arc;

    fn fresh() -> Media {
        let m = Media::anonymous(512 * BS).unwrap();
        mkfs(&m, &MkfsOptions::default()).unwrap();
        m
    }

    fn populated() -> Media {
        let fs = Fs::mount(fresh(), FsOptions::default()).unwrap();
        let c = Cred::ROOT;
        let a = fs
            .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, c)
            .unwrap();
        fs.write(a.ino, 0, &[7u8; 9000], false).unwrap();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap();
        fs.symlink(d.ino, b"l", b"../a", c).unwrap();
        fs.link(a.ino, d.ino, b"hard").unwrap();
        fs.setxattr(a.ino, b"user.x", Some(b"y"), 0).unwrap();
        fs.unmount().unwrap();
        let Fs { media, .. } = fs;
        Arc::try_unwrap(media).ok().unwrap()
    }

    #[test]
    fn fresh_and_populated_are_clean() {
        let r = check(&fresh(), false);
        assert!(r.is_clean(), "{r:?}");
        let m = populated();
        let r = check(&m, false);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.counts.inodes, 4);
        assert_eq!(r.counts.dirs, 2);
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn wrong_nlink_is_found_and_fixed() {
        let m = populated();
        let sb = crate::fs::read_superblock(&m).unwrap().0;
        let off = sb.inode_offset(2);
        let mut r = InodeRec::decode(&m.read_vec(off, INODE_SIZE).unwrap()).unwrap();
        r.nlink = 9;
        m.write_at(off, &r.encode()).unwrap();
        let rep = check(&m, false);
        assert_eq!(rep.codes(), vec!["nlink-wrong"], "{rep:?}");
        assert_eq!(rep.exit_code(), 4);
        let rep = check(&m, true);
        assert_eq!(rep.exit_code(), 1, "{rep:?}");
        assert!(check(&m, false).is_clean());
    }

    #[test]
    fn malformed_acl_is_found_and_removed() {
        use crate::acl::{Acl, Entry, ACCESS, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ};
        let fs = Fs::mount(fresh(), FsOptions::default()).unwrap();
        let a = fs
            .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, Cred::ROOT)
            .unwrap();
        let e = |tag, perm, id| Entry { tag, perm, id };
        let acl = Acl {
            entries: vec![
                e(USER_OBJ, 6, u32::MAX),
                e(USER, 6, 1000),
                e(GROUP_OBJ, 4, u32::MAX),
                e(MASK, 6, u32::MAX),
                e(OTHER, 4, u32::MAX),
            ],
        };
        fs.setxattr(a.ino, ACCESS, Some(&acl.encode()), 0).unwrap();
        fs.setxattr(a.ino, b"user.keep", Some(b"kept"), 0).unwrap();
        fs.unmount().unwrap();
        let Fs { media, .. } = fs;
        let m = Arc::try_unwrap(media).ok().unwrap();
        // A hostile image: the named user's entry gets bits beyond rwx,
        // with every checksum right.
        let sb = crate::fs::read_superblock(&m).unwrap().0;
        let off = sb.inode_offset(a.ino);
        let mut r = InodeRec::decode(&m.read_vec(off, INODE_SIZE).unwrap()).unwrap();
        let mut blob = m
            .read_vec(r.xattr_block * BS, r.xattr_len as usize)
            .unwrap();
        let v = acl.encode();
        let at = blob.windows(v.len()).position(|w| w == v).unwrap();
        blob[at + 4 + 8 + 2] = 0o10;
        m.write_at(r.xattr_block * BS, &blob).unwrap();
        r.xattr_crc = format::crc(&blob);
        m.write_at(off, &r.encode()).unwrap();
        let rep = check(&m, false);
        assert_eq!(rep.codes(), vec!["acl-bad"], "{rep:?}");
        assert_eq!(check(&m, true).exit_code(), 1);
        assert!(check(&m, false).is_clean());
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        assert_eq!(fs.getxattr(a.ino, b"user.keep").unwrap(), b"kept");
        assert_eq!(fs.getxattr(a.ino, ACCESS), Err(crate::FsError::NoData));
    }

    #[test]
    fn no_superblock_is_operational_error() {
        let m = Media::anonymous(512 * BS).unwrap();
        let r = check(&m, false);
        assert_eq!(r.exit_code(), 8);
        assert!(r.error.unwrap().contains("no valid superblock"));
    }

    #[test]
    fn huge_journal_payload_is_torn_not_a_panic() {
        let m = fresh();
        let sb = crate::fs::read_superblock(&m).unwrap().0;
        let area = (sb.journal_start + 1) * BS;
        let mut h = [0u8; TX_HDR_SIZE];
        h[0..4].copy_from_slice(&TX_MAGIC.to_le_bytes());
        h[8..16].copy_from_slice(&1u64.to_le_bytes());
        h[16..24].copy_from_slice(&(u64::MAX - 30).to_le_bytes());
        m.write_at(area, &h).unwrap();
        let r = check(&m, false);
        assert!(r.is_clean(), "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("journal-torn")));
        let r = check(&m, true);
        assert_eq!(r.exit_code(), 0, "{r:?}");
        let r = check(&m, false);
        assert!(r.notes.is_empty(), "{r:?}");
    }
}
