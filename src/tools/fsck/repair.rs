//! Writing the fixes: new record slots and blocks for what fsck adds, the
//! release of reclaimed inodes' records, the inode table rewrite, and the
//! application of the queued stores through the journal as one transaction
//! (or directly when they do not fit it).

use super::space::Owner;
use super::{free_inode, Ck, BS};
use crate::format::{self, InodeRec, RecBlockHdr, RecKind, REC_HDR};
use crate::journal::{Journal, JournalError};

impl Ck<'_> {
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
    pub(super) fn alloc_slot(&mut self, kind: RecKind) -> Option<u64> {
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

    // -- reclaim ----------------------------------------------------------

    pub(super) fn finish_reclaim(&mut self) {
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

    // -- writing ----------------------------------------------------------

    pub(super) fn queue_inodes(&mut self) {
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
    pub(super) fn apply(&mut self) -> Result<(), String> {
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
}
