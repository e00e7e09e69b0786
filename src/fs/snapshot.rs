//! A picture of the page model at one moment, for `daxlink demo --report`:
//! every regular file's pages and the blocks they map, each interesting
//! block's `struct page` model, owners, pins, proxies, poison and first
//! bytes, and the head of the free list. Read-only; the parts are read one
//! after the other (inodes, then meta, then the page model), so the picture
//! is exact only while nothing else changes the filesystem, as in the demo.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::*;
use crate::pages::{PageDesc, PG_DIRTY, PG_DYNAMIC, PG_POISONED, PG_SHARED};

/// Pages listed per file, files listed, blocks described: a snapshot must
/// fit in one ioctl reply.
const MAX_FILE_PAGES: u64 = 8;
const MAX_FILES: usize = 16;
const MAX_BLOCKS: usize = 40;
/// How much of the free list is shown (the blocks the allocator gives next).
const FREE_HEAD: usize = 6;

/// (inode, size, [(logical page, physical block)]).
type FileRow = (u64, u64, Vec<(u64, u64)>);

fn flag_names(f: u32) -> Vec<&'static str> {
    [
        (PG_DIRTY, "dirty"),
        (PG_SHARED, "shared"),
        (PG_POISONED, "poisoned"),
        (PG_DYNAMIC, "dynamic"),
    ]
    .iter()
    .filter(|(b, _)| f & b != 0)
    .map(|(_, n)| *n)
    .collect()
}

fn page_json(p: &PageDesc) -> Value {
    json!({
        "refcount": p.refcount, "pincount": p.pincount, "mapcount": p.mapcount,
        "mapping": p.mapping, "index": p.index, "flags": flag_names(p.flags),
        "proxies": p.proxies,
    })
}

/// The first bytes of a block as a reader would name them: text if
/// printable, else hex.
fn head_label(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic()) {
        String::from_utf8_lossy(b).into_owned()
    } else {
        b.iter()
            .map(|c| format!("{c:02x}"))
            .collect::<Vec<_>>()
            .join("")
    }
}

