//! Workloads: ACE-style sequences of one and two operations over a small file
//! set, generated from the state they start in (not hand-listed).
//!
//! The small base image (made once per run, `base.rs`) holds directories `A`, `B` and the
//! empty `A/C`, the files `A/foo` (9000 bytes, xattr `user.a`) and `B/foo`
//! (5000 bytes). The file set is `A/foo`, `A/bar`, `B/foo`, `B/bar` and the
//! directory names `A/C`, `B/C`. [`candidates`] lists every operation that
//! applies to a state: create, mkdir, symlink, write past EOF, append,
//! overwrite, truncate down and up, punch, zero-range, fallocate, rename
//! (plain, NOREPLACE, EXCHANGE), link, unlink, rmdir, setxattr (new, replace,
//! on a directory), removexattr, fsync, fdatasync, the reflink operations
//! clone, copy_file_range and dedupe, unlink of an open file, and pin +
//! truncate (the proxy page model's deferred free). seq-1 is every candidate of the base
//! state; seq-2 is every candidate pair whose second operation touches a path
//! the first one touched.
//!
//! To add an operation: a variant of [`Op`], its name in [`Op::name`], what it
//! does in [`Op::apply`], the paths it touches in [`Op::paths`], and where it
//! applies in [`candidates`].

use std::sync::Arc;

use super::base::{state_after, Base};
use super::oracle::{capture, Kind, Snapshot};
use super::record::{Event, Recorder};
use super::rng::hash_str;
use crate::error::{FsError, FsResult};
use crate::format::{BLOCK_SIZE, ROOT_INO};
use crate::fs::{Cred, Fs, FsOptions};
use crate::journal::Inject;
use crate::media::Media;

const BS: u64 = BLOCK_SIZE;
/// Size of the test filesystem (the smallest mkfs makes).
pub const IMAGE_BLOCKS: u64 = crate::tools::mkfs::MIN_BLOCKS;

