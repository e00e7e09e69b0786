//! The oracle: what a recovered crash state must look like.
//!
//! A [`Snapshot`] is the *semantic* state of a mounted filesystem, read
//! through the core API: every path with its node (inode number, type, mode,
//! owner, link count, size, symlink target, xattrs, which logical blocks are
//! mapped), every file's bytes, and (not compared) where each extent lies
//! physically. Timestamps are left out of the match (an operation that runs
//! several transactions, such as punch, legitimately stamps intermediate
//! times; rule 3 bounds them instead), and so are physical block numbers (copy-on-write moves data without changing
//! what a user can observe).
//!
//! For a crash state whose window (see `mod.rs`) holds the snapshots
//! `W[0..k]` taken at operation boundaries, [`compare`] requires:
//!
//! 1. **Metadata all-or-nothing**: the recovered snapshot's nodes (names,
//!    hard links, modes, owners, link counts, sizes, xattrs, symlink targets,
//!    mapped logical blocks) equal those of some `W[x]` exactly.
//! 2. **File bytes** (ordered mode: file data is written, in place or into
//!    new blocks, and flushed before the metadata transaction that
//!    publishes it; an overwrite in place is not atomic): every aligned
//!    8-byte chunk of every file below its size equals `W[x]`'s chunk, or the
//!    chunk of a *later* window state `W[y]` (y > x, chunk below `W[y]`'s
//!    size) whose block is the one `W[x]` maps there (written in place) or
//!    the one the recovered state maps there (a copy-on-write target). So
//!    data published by committed metadata is complete, a new block never
//!    shows anything but what was written or zeros (no stale data from a
//!    previous owner), bytes outside the written ranges never change, and a
//!    later state's bytes appear only where that state wrote them.
//!
//! 3. **Times**: no recovered mtime or ctime is later than the latest one
//!    its inode had in the window. An overwrite in place (and a direct
//!    client's write, whose TOUCH sets the same times) keeps its new times
//!    in DRAM only (lazytime, `fs/atime.rs`), so a crash may recover older
//!    times than the last state's, never newer ones; but none older than
//!    what an fsync that returned before the window made durable (the
//!    inode's times when that fsync returned).
//!
//! [`consistency`] is the structural check (every name resolves, `..` is the
//! parent, link counts, no used inode unreachable, no orphan left after
//! mount, no committed journal transaction left, the bitmap equals exactly
//! the blocks referenced by record chains, extents and xattr blobs, and every
//! shared block's reference count equals its number of mappings).
//! [`usability`] then uses the recovered filesystem: grows every file and
//! checks the new range reads zeros (nothing left beyond EOF), deletes the
//! file with the most blocks if the filesystem is full, creates,
//! writes, renames and links, deletes everything, checks again, unmounts,
//! mounts and checks once more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::FsResult;
use crate::format::Timespec;
use crate::format::{
    self, InodeRec, OrphanRec, RecBlockHdr, RecKind, Roots, TxState, BLOCK_SIZE, REC_HDR,
    REC_KINDS, ROOT_INO,
};
use crate::fs::{journal_geometry, read_superblock, Cred, Fs, FsOptions};
use crate::journal::Journal;
use crate::media::Media;
use crate::space::Space;

const BS: u64 = BLOCK_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other(u32),
}

/// One named node of the tree (a hard-linked inode appears under each name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub ino: u64,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Files and symlinks (directories report a derived size: left out).
    pub size: u64,
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Mapped logical blocks as (first, count) runs. Where they lie
    /// physically is not semantic (copy-on-write moves blocks): see
    /// [`Snapshot::layout`].
    pub mapped: Vec<(u64, u64)>,
}