impl Fs {
    /// The snapshot as JSON (format: docs/INTERNALS.md, "Report snapshots").
    /// `extra` names blocks to describe even if nothing refers to them now
    /// (a block freed since an earlier snapshot).
    pub fn snapshot(&self, extra: &[u64]) -> FsResult<Value> {
        // Regular files and their mapped pages, one inode lock at a time.
        let all: Vec<InodeRef> = self.inodes.read().values().cloned().collect();
        let mut files: Vec<FileRow> = Vec::new();
        for r in all {
            let g = r.read()?;
            if g.rec.mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            let mut pages = Vec::new();
            for (l, e) in g.extents.iter() {
                for i in 0..e.len {
                    if l + i < MAX_FILE_PAGES {
                        pages.push((l + i, e.phys + i));
                    }
                }
            }
            files.push((g.ino, g.rec.size, pages));
        }
        files.sort();
        files.truncate(MAX_FILES);
        let view = self.pages.view();
        let proxy = self.pages.model == crate::pages::PageModel::Proxy;
        let mut blocks: BTreeSet<u64> = extra.iter().copied().collect();
        blocks.extend(files.iter().flat_map(|f| f.2.iter().map(|p| p.1)));
        blocks.extend(view.pages.keys().copied());
        blocks.extend(
            view.pins
                .iter()
                .flat_map(|p| p.blocks())
                .filter(|b| *b != crate::pages::ZERO_PAGE),
        );
        blocks.extend(view.deferred.iter().copied());
        blocks.extend(view.poisoned.iter().copied());
        let blocks: Vec<u64> = blocks.into_iter().take(MAX_BLOCKS).collect();
        let (alloc, refs, free_count, free_next) = {
            let m = self.meta.lock();
            let alloc: Vec<bool> = blocks.iter().map(|b| m.space.is_used(*b)).collect();
            let refs: Vec<u32> = blocks
                .iter()
                .map(|b| {
                    ctx::ref_pieces(&m.refs, *b, 1)
                        .first()
                        .map(|p| p.2)
                        .unwrap_or(1)
                })
                .collect();
            (
                alloc,
                refs,
                m.space.free_blocks(),
                m.space.free_head(FREE_HEAD),
            )
        };
        let mut bj = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let owners = self.owners_of(*b);
            let rmap = self.pages.rmap(*b, &owners);
            let head = self.media.read_vec(b * BS, 4)?;
            let pins: Vec<u64> = view
                .pins
                .iter()
                .filter(|p| p.position(*b).is_some())
                .map(|p| p.id)
                .collect();
            bj.push(json!({
                "block": b,
                "allocated": alloc[i],
                "refcount": if owners.is_empty() { 0 } else { refs[i] },
                "head": head_label(&head),
                "owners": owners,
                "rmap": rmap,
                "page": view.pages.get(b).map(page_json),
                "pins": pins,
                "deferred": view.deferred.contains(b),
                "poisoned": view.poisoned.contains(b),
                "notified": view.notified.get(b),
            }));
        }
        let fj: Vec<Value> = files
            .iter()
            .map(|(ino, size, pages)| {
                json!({
                    "inode": ino,
                    "path": self.path_of(*ino).map(|p| p.0),
                    "size": size,
                    "pages": pages.iter().map(|(l, p)| json!({"index": l, "block": p}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let pj: Vec<Value> = view
            .pins
            .iter()
            .map(|p| {
                json!({
                    "id": p.id, "inode": p.ino, "index": p.index,
                    "blocks": p.blocks().collect::<Vec<_>>(),
                    "write": p.write, "longterm": p.longterm, "dirty": p.dirty,
                    "holder": p.holder, "proxies": p.proxy_ids(proxy),
                })
            })
            .collect();
        let xj: Vec<Value> = view
            .proxies
            .values()
            .map(|p| {
                json!({
                    "id": p.id, "page": p.page, "owner": p.owner, "index": p.index,
                    "holder": p.holder, "pins": p.pins, "dirty": p.dirty,
                })
            })
            .collect();
        let dj: Vec<Value> = view
            .dirty
            .iter()
            .map(|d| json!({"block": d.block, "attributed": d.attributed, "owner": d.owner}))
            .collect();
        Ok(json!({
            "model": self.pages.model.name(),
            "files": fj,
            "blocks": bj,
            "pins": pj,
            // The first 32 (the reply is bounded).
            "leases": self.pages.leases.all().iter().take(32).map(|l| json!({
                "id": l.id, "inode": l.ino, "pid": l.pid, "uid": l.uid,
                "write": l.write, "holder": l.holder,
            })).collect::<Vec<_>>(),
            "proxies": xj,
            "dirty": dj,
            "free": {"count": free_count, "next": free_next},
            "violated": self.check_invariants(),
            "counters": self.counters.json(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::head_label;
    use crate::fs::make::{mkfs, MkfsOptions};
    use crate::fs::{Cred, Fs, FsOptions, ROOT_INO};
    use crate::media::Media;
    use crate::pages::PageModel;

    const C: Cred = Cred {
        uid: 0,
        gid: 0,
        umask: 0,
    };

    fn fs(model: PageModel) -> Fs {
        let m = Media::anonymous(1024 * 4096).unwrap();
        mkfs(&m, &MkfsOptions::default()).unwrap();
        let o = FsOptions {
            page_model: model,
            ..FsOptions::default()
        };
        Fs::mount(m, o).unwrap()
    }

    /// S1 under proxy: the truncated, pinned block is deferred, not free,
    /// and a block named in `extra` is described although nothing maps it.
    #[test]
    fn snapshot_shows_pins_proxies_and_deferred_blocks() {
        let fs = fs(PageModel::Proxy);
        let a = fs
            .mknod(ROOT_INO, b"A", libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(a, 0, &[b'a'; 4096], false).unwrap();
        let s0 = fs.snapshot(&[]).unwrap();
        let blk = s0["files"][0]["pages"][0]["block"].as_u64().unwrap();
        assert_eq!(s0["files"][0]["path"], "/A");
        assert_eq!(s0["blocks"][0]["head"], "aaaa");
        assert!(s0["blocks"][0]["page"].is_null());
        let id = fs.pin(a, 7, 0, 4096, true, false).unwrap();
        fs.truncate(a, 0).unwrap();
        let next = fs.snapshot(&[]).unwrap()["free"]["next"][0]
            .as_u64()
            .unwrap();
        let s = fs.snapshot(&[next]).unwrap();
        assert_eq!(s["model"], "proxy");
        assert!(s["files"][0]["pages"].as_array().unwrap().is_empty());
        let b = s["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["block"] == blk)
            .unwrap();
        assert_eq!(b["deferred"], true);
        assert_eq!(b["allocated"], true);
        assert_eq!(b["page"]["pincount"], 1);
        assert_eq!(b["page"]["refcount"], 1025);
        assert_eq!(b["pins"][0], id);
        assert_eq!(s["proxies"][0]["page"], blk);
        assert_eq!(s["pins"][0]["write"], true);
        let n = s["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["block"] == next)
            .unwrap();
        assert_eq!(n["allocated"], false);
        assert!(!s["free"]["next"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| *x == blk));
        assert!(s["violated"].as_array().unwrap().is_empty());
    }

    #[test]
    fn heads_are_text_or_hex() {
        assert_eq!(head_label(b"aaaa"), "aaaa");
        assert_eq!(head_label(&[0xde, 0xad, 0xde, 0xad]), "deaddead");
        assert_eq!(head_label(&[0, 0, 0, 0]), "00000000");
    }
}
