//! Record chains and the records that map space: the roots block (rebuilt by
//! a scan when bad), the four chains and every slot in them, extent records
//! (range, owner, overlap, shared blocks) and orphan records (unfinished
//! truncates, deferred frees; inode orphans are judged in `dirs`).

use std::collections::{HashMap, HashSet};

use super::space::{blocks_text, Owner};
use super::{Ck, Ext, BS};
use crate::check;
use crate::check::chain;
use crate::format::{
    self, DirentRec, ExtentRec, OrphanRec, RecBlockHdr, RecKind, RefcountRec, Roots, REC_HDR,
    REC_KINDS,
};

impl Ck<'_> {
    // -- roots and chains -------------------------------------------------

    fn read_roots(&self) -> Result<Roots, String> {
        self.rd(self.sb.roots_block * BS, format::ROOTS_SIZE)
            .ok_or_else(|| "unreadable".to_string())
            .and_then(|b| Roots::decode(&b).map_err(|e| e.to_string()))
    }

    /// The initialization marks bounding what the inode-table and bitmap
    /// passes read: the roots block's, within the geometry, or the whole
    /// geometry when the roots block is unreadable.
    pub(super) fn marks(&mut self) {
        let (ic, bb) = (self.sb.inode_count, self.sb.bitmap_blocks);
        match self.read_roots() {
            Ok(r) => {
                self.inode_init = r.inode_init.clamp(1, ic);
                self.bitmap_init = r.bitmap_init.clamp(1, bb);
            }
            Err(_) => {
                (self.inode_init, self.bitmap_init) = (ic, bb);
                self.marks_lost = true;
            }
        }
    }

    pub(super) fn roots(&mut self) {
        match self.read_roots() {
            Ok(mut r) => {
                if let Err(e) = r.check_marks(&self.sb) {
                    self.out.add(
                        "roots-mark",
                        true,
                        format!(
                            "{e}; set to {} inodes, {} bitmap blocks",
                            self.inode_init, self.bitmap_init
                        ),
                    );
                    r.inode_init = self.inode_init;
                    r.bitmap_init = self.bitmap_init;
                    self.roots_dirty = true;
                }
                self.roots = r;
            }
            Err(e) => {
                // The marks are settled once the inode table and the bitmap
                // have been read (`inode_table`, `bitmap`).
                self.roots = self.scan_heads();
                self.roots.inode_init = self.inode_init;
                self.roots.bitmap_init = self.bitmap_init;
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

    pub(super) fn chain(&mut self, kind: RecKind) {
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

    // -- extents ----------------------------------------------------------

    pub(super) fn extents(&mut self) {
        let raw = std::mem::take(&mut self.extents_raw);
        for (slot, x) in raw {
            let len = x.len as u64;
            let what = check::extent_what(slot, &x);
            // Mount's rules (`check::extent`).
            let owner = self.inodes.get(&x.ino);
            let fault = check::extent(&self.sb, &x, owner.map(|i| i.rec.mode), |l, n| {
                check::overlapping(&owner?.extents, l, n, |e| e.len)
            });
            if let Err(f) = fault {
                self.out
                    .add(f.code(), true, format!("{what} {f}; record dropped"));
                self.zero(slot, format::EXTENT_SIZE);
                // Blocks outside the data area are not released (they
                // belong to no one).
                if f.frees_blocks(&self.sb, &x) {
                    self.unclaim(x.phys, len);
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
                self.unclaim(x.phys, len);
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

    pub(super) fn write_extent(&mut self, ino: u64, logical: u64, e: Ext) {
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

    pub(super) fn orphans(&mut self) {
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
                // An intent (unfinished punch, zero range or allocation):
                // its every state is consistent, and the next mount finishes
                // it; it only needs a live regular file.
                OrphanRec::Range { op, ino, from, end } => match self.inodes.get(&ino) {
                    Some(i) if i.rec.mode & libc::S_IFMT == libc::S_IFREG => {
                        self.out.note(format!(
                            "unfinished {op:?} of inode {ino}, blocks {from}..{end} (intent record at {slot:#x}): the next mount finishes it"
                        ));
                    }
                    _ => bad(
                        self,
                        format!("(unfinished {op:?}) names inode {ino}, not a regular file"),
                    ),
                },
                OrphanRec::Remap { src, dst, .. } => {
                    let file = |s: &Self, i: u64| {
                        s.inodes
                            .get(&i)
                            .is_some_and(|i| i.rec.mode & libc::S_IFMT == libc::S_IFREG)
                    };
                    if file(self, src) && file(self, dst) {
                        self.out.note(format!(
                            "unfinished remap of inode {src} into inode {dst} (intent record at {slot:#x}): the next mount finishes it"
                        ));
                    } else {
                        bad(
                            self,
                            format!("(unfinished remap) names inodes {src} -> {dst}, not two regular files"),
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
}