/// The semantic state of a mounted filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Path (relative, "" = root) -> node.
    pub nodes: BTreeMap<String, Node>,
    /// Regular files' bytes by inode number.
    pub data: BTreeMap<u64, Vec<u8>>,
    /// Each directory's ".." as readdir reports it, by directory inode.
    pub dotdot: BTreeMap<u64, u64>,
    /// Extents (logical block, physical block, blocks) by inode.
    pub layout: BTreeMap<u64, Vec<(u64, u64, u64)>>,
    /// (mtime, ctime) by inode: not part of the all-or-nothing match (see
    /// rule 3 of the module comment).
    pub times: Times,
}

/// Logical runs of an extent list, merged.
fn mapped_runs(ext: &[(u64, u64, u64)]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ext.iter().map(|(l, _, n)| (*l, *n)).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (l, n) in v {
        match out.last_mut() {
            Some((a, b)) if *a + *b == l => *b += n,
            _ => out.push((l, n)),
        }
    }
    out
}

fn join(parent: &str, name: &[u8]) -> String {
    let n = String::from_utf8_lossy(name);
    if parent.is_empty() {
        n.into_owned()
    } else {
        format!("{parent}/{n}")
    }
}

/// A directory's entries (name, inode), without "." and "..".
pub type Entries = Vec<(Vec<u8>, u64)>;

/// Every entry of a directory (without "." and "..") and its "..".
pub fn list_dir(fs: &Fs, ino: u64) -> FsResult<(Entries, u64)> {
    let mut out = Vec::new();
    let mut off = 0;
    let mut dotdot = 0;
    loop {
        let ents = fs.readdir(ino, off, 256)?;
        if ents.is_empty() {
            break;
        }
        for e in &ents {
            off = e.offset;
            if e.name == b"." {
                continue;
            }
            if e.name == b".." {
                dotdot = e.ino;
                continue;
            }
            out.push((e.name.clone(), e.ino));
        }
    }
    Ok((out, dotdot))
}

/// Read the semantic state through the core API (reads only: no store).
pub fn capture(fs: &Fs) -> FsResult<Snapshot> {
    let mut s = Snapshot::default();
    let mut stack = vec![(String::new(), ROOT_INO)];
    let mut seen_dirs = BTreeSet::new();
    while let Some((path, ino)) = stack.pop() {
        let a = fs.getattr(ino)?;
        let kind = match a.mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            k => Kind::Other(k),
        };
        let mut xattrs = BTreeMap::new();
        for n in fs.listxattr(ino)? {
            let v = fs.getxattr(ino, &n)?;
            xattrs.insert(n, v);
        }
        let target = if kind == Kind::Symlink {
            fs.readlink(ino)?
        } else {
            Vec::new()
        };
        let extents = fs.extents(ino)?;
        let node = Node {
            ino,
            kind,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            nlink: a.nlink,
            size: if kind == Kind::Dir { 0 } else { a.size },
            target,
            xattrs,
            mapped: mapped_runs(&extents),
        };
        s.layout.insert(ino, extents);
        s.times.insert(ino, (a.mtime, a.ctime));
        if kind == Kind::File && !s.data.contains_key(&ino) {
            s.data.insert(ino, fs.read(ino, 0, a.size as usize)?);
        }
        s.nodes.insert(path.clone(), node);
        if kind == Kind::Dir {
            if !seen_dirs.insert(ino) {
                return Err(crate::FsError::Corrupt(format!(
                    "directory {ino} reached twice (at {path:?})"
                )));
            }
            let (ents, dd) = list_dir(fs, ino)?;
            s.dotdot.insert(ino, dd);
            for (name, child) in ents.into_iter().rev() {
                stack.push((join(&path, &name), child));
            }
        }
    }
    Ok(s)
}

