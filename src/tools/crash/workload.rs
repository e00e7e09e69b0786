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
//! clone, copy_file_range and dedupe, unlink of an open file, pin +
//! truncate (the proxy page model's deferred free), and a direct-access
//! client's overwrite and fsync (`direct.rs`). seq-1 is every candidate of the base
//! state; seq-2 is every candidate pair whose second operation touches a path
//! the first one touched. The `direct` workloads ([`generate_direct`]) are
//! longer hand-made sequences of the client's writes among the changes
//! that recall its maps.
//!
//! To add an operation: a variant of [`Op`], its name in [`Op::name`], what it
//! does in [`Op::apply`], the paths it touches in [`Op::paths`], and where it
//! applies in [`candidates`].

use std::sync::Arc;

use super::base::{state_after, Base, BIG_EXTENTS};
use super::direct::{self, Client};
use super::ops::*;
use super::oracle::{capture, Kind, Snapshot};
use super::record::{Event, Recorder};
use super::Bug;
use crate::error::FsError;
use crate::fs::{Fs, FsOptions};
use crate::media::Media;

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
        if size > 1000 {
            // The same range by a direct-access client: stored in place
            // where every block is the file's own and wholly below EOF, else
            // through the kernel path.
            out.push(Op::DirectWrite {
                path: p.clone(),
                off: 1000,
                len: (size - 1000).min(6000),
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
        out.push(Op::DirectFsync { path: p.clone() });
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

/// The workloads of the big image: one operation each on the many-extent
/// files, and a few pairs.
pub fn generate_big() -> Vec<Workload> {
    let o = |s: &str| s.to_string();
    let (frag, clone, empty) = (o("F/frag"), o("F/clone"), o("F/empty"));
    let size = (2 * BIG_EXTENTS - 1) * BS;
    let fall = |path: &String, off: u64, len: u64, mode| Op::Fallocate {
        path: path.clone(),
        off,
        len,
        mode,
    };
    let remap = |k: usize, src: &String, dst: &String, len: u64| {
        let (src, dst) = (src.clone(), dst.clone());
        match k {
            0 => Op::Clone {
                src,
                dst,
                soff: 0,
                doff: 0,
                len,
            },
            1 => Op::CopyRange {
                src,
                dst,
                soff: 0,
                doff: 0,
                len,
            },
            _ => Op::Dedupe {
                src,
                dst,
                soff: 0,
                doff: 0,
                len,
            },
        }
    };
    let singles = vec![
        fall(&frag, 0, size, Falloc::Punch),
        fall(&clone, 100 * BS + 10, 300 * BS, Falloc::Punch),
        fall(&frag, 0, 160 * BS, Falloc::Zero),
        fall(&clone, 1000, 120 * BS, Falloc::Zero),
        fall(&frag, 0, size, Falloc::Zero),
        fall(&clone, 0, 300 * BS, Falloc::KeepSize),
        fall(&frag, size - 200 * BS, 300 * BS, Falloc::Alloc),
        fall(&frag, 0, size, Falloc::KeepSize),
        Op::Truncate {
            path: frag.clone(),
            size: 0,
        },
        Op::Truncate {
            path: clone.clone(),
            size: 201 * BS + 7,
        },
        Op::Unlink { path: frag.clone() },
        Op::Unlink {
            path: clone.clone(),
        },
        remap(0, &frag, &empty, 0),
        remap(0, &frag, &clone, 0),
        remap(1, &frag, &empty, size),
        remap(2, &frag, &clone, size),
        Op::Unshare {
            path: clone.clone(),
            off: 0,
            len: 0,
        },
        Op::PinWrite {
            path: clone.clone(),
            off: 0,
            len: 300 * BS,
        },
    ];
    let pairs = vec![
        vec![
            remap(0, &frag, &empty, 0),
            Op::Unlink { path: frag.clone() },
        ],
        vec![
            fall(&frag, 0, size, Falloc::Punch),
            Op::Unlink {
                path: clone.clone(),
            },
        ],
        vec![
            fall(&clone, 0, 160 * BS, Falloc::Zero),
            Op::Truncate {
                path: clone.clone(),
                size: 0,
            },
        ],
    ];
    singles
        .into_iter()
        .map(|op| Workload::new("big", vec![op]))
        .chain(pairs.into_iter().map(|ops| Workload::new("big", ops)))
        .collect()
}

/// Hand-made sequences of a direct-access client on the small image: direct
/// overwrites mixed with the changes that recall its maps (clone from and
/// onto the file, punch, zero range, truncate), TOUCHes left pending until
/// fsync, and an operation after each fsync (a crash there must keep the
/// fsynced bytes and times).
pub fn generate_direct() -> Vec<Workload> {
    let o = |s: &str| s.to_string();
    let (a, b) = (o("A/foo"), o("B/foo"));
    let dw = |p: &String, off: u64, len: u64| Op::DirectWrite {
        path: p.clone(),
        off,
        len,
    };
    let sync = |p: &String| Op::DirectFsync { path: p.clone() };
    let clone = |src: &String, dst: &String| Op::Clone {
        src: src.clone(),
        dst: dst.clone(),
        soff: 0,
        doff: 0,
        len: BS,
    };
    let fall = |p: &String, off: u64, len: u64, mode| Op::Fallocate {
        path: p.clone(),
        off,
        len,
        mode,
    };
    let seqs = vec![
        // Pending TOUCH at fsync, then a direct write after it.
        vec![
            dw(&a, 0, 2 * BS),
            dw(&a, 100, 200),
            sync(&a),
            dw(&a, 5000, 100),
        ],
        // Clone from the file: block 0 becomes shared (kernel path, copy on
        // write), block 1 stays its own.
        vec![
            dw(&a, 0, BS),
            clone(&a, &b),
            dw(&a, 0, BS),
            dw(&a, BS, 100),
            sync(&a),
            dw(&a, 10, 10),
        ],
        // Clone onto the file, then write it and its source.
        vec![
            dw(&a, 0, 2 * BS),
            clone(&b, &a),
            dw(&a, 0, 300),
            dw(&b, 8, 4000),
            sync(&b),
            sync(&a),
        ],
        // Punch and zero range under a map: holes go to the kernel path.
        vec![
            dw(&a, 0, 2 * BS),
            fall(&a, 0, BS, Falloc::Punch),
            dw(&a, 0, 100),
            dw(&a, BS, 300),
            sync(&a),
            fall(&a, 1000, BS, Falloc::Zero),
            dw(&a, 0, 2 * BS),
        ],
        // Truncate under a map: the old last blocks are gone.
        vec![
            dw(&a, 1000, 6000),
            Op::Truncate {
                path: a.clone(),
                size: BS + 1,
            },
            dw(&a, BS, 1),
            dw(&a, 0, BS),
            sync(&a),
            dw(&a, 0, 8),
        ],
    ];
    seqs.into_iter()
        .map(|ops| Workload::new("direct", ops))
        .collect()
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
    /// `synced[j]`: the inode operation j fsynced, if it is an fsync that
    /// returned (0 = mount).
    pub synced: Vec<Option<u64>>,
    /// What the direct-access client did.
    pub direct: direct::Counts,
}

/// Run a workload on a recording copy of the base image: operation 0 is the
/// mount, 1..=n the workload, n+1 the unmount. A direct write that returned
/// must have done what a write does ([`direct::check_effect`]), and after a
/// direct fsync the file's mtime is later than before its direct writes
/// (their TOUCH happened); else the recording fails.
pub fn record(base: &Base, w: &Workload, bug: Option<Bug>) -> Result<Recorded, String> {
    let inject = bug.map(|b| b.inject()).unwrap_or_default();
    let mut media = Media::anonymous(base.image.len() as u64).map_err(|e| e.to_string())?;
    media.write_at(0, &base.image).map_err(|e| e.to_string())?;
    let rec = Arc::new(Recorder::new());
    media.set_observer(Some(rec.clone()));
    rec.mark(0);
    let fs = Fs::mount(media, FsOptions::default()).map_err(|e| format!("mount: {e}"))?;
    fs.set_inject(inject);
    let mut client = Client::attach(&fs, bug);
    let mut snaps = vec![capture(&fs).map_err(|e| format!("capture: {e}"))?];
    let mut results = Vec::new();
    let mut synced = vec![None];
    // Per inode: its mtime before its first direct write since the last fsync.
    let mut untouched = std::collections::HashMap::new();
    for (i, op) in w.ops.iter().enumerate() {
        rec.mark(i + 1);
        let ino = op.paths().first().and_then(|p| resolve(&fs, p).ok());
        let r = op.apply(&fs, &mut client);
        let ok = r.is_ok();
        results.push(r);
        let n = rec.len();
        snaps.push(capture(&fs).map_err(|e| format!("capture after {}: {e}", op.name()))?);
        if rec.stores_since(n) > 0 {
            return Err("reading the state stored into the media".into());
        }
        let (before, after) = (&snaps[i], &snaps[i + 1]);
        let what = |e: String| format!("{}: {e}", op.name());
        synced.push(None);
        match (op, ino) {
            (Op::DirectWrite { off, len, .. }, Some(ino)) if ok => {
                let path = client.last.ok_or("no path taken")?;
                direct::check_effect(before, after, ino, *off, &op.data(*off, *len), path)
                    .map_err(what)?;
                if path == direct::Path::Direct {
                    if let Some(t) = before.times.get(&ino) {
                        untouched.entry(ino).or_insert(t.0);
                    }
                }
            }
            // Another process's fsync does not send the client's pending TOUCH.
            (Op::Fsync { .. }, Some(ino)) if ok => synced[i + 1] = Some(ino),
            (Op::DirectFsync { .. }, Some(ino)) if ok => {
                synced[i + 1] = Some(ino);
                if let (Some(m0), Some(t)) = (untouched.remove(&ino), after.times.get(&ino)) {
                    if t.0 <= m0 {
                        return Err(what(format!(
                            "inode {ino}: mtime {:?} after fsync is not later than before \
                             its direct writes ({m0:?})",
                            t.0
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    rec.mark(w.ops.len() + 1);
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    snaps.push(snaps.last().expect("mount snapshot").clone());
    rec.mark(w.ops.len() + 2);
    synced.push(None);
    Ok(Recorded {
        events: rec.take(),
        snaps,
        results,
        synced,
        direct: client.counts,
    })
}