pub const FILES: [&str; 4] = ["A/foo", "A/bar", "B/foo", "B/bar"];
pub const DIRS: [&str; 2] = ["A/C", "B/C"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameFlags {
    Plain,
    NoReplace,
    Exchange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Mode 0 (may extend the size).
    Alloc,
    /// KEEP_SIZE.
    KeepSize,
    /// PUNCH_HOLE | KEEP_SIZE.
    Punch,
    /// ZERO_RANGE.
    Zero,
}

/// One filesystem operation of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Create {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `overwrite` only names it (a write inside the file vs past its end).
    Write {
        path: String,
        off: u64,
        len: u64,
        overwrite: bool,
    },
    Append {
        path: String,
        len: u64,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Fallocate {
        path: String,
        off: u64,
        len: u64,
        mode: Falloc,
    },
    Rename {
        from: String,
        to: String,
        flags: RenameFlags,
    },
    Link {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    SetXattr {
        path: String,
        name: String,
        len: u64,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Fsync {
        path: String,
        data_only: bool,
    },
    /// FICLONERANGE.
    Clone {
        src: String,
        dst: String,
        soff: u64,
        doff: u64,
        len: u64,
    },
    CopyRange {
        src: String,
        dst: String,
        soff: u64,
        doff: u64,
        len: u64,
    },
    Dedupe {
        src: String,
        dst: String,
        soff: u64,
        doff: u64,
        len: u64,
    },
    /// Open the file, unlink it, and keep it open (an orphan until unmount).
    UnlinkOpen {
        path: String,
    },
    /// Pin the first block through an open file (pin_user_pages), then
    /// truncate to `size`: the proxy page model defers the pinned block's
    /// free with an orphan record. The pin is kept (DRAM only).
    PinTruncate {
        path: String,
        size: u64,
    },
    /// The UNSHARE ioctl (`len` 0: to EOF).
    Unshare {
        path: String,
        off: u64,
        len: u64,
    },
    /// A write pin through an open file (fallocate of its holes, then
    /// unshare); the pin is kept (DRAM only).
    PinWrite {
        path: String,
        off: u64,
        len: u64,
    },
}

/// Deterministic, non-zero, position-dependent bytes.
pub fn pattern(seed: u64, off: u64, len: u64) -> Vec<u8> {
    (off..off + len)
        .map(|i| ((seed.wrapping_mul(131).wrapping_add(i.wrapping_mul(7))) % 251 + 1) as u8)
        .collect()
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Inode of a path ("" = root).
pub fn resolve(fs: &Fs, path: &str) -> FsResult<u64> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part.as_bytes())?.ino;
    }
    Ok(ino)
}

fn parent(fs: &Fs, path: &str) -> FsResult<(u64, Vec<u8>)> {
    let (p, n) = split(path);
    Ok((resolve(fs, p)?, n.as_bytes().to_vec()))
}

impl Op {
    /// Stable name: `kind:arg:arg...` (no spaces, usable on a command line).
    pub fn name(&self) -> String {
        match self {
            Op::Create { path } => format!("create:{path}"),
            Op::Mkdir { path } => format!("mkdir:{path}"),
            Op::Symlink { path, .. } => format!("symlink:{path}"),
            Op::Write {
                path,
                off,
                len,
                overwrite,
            } => format!(
                "{}:{path}:{off}:{len}",
                if *overwrite { "overwrite" } else { "write" }
            ),
            Op::Append { path, len } => format!("append:{path}:{len}"),
            Op::Truncate { path, size } => format!("truncate:{path}:{size}"),
            Op::Fallocate {
                path,
                off,
                len,
                mode,
            } => {
                let k = match mode {
                    Falloc::Alloc => "falloc",
                    Falloc::KeepSize => "falloc-keep",
                    Falloc::Punch => "punch",
                    Falloc::Zero => "zero",
                };
                format!("{k}:{path}:{off}:{len}")
            }
            Op::Rename { from, to, flags } => {
                let k = match flags {
                    RenameFlags::Plain => "rename",
                    RenameFlags::NoReplace => "rename-noreplace",
                    RenameFlags::Exchange => "rename-exchange",
                };
                format!("{k}:{from}:{to}")
            }
            Op::Link { from, to } => format!("link:{from}:{to}"),
            Op::Unlink { path } => format!("unlink:{path}"),
            Op::Rmdir { path } => format!("rmdir:{path}"),
            Op::SetXattr { path, name, len } => format!("setxattr:{path}:{name}:{len}"),
            Op::RemoveXattr { path, name } => format!("removexattr:{path}:{name}"),
            Op::Fsync { path, data_only } => {
                format!("{}:{path}", if *data_only { "fdatasync" } else { "fsync" })
            }
            Op::Clone {
                src,
                dst,
                soff,
                doff,
                len,
            } => format!("clone:{src}:{dst}:{soff}:{doff}:{len}"),
            Op::CopyRange {
                src,
                dst,
                soff,
                doff,
                len,
            } => format!("copy_range:{src}:{dst}:{soff}:{doff}:{len}"),
            Op::Dedupe {
                src,
                dst,
                soff,
                doff,
                len,
            } => format!("dedupe:{src}:{dst}:{soff}:{doff}:{len}"),
            Op::UnlinkOpen { path } => format!("unlink-open:{path}"),
            Op::PinTruncate { path, size } => format!("pin-truncate:{path}:{size}"),
            Op::Unshare { path, off, len } => format!("unshare:{path}:{off}:{len}"),
            Op::PinWrite { path, off, len } => format!("pin-write:{path}:{off}:{len}"),
        }
    }

    /// The operation kind (the name's first field).
    pub fn kind(&self) -> String {
        self.name().split(':').next().unwrap_or("").to_string()
    }

    /// Paths this operation reads or changes.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::Create { path }
            | Op::Mkdir { path }
            | Op::Symlink { path, .. }
            | Op::Write { path, .. }
            | Op::Append { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::Unlink { path }
            | Op::Rmdir { path }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Fsync { path, .. }
            | Op::UnlinkOpen { path }
            | Op::PinTruncate { path, .. }
            | Op::Unshare { path, .. }
            | Op::PinWrite { path, .. } => vec![path],
            Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
            Op::Clone { src, dst, .. }
            | Op::CopyRange { src, dst, .. }
            | Op::Dedupe { src, dst, .. } => vec![src, dst],
        }
    }

    /// Run it against a mounted filesystem.
    pub fn apply(&self, fs: &Fs) -> FsResult<()> {
        let c = Cred::ROOT;
        let tag = hash_str(&self.name());
        match self {
            Op::Create { path } => {
                let (p, n) = parent(fs, path)?;
                fs.mknod(p, &n, libc::S_IFREG | 0o644, 0, c)?;
            }
            Op::Mkdir { path } => {
                let (p, n) = parent(fs, path)?;
                fs.mkdir(p, &n, 0o755, c)?;
            }
            Op::Symlink { path, target } => {
                let (p, n) = parent(fs, path)?;
                fs.symlink(p, &n, target.as_bytes(), c)?;
            }
            Op::Write { path, off, len, .. } => {
                let ino = resolve(fs, path)?;
                fs.write(ino, *off, &pattern(tag, *off, *len), false)?;
            }
            Op::Append { path, len } => {
                let ino = resolve(fs, path)?;
                let size = fs.getattr(ino)?.size;
                fs.write(ino, 0, &pattern(tag, size, *len), true)?;
            }
            Op::Truncate { path, size } => {
                fs.truncate(resolve(fs, path)?, *size)?;
            }
            Op::Fallocate {
                path,
                off,
                len,
                mode,
            } => {
                let m = match mode {
                    Falloc::Alloc => 0,
                    Falloc::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
                    Falloc::Punch => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    Falloc::Zero => libc::FALLOC_FL_ZERO_RANGE,
                };
                fs.fallocate(resolve(fs, path)?, *off, *len, m)?;
            }
            Op::Rename { from, to, flags } => {
                let (p, n) = parent(fs, from)?;
                let (np, nn) = parent(fs, to)?;
                let f = match flags {
                    RenameFlags::Plain => 0,
                    RenameFlags::NoReplace => libc::RENAME_NOREPLACE,
                    RenameFlags::Exchange => libc::RENAME_EXCHANGE,
                };
                fs.rename(p, &n, np, &nn, f)?;
            }
            Op::Link { from, to } => {
                let ino = resolve(fs, from)?;
                let (np, nn) = parent(fs, to)?;
                fs.link(ino, np, &nn)?;
            }
            Op::Unlink { path } => {
                let (p, n) = parent(fs, path)?;
                fs.unlink(p, &n)?;
            }
            Op::Rmdir { path } => {
                let (p, n) = parent(fs, path)?;
                fs.rmdir(p, &n)?;
            }
            Op::SetXattr { path, name, len } => {
                let v = pattern(tag, 0, *len);
                fs.setxattr(resolve(fs, path)?, name.as_bytes(), Some(&v), 0)?;
            }
            Op::RemoveXattr { path, name } => {
                fs.setxattr(resolve(fs, path)?, name.as_bytes(), None, 0)?;
            }
            // daxlink's core has one fsync (it only fences); fdatasync maps to it.
            Op::Fsync { path, .. } => fs.fsync(resolve(fs, path)?)?,
            Op::Clone {
                src,
                dst,
                soff,
                doff,
                len,
            } => {
                fs.clone_range(resolve(fs, src)?, *soff, resolve(fs, dst)?, *doff, *len)?;
            }
            Op::CopyRange {
                src,
                dst,
                soff,
                doff,
                len,
            } => {
                fs.copy_range(resolve(fs, src)?, *soff, resolve(fs, dst)?, *doff, *len)?;
            }
            Op::UnlinkOpen { path } => {
                let ino = resolve(fs, path)?;
                fs.open(ino)?;
                let (p, n) = parent(fs, path)?;
                fs.unlink(p, &n)?;
            }
            Op::PinTruncate { path, size } => {
                let ino = resolve(fs, path)?;
                let fh = fs.open(ino)?;
                fs.pin(ino, fh, 0, BS.min(fs.getattr(ino)?.size), false, true)?;
                fs.truncate(ino, *size)?;
            }
            Op::Dedupe {
                src,
                dst,
                soff,
                doff,
                len,
            } => {
                fs.dedupe_range(resolve(fs, src)?, *soff, resolve(fs, dst)?, *doff, *len)?;
            }
            Op::Unshare { path, off, len } => fs.unshare(resolve(fs, path)?, *off, *len)?,
            Op::PinWrite { path, off, len } => {
                let ino = resolve(fs, path)?;
                let fh = fs.open(ino)?;
                fs.pin(ino, fh, *off, *len, true, false)?;
            }
        }
        Ok(())
    }
}