fn node_diff(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = a.nodes.keys().chain(b.nodes.keys()).collect();
    for k in keys {
        let p = if k.is_empty() { "/" } else { k.as_str() };
        match (a.nodes.get(k), b.nodes.get(k)) {
            (Some(_), None) => out.push(format!("{p} exists")),
            (None, Some(_)) => out.push(format!("{p} is missing")),
            (Some(x), Some(y)) if x != y => {
                let mut d = Vec::new();
                if x.ino != y.ino {
                    d.push(format!("ino {} (expected {})", x.ino, y.ino));
                }
                if x.kind != y.kind {
                    d.push(format!("kind {:?} (expected {:?})", x.kind, y.kind));
                }
                if x.mode != y.mode {
                    d.push(format!("mode {:o} (expected {:o})", x.mode, y.mode));
                }
                if x.nlink != y.nlink {
                    d.push(format!("nlink {} (expected {})", x.nlink, y.nlink));
                }
                if x.size != y.size {
                    d.push(format!("size {} (expected {})", x.size, y.size));
                }
                if x.target != y.target {
                    d.push("symlink target differs".into());
                }
                if x.xattrs != y.xattrs {
                    d.push(format!(
                        "xattrs {:?} (expected {:?})",
                        x.xattrs
                            .keys()
                            .map(|k| String::from_utf8_lossy(k))
                            .collect::<Vec<_>>(),
                        y.xattrs
                            .keys()
                            .map(|k| String::from_utf8_lossy(k))
                            .collect::<Vec<_>>()
                    ));
                }
                if x.mapped != y.mapped {
                    d.push(format!(
                        "mapped blocks {:?} (expected {:?})",
                        x.mapped, y.mapped
                    ));
                }
                if x.uid != y.uid || x.gid != y.gid {
                    d.push("owner differs".into());
                }
                out.push(format!("{p}: {}", d.join(", ")));
            }
            _ => {}
        }
    }
    out
}

/// Physical block of logical block `l` in an extent list.
fn phys_of(ext: &[(u64, u64, u64)], l: u64) -> Option<u64> {
    ext.iter()
        .find(|(s, _, n)| l >= *s && l < s + n)
        .map(|(s, p, _)| p + (l - s))
}

fn check_bytes(r: &Snapshot, window: &[&Snapshot], x: usize) -> Result<(), String> {
    let size_of = |s: &Snapshot, ino: u64| {
        s.nodes
            .values()
            .find(|n| n.ino == ino && n.kind == Kind::File)
            .map(|n| n.size)
    };
    let phys = |s: &Snapshot, ino: u64, l: u64| s.layout.get(&ino).and_then(|e| phys_of(e, l));
    for (ino, bytes) in &r.data {
        let want = &window[x].data[ino];
        let mut c = 0usize;
        while c < bytes.len() {
            let e = (c + 8).min(bytes.len());
            if bytes[c..e] != want[c..e] {
                let l = c as u64 / BS;
                let (pr, px) = (phys(r, *ino, l), phys(window[x], *ino, l));
                // A later state's bytes, in a block written in place (mapped at
                // the same place in both states) or that the recovered state
                // already maps (a copy-on-write target).
                let ok = window[x + 1..].iter().any(|w| {
                    let py = phys(w, *ino, l);
                    size_of(w, *ino).is_some_and(|ys| ys >= e as u64)
                        && py.is_some()
                        && (py == px || py == pr)
                        && w.data[ino][c..e] == bytes[c..e]
                });
                if !ok {
                    let path = r
                        .nodes
                        .iter()
                        .find(|(_, n)| n.ino == *ino)
                        .map(|(p, _)| p.clone())
                        .unwrap_or_default();
                    return Err(format!(
                        "{path} (inode {ino}) bytes {c}..{e}: {:02x?}, expected {:02x?}{}",
                        &bytes[c..e],
                        &want[c..e],
                        if x + 1 < window.len() {
                            " or a later state's bytes in the same block"
                        } else {
                            ""
                        }
                    ));
                }
            }
            c = e;
        }
    }
    Ok(())
}

/// (mtime, ctime) by inode.
pub type Times = BTreeMap<u64, (Timespec, Timespec)>;