/// Every operation that applies to the state `s`, in a fixed order.
pub fn candidates(s: &Snapshot) -> Vec<Op> {
    let node = |p: &str| s.nodes.get(p);
    let exists = |p: &str| node(p).is_some();
    let is_file = |p: &str| node(p).is_some_and(|n| n.kind == Kind::File);
    let is_dir = |p: &str| node(p).is_some_and(|n| n.kind == Kind::Dir);
    let empty_dir = |p: &str| {
        is_dir(p)
            && !s
                .nodes
                .keys()
                .any(|k| k.len() > p.len() && k.starts_with(p) && k.as_bytes()[p.len()] == b'/')
    };
    let parent_ok = |p: &str| is_dir(split(p).0) || split(p).0.is_empty();
    let names: Vec<&str> = FILES.iter().chain(DIRS.iter()).copied().collect();
    let mut out = Vec::new();
    let o = |s: &str| s.to_string();
    for f in FILES {
        if !exists(f) && parent_ok(f) {
            out.push(Op::Create { path: o(f) });
        }
    }
    for d in DIRS {
        if !exists(d) && parent_ok(d) {
            out.push(Op::Mkdir { path: o(d) });
        }
    }
    for f in FILES {
        if !exists(f) && parent_ok(f) {
            out.push(Op::Symlink {
                path: o(f),
                target: "../A/foo".into(),
            });
        }
    }
    let files: Vec<&str> = FILES.iter().copied().filter(|f| is_file(f)).collect();
    for f in &files {
        let n = node(f).unwrap();
        let size = n.size;
        let p = o(f);
        // Past EOF, leaving a hole after the last block.
        out.push(Op::Write {
            path: p.clone(),
            off: size.div_ceil(BS) * BS + BS,
            len: 5000,
            overwrite: false,
        });
        out.push(Op::Append {
            path: p.clone(),
            len: 3000,
        });
        if size > 1000 {
            out.push(Op::Write {
                path: p.clone(),
                off: 1000,
                len: (size - 1000).min(6000),
                overwrite: true,
            });
        }
        if size > 0 {
            out.push(Op::Truncate {
                path: p.clone(),
                size: (size / 2) | 1,
            });
        }
        out.push(Op::Truncate {
            path: p.clone(),
            size: size + 7000,
        });
        for mode in [Falloc::Punch, Falloc::Zero] {
            out.push(Op::Fallocate {
                path: p.clone(),
                off: 1000,
                len: 9000,
                mode,
            });
        }
        out.push(Op::Fallocate {
            path: p.clone(),
            off: size,
            len: 2 * BS,
            mode: Falloc::KeepSize,
        });
        out.push(Op::Fallocate {
            path: p.clone(),
            off: size,
            len: 2 * BS,
            mode: Falloc::Alloc,
        });
        out.push(Op::SetXattr {
            path: p.clone(),
            name: "user.n".into(),
            len: 100,
        });
        if n.xattrs.contains_key(&b"user.a"[..]) {
            out.push(Op::SetXattr {
                path: p.clone(),
                name: "user.a".into(),
                len: 5000,
            });
            out.push(Op::RemoveXattr {
                path: p.clone(),
                name: "user.a".into(),
            });
        }
        for data_only in [false, true] {
            out.push(Op::Fsync {
                path: p.clone(),
                data_only,
            });
        }
        for t in FILES {
            if !exists(t) && parent_ok(t) {
                out.push(Op::Link {
                    from: p.clone(),
                    to: o(t),
                });
            }
        }
        out.push(Op::Unlink { path: p.clone() });
        out.push(Op::UnlinkOpen { path: p.clone() });
        if size > 0 {
            out.push(Op::PinTruncate {
                path: p.clone(),
                size: 0,
            });
        }
    }
    // Reflink: whole blocks from the first file into the second (both directions once).
    for (i, a) in files.iter().enumerate() {
        for b in files.iter().skip(i + 1) {
            let (sa, sb) = (node(a).unwrap().size, node(b).unwrap().size);
            if sa >= BS && sb >= BS {
                out.push(Op::Clone {
                    src: o(a),
                    dst: o(b),
                    soff: 0,
                    doff: 0,
                    len: BS,
                });
                out.push(Op::Dedupe {
                    src: o(a),
                    dst: o(b),
                    soff: 0,
                    doff: 0,
                    len: BS,
                });
            }
            if sa > 100 {
                out.push(Op::CopyRange {
                    src: o(a),
                    dst: o(b),
                    soff: 0,
                    doff: sb,
                    len: sa.min(2 * BS + 100),
                });
            }
        }
    }
    for f in FILES {
        if node(f).is_some_and(|n| n.kind == Kind::Symlink) {
            out.push(Op::Unlink { path: o(f) });
        }
    }
    // Renames among the names of the file set.
    let mut exchanged = Vec::new();
    for from in &names {
        let Some(fnode) = node(from) else { continue };
        for to in &names {
            if from == to || !parent_ok(to) {
                continue;
            }
            let fdir = fnode.kind == Kind::Dir;
            if fdir && to.starts_with(&format!("{from}/")) {
                continue;
            }
            match node(to) {
                None => {
                    for flags in [RenameFlags::Plain, RenameFlags::NoReplace] {
                        out.push(Op::Rename {
                            from: o(from),
                            to: o(to),
                            flags,
                        });
                    }
                }
                Some(tnode) => {
                    let tdir = tnode.kind == Kind::Dir;
                    if fdir == tdir && (!tdir || empty_dir(to)) {
                        out.push(Op::Rename {
                            from: o(from),
                            to: o(to),
                            flags: RenameFlags::Plain,
                        });
                    }
                    if !exchanged.contains(&(to, from)) {
                        exchanged.push((from, to));
                        out.push(Op::Rename {
                            from: o(from),
                            to: o(to),
                            flags: RenameFlags::Exchange,
                        });
                    }
                }
            }
        }
    }
    for d in DIRS {
        if empty_dir(d) {
            out.push(Op::Rmdir { path: o(d) });
        }
        if is_dir(d) {
            out.push(Op::SetXattr {
                path: o(d),
                name: "user.d".into(),
                len: 10,
            });
        }
    }
    out
}