/// Rule 3: no recovered modification or change time is later than the
/// latest one its inode had in the window. (Times of in-place overwrites are
/// written lazily, so a crash may leave older ones; never newer.) Nor
/// older than the times `synced` says an fsync made durable.
fn check_times(r: &Snapshot, window: &[&Snapshot], synced: &Times) -> Result<(), String> {
    for (ino, (m, c)) in &r.times {
        if let Some((sm, sc)) = synced.get(ino) {
            if m < sm || c < sc {
                return Err(format!(
                    "inode {ino}: recovered times (mtime {m:?}, ctime {c:?}) are older than \
                     an fsync that returned before the crash made durable (mtime {sm:?}, \
                     ctime {sc:?})"
                ));
            }
        }
        let latest = window.iter().filter_map(|w| w.times.get(ino)).fold(
            None,
            |acc: Option<(Timespec, Timespec)>, (wm, wc)| {
                Some(match acc {
                    None => (*wm, *wc),
                    Some((am, ac)) => (am.max(*wm), ac.max(*wc)),
                })
            },
        );
        if let Some((lm, lc)) = latest {
            if *m > lm || *c > lc {
                return Err(format!(
                    "inode {ino}: recovered times (mtime {m:?}, ctime {c:?}) are later than \
                     any it had before the crash (mtime {lm:?}, ctime {lc:?})"
                ));
            }
        }
    }
    Ok(())
}

/// Check a recovered snapshot against the window of acceptable states.
/// Returns the index of the matching window state.
pub fn compare(r: &Snapshot, window: &[&Snapshot], synced: &Times) -> Result<usize, String> {
    let mut byte_err = None;
    for (x, w) in window.iter().enumerate() {
        if w.nodes != r.nodes {
            continue;
        }
        match check_bytes(r, window, x).and_then(|()| check_times(r, window, synced)) {
            Ok(()) => return Ok(x),
            Err(e) => {
                byte_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = byte_err {
        return Err(format!("file contents: {e}"));
    }
    // Report the difference from the closest window state.
    let mut best: Option<(usize, Vec<String>)> = None;
    for (x, w) in window.iter().enumerate() {
        let d = node_diff(r, w);
        if best.as_ref().is_none_or(|(_, b)| d.len() < b.len()) {
            best = Some((x, d));
        }
    }
    let (x, d) = best.expect("window is never empty");
    Err(format!(
        "matches none of the {} acceptable states; against state {} of them: {}",
        window.len(),
        x,
        d.join("; ")
    ))
}

/// The filesystem checker (`fsck-daxlink -n`) must find nothing.
pub fn fsck_clean(media: &Media) -> Result<(), String> {
    let r = crate::tools::fsck::check(media, false);
    if r.is_clean() {
        return Ok(());
    }
    let mut what: Vec<String> = r
        .findings
        .iter()
        .take(5)
        .map(|f| format!("{}: {}", f.code, f.message))
        .collect();
    if let Some(e) = r.error {
        what.insert(0, e);
    }
    Err(format!("fsck is not clean: {}", what.join("; ")))
}

/// Structural consistency of a mounted filesystem (see the module comment).
pub fn consistency(fs: &Fs) -> Vec<String> {
    let mut f = Vec::new();
    let snap = match capture(fs) {
        Ok(s) => s,
        Err(e) => return vec![format!("walking the tree failed: {e}")],
    };
    let media = &fs.media;
    let sb = &fs.sb;
    // Links and "..".
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut parent_of: HashMap<u64, u64> = HashMap::new();
    parent_of.insert(ROOT_INO, ROOT_INO);
    for (path, n) in &snap.nodes {
        if path.is_empty() {
            continue;
        }
        *names.entry(n.ino).or_default() += 1;
        let parent = match path.rsplit_once('/') {
            Some((p, _)) => snap.nodes[p].ino,
            None => ROOT_INO,
        };
        if n.kind == Kind::Dir {
            *subdirs.entry(parent).or_default() += 1;
            parent_of.insert(n.ino, parent);
        }
    }
    let mut inodes: BTreeMap<u64, &Node> = BTreeMap::new();
    for (path, n) in &snap.nodes {
        inodes.insert(n.ino, n);
        let want = if n.kind == Kind::Dir {
            2 + subdirs.get(&n.ino).copied().unwrap_or(0)
        } else {
            names.get(&n.ino).copied().unwrap_or(0)
        };
        if n.nlink != want {
            f.push(format!(
                "/{path}: link count {} but {want} expected",
                n.nlink
            ));
        }
        if n.kind == Kind::Dir && snap.dotdot.get(&n.ino) != parent_of.get(&n.ino) {
            f.push(format!("/{path}: \"..\" is {:?}", snap.dotdot.get(&n.ino)));
        }
    }
    // Superblocks.
    match read_superblock(media) {
        Ok((_, problems)) => f.extend(problems),
        Err(e) => f.push(format!("superblocks: {e}")),
    }
    // Journal: nothing committed left to replay.
    match Journal::inspect(media, journal_geometry(sb, media.len())) {
        Ok((_, TxState::Committed { seq, .. })) => f.push(format!(
            "journal transaction {seq} committed but not applied"
        )),
        Ok(_) => {}
        Err(e) => f.push(format!("journal: {e}")),
    }
    // The roots block's initialization marks bound what is read below.
    let roots = media
        .read_vec(sb.roots_block * BS, format::ROOTS_SIZE)
        .map_err(|e| e.to_string())
        .and_then(|b| Roots::decode(&b).map_err(|e| e.to_string()))
        .and_then(|r| r.check_marks(sb).map(|_| r).map_err(|e| e.to_string()));
    let (inode_init, bitmap_init) = match &roots {
        Ok(r) => (r.inode_init, r.bitmap_init),
        Err(_) => (sb.inode_count, sb.bitmap_blocks),
    };
    // Used inodes are exactly the reachable ones.
    let table = match media.read_vec(sb.inode_offset(1), inode_init as usize * format::INODE_SIZE) {
        Ok(t) => t,
        Err(e) => return vec![format!("inode table: {e}")],
    };
    let mut recs: HashMap<u64, InodeRec> = HashMap::new();
    for (i, slot) in table.chunks_exact(format::INODE_SIZE).enumerate() {
        let ino = i as u64 + 1;
        match InodeRec::decode(slot) {
            Ok(r) if !r.is_free() => {
                if !inodes.contains_key(&ino) {
                    f.push(format!("inode {ino} is in use but unreachable (leaked)"));
                }
                recs.insert(ino, r);
            }
            Ok(_) => {
                if inodes.contains_key(&ino) {
                    f.push(format!("inode {ino} is reachable but free on media"));
                }
            }
            Err(e) => f.push(format!("inode {ino}: {e}")),
        }
    }
    for ino in inodes.keys().filter(|i| **i > inode_init) {
        f.push(format!(
            "inode {ino} is reachable but past the inode-table mark {inode_init}"
        ));
    }
    // Blocks: record chains, extents, xattr blobs.
    let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut used: BTreeSet<u64> = BTreeSet::new();
    match roots {
        Err(e) => f.push(format!("roots block: {e}")),
        Ok(roots) => {
            for kind in REC_KINDS {
                let mut blk = roots.heads[kind.index()];
                let mut n = 0;
                while blk != 0 && n <= sb.total_blocks {
                    n += 1;
                    if !used.insert(blk) {
                        f.push(format!("{kind:?} chain: block {blk} used twice"));
                        break;
                    }
                    let b = match media.read_vec(blk * BS, BS as usize) {
                        Ok(b) => b,
                        Err(e) => {
                            f.push(format!("{kind:?} chain block {blk}: {e}"));
                            break;
                        }
                    };
                    let hdr = match RecBlockHdr::decode(&b) {
                        Ok(h) => h,
                        Err(e) => {
                            f.push(format!("{kind:?} chain block {blk}: {e}"));
                            break;
                        }
                    };
                    if kind == RecKind::Orphan {
                        for i in 0..kind.slots_per_block() {
                            let o = REC_HDR + i * kind.slot_size();
                            if let Ok(Some(r)) = OrphanRec::decode(&b[o..o + kind.slot_size()]) {
                                f.push(format!("orphan record left after mount: {r:?}"));
                            }
                        }
                    }
                    blk = hdr.next;
                }
            }
        }
    }
    let mut maps: BTreeMap<u64, u32> = BTreeMap::new();
    for n in inodes.values() {
        for (_, p, len) in snap.layout.get(&n.ino).map_or(&[][..], |v| &v[..]) {
            for b in *p..p + len {
                *maps.entry(b).or_default() += 1;
            }
        }
        if let Some(r) = recs.get(&n.ino) {
            for b in r.xattr_block..r.xattr_block + r.xattr_blocks as u64 {
                if !used.insert(b) {
                    f.push(format!("xattr block {b} of inode {} used twice", n.ino));
                }
            }
        }
        if n.kind != Kind::Dir {
            match fs.extents_detail(n.ino) {
                Ok(d) => {
                    for e in d {
                        for b in e.physical..e.physical + e.length {
                            refs.insert(b, e.refcount);
                        }
                    }
                }
                Err(e) => f.push(format!("extents of inode {}: {e}", n.ino)),
            }
        }
    }
    for (b, c) in &maps {
        if used.contains(b) {
            f.push(format!("block {b} is both metadata and file data"));
        }
        let rc = refs.get(b).copied().unwrap_or(1);
        if rc != *c {
            f.push(format!("block {b}: reference count {rc} but {c} mappings"));
        }
    }
    used.extend(maps.keys());
    match Space::load(media, sb, bitmap_init) {
        Err(e) => f.push(format!("bitmap: {e}")),
        Ok(space) => {
            let mut leaked = Vec::new();
            let mut unmarked = Vec::new();
            for b in sb.data_start..sb.total_blocks {
                match (space.is_used(b), used.contains(&b)) {
                    (true, false) => leaked.push(b),
                    (false, true) => unmarked.push(b),
                    _ => {}
                }
            }
            if !leaked.is_empty() {
                f.push(format!(
                    "blocks marked used but referenced by nothing (leaked): {leaked:?}"
                ));
            }
            if !unmarked.is_empty() {
                f.push(format!(
                    "blocks in use but free in the bitmap: {unmarked:?}"
                ));
            }
            if space.free_blocks() != fs.statfs().bfree {
                f.push(format!(
                    "free blocks: bitmap says {}, statfs {}",
                    space.free_blocks(),
                    fs.statfs().bfree
                ));
            }
        }
    }
    f
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((seed.wrapping_mul(131) + i * 7) % 251 + 1) as u8)
        .collect()
}

/// Use the recovered filesystem, delete everything, check, remount, check.
/// Consumes the filesystem; returns problems found.
pub fn usability(fs: Fs) -> Result<(), String> {
    let c = Cred::ROOT;
    let e = |what: &str, err: crate::FsError| format!("{what}: {err}");
    let snap = capture(&fs).map_err(|x| e("walk", x))?;
    // Nothing may lie beyond EOF: grow every file and read the new range.
    let files: BTreeMap<u64, u64> = snap
        .nodes
        .values()
        .filter(|n| n.kind == Kind::File)
        .map(|n| (n.ino, n.size))
        .collect();
    for (ino, size) in &files {
        let grow = BS + 904;
        fs.truncate(*ino, size + grow)
            .map_err(|x| e("growing a file", x))?;
        let b = fs
            .read(*ino, *size, grow as usize)
            .map_err(|x| e("reading a grown file", x))?;
        if let Some(i) = b.iter().position(|x| *x != 0) {
            return Err(format!(
                "inode {ino}: after growing from {size} bytes, byte {} reads {:#04x}, not zero (stale bytes beyond EOF)",
                size + i as u64,
                b[i]
            ));
        }
    }
    // A filesystem left full (an operation that ran out of space half-way,
    // or a crash in it) first makes room: its file with the most mapped
    // blocks goes (deleting must always work), then the checks below need a
    // few blocks.
    if fs.statfs().bavail < 64 {
        let largest = snap
            .nodes
            .iter()
            .filter(|(_, n)| n.kind == Kind::File)
            .max_by_key(|(_, n)| n.mapped.iter().map(|r| r.1).sum::<u64>());
        if let Some((p, _)) = largest {
            let (parent, name) = match p.rsplit_once('/') {
                Some((pp, nm)) => (snap.nodes[pp].ino, nm),
                None => (ROOT_INO, p.as_str()),
            };
            fs.unlink(parent, name.as_bytes())
                .map_err(|x| format!("making room: deleting /{p}: {x}"))?;
        }
    }
    // Create, write, read back, rename, link, xattr.
    let d = fs
        .mkdir(ROOT_INO, b"usable", 0o755, c)
        .map_err(|x| e("mkdir", x))?;
    let f = fs
        .mknod(d.ino, b"f", libc::S_IFREG | 0o644, 0, c)
        .map_err(|x| e("create", x))?;
    let data = pattern(99, 3 * BS as usize + 100);
    fs.write(f.ino, 0, &data, false)
        .map_err(|x| e("write", x))?;
    fs.write(f.ino, 5000, &data[..2000], false)
        .map_err(|x| e("overwrite", x))?;
    let mut want = data.clone();
    want[5000..7000].copy_from_slice(&data[..2000]);
    if fs.read(f.ino, 0, want.len()).map_err(|x| e("read", x))? != want {
        return Err("a file written after recovery reads back wrong".into());
    }
    fs.setxattr(f.ino, b"user.u", Some(&data[..300]), 0)
        .map_err(|x| e("setxattr", x))?;
    fs.rename(d.ino, b"f", d.ino, b"g", 0)
        .map_err(|x| e("rename", x))?;
    fs.link(f.ino, d.ino, b"h").map_err(|x| e("link", x))?;
    fs.symlink(d.ino, b"s", b"g", c)
        .map_err(|x| e("symlink", x))?;
    let probs = consistency(&fs);
    if !probs.is_empty() {
        return Err(format!("after using it: {}", probs.join("; ")));
    }
    // Delete everything, deepest first.
    let snap = capture(&fs).map_err(|x| e("walk", x))?;
    let mut paths: Vec<(&String, &Node)> =
        snap.nodes.iter().filter(|(p, _)| !p.is_empty()).collect();
    paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
    for (p, n) in paths {
        let (parent, name) = match p.rsplit_once('/') {
            Some((pp, nm)) => (snap.nodes[pp].ino, nm),
            None => (ROOT_INO, p.as_str()),
        };
        let r = if n.kind == Kind::Dir {
            fs.rmdir(parent, name.as_bytes())
        } else {
            fs.unlink(parent, name.as_bytes())
        };
        r.map_err(|x| format!("deleting /{p}: {x}"))?;
    }
    let probs = consistency(&fs);
    if !probs.is_empty() {
        return Err(format!("after deleting everything: {}", probs.join("; ")));
    }
    let left = list_dir(&fs, ROOT_INO).map_err(|x| e("readdir", x))?.0;
    if !left.is_empty() {
        return Err(format!(
            "{} names left after deleting everything",
            left.len()
        ));
    }
    fs.unmount().map_err(|x| e("unmount", x))?;
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).map_err(|_| "media still shared".to_string())?;
    fsck_clean(&media).map_err(|x| format!("after deleting everything and unmounting: {x}"))?;
    let fs = Fs::mount(media, FsOptions::default()).map_err(|x| e("mount after unmount", x))?;
    let probs = consistency(&fs);
    if !probs.is_empty() {
        return Err(format!("after unmount and mount: {}", probs.join("; ")));
    }
    Ok(())
}