/// A named sequence of operations.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub ops: Vec<Op>,
    /// Starts from the big base image (`base.rs`), not the small one.
    pub big: bool,
}

impl Workload {
    pub(super) fn new(prefix: &str, ops: Vec<Op>) -> Workload {
        let name = if ops.is_empty() {
            format!("{prefix}/mount-unmount")
        } else {
            format!(
                "{prefix}/{}",
                ops.iter().map(|o| o.name()).collect::<Vec<_>>().join("+")
            )
        };
        Workload {
            name,
            ops,
            big: prefix == "big",
        }
    }

    /// Operations whose fences produce crash points: the workload's own ops
    /// (1..=n), or mount (0) and unmount (1) for the empty workload.
    pub fn crash_ops(&self) -> (usize, usize) {
        if self.ops.is_empty() {
            (0, 1)
        } else {
            (1, self.ops.len())
        }
    }
}

/// Every workload: the mount/unmount one, seq-1, and seq-2.
pub fn generate(base: &Base) -> Result<Vec<Workload>, String> {
    let mut out = vec![Workload::new("seq0", Vec::new())];
    let first = candidates(&base.snap);
    for op in &first {
        out.push(Workload::new("seq1", vec![op.clone()]));
    }
    for op in &first {
        let s1 = state_after(base, std::slice::from_ref(op))?;
        let touched = op.paths();
        for op2 in candidates(&s1) {
            if op2.paths().iter().any(|p| touched.contains(p)) {
                out.push(Workload::new("seq2", vec![op.clone(), op2]));
            }
        }
    }
    Ok(out)
}

/// A recorded run of a workload.
pub struct Recorded {
    pub events: Vec<Event>,
    /// `snaps[j]`: the semantic state after operation j (0 = mount).
    pub snaps: Vec<Snapshot>,
    /// What each workload operation returned (index 0 = the first op).
    pub results: Vec<Result<(), FsError>>,
}

/// Run a workload on a recording copy of the base image: operation 0 is the
/// mount, 1..=n the workload, n+1 the unmount.
pub fn record(base: &Base, w: &Workload, inject: Inject) -> Result<Recorded, String> {
    let mut media = Media::anonymous(base.image.len() as u64).map_err(|e| e.to_string())?;
    media.write_at(0, &base.image).map_err(|e| e.to_string())?;
    let rec = Arc::new(Recorder::new());
    media.set_observer(Some(rec.clone()));
    rec.mark(0);
    let fs = Fs::mount(media, FsOptions::default()).map_err(|e| format!("mount: {e}"))?;
    fs.set_inject(inject);
    let mut snaps = vec![capture(&fs).map_err(|e| format!("capture: {e}"))?];
    let mut results = Vec::new();
    for (i, op) in w.ops.iter().enumerate() {
        rec.mark(i + 1);
        results.push(op.apply(&fs));
        let n = rec.len();
        snaps.push(capture(&fs).map_err(|e| format!("capture after {}: {e}", op.name()))?);
        if rec.stores_since(n) > 0 {
            return Err("reading the state stored into the media".into());
        }
    }
    rec.mark(w.ops.len() + 1);
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    snaps.push(snaps.last().expect("mount snapshot").clone());
    rec.mark(w.ops.len() + 2);
    Ok(Recorded {
        events: rec.take(),
        snaps,
        results,
    })
}
