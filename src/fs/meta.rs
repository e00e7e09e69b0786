//! Metadata transactions: the state serialized by the meta lock (allocator,
//! record-slot free lists, free inodes, journal) and [`Ctx`], which builds one
//! journaled transaction and undoes its DRAM reservations if it is dropped
//! before commit.

use parking_lot::MutexGuard;

use crate::error::{FsError, FsResult};
use crate::format::{self, InodeRec, RecBlockHdr, RecKind, Roots, Superblock, BLOCK_SIZE};
use crate::journal::{Journal, Tx};
use crate::media::Media;
use crate::space::Space;

/// Free slots and chain heads of the record blocks.
pub struct Records {
    pub heads: [u64; 3],
    pub free: [Vec<u64>; 3],
    pub blocks: [u64; 3],
}

/// Free inode numbers: a bit per inode (set = free) and a search cursor.
pub struct InoMap {
    bits: Vec<u64>,
    count: u64,
    free: u64,
    cursor: u64,
}

impl InoMap {
    pub fn new(count: u64) -> InoMap {
        InoMap {
            bits: vec![0; count.div_ceil(64) as usize],
            count,
            free: 0,
            cursor: 0,
        }
    }
    fn idx(ino: u64) -> (usize, u64) {
        (((ino - 1) / 64) as usize, 1u64 << ((ino - 1) % 64))
    }
    pub fn insert(&mut self, ino: u64) {
        let (w, m) = Self::idx(ino);
        if self.bits[w] & m == 0 {
            self.bits[w] |= m;
            self.free += 1;
        }
    }
    pub fn len(&self) -> u64 {
        self.free
    }
    pub fn is_empty(&self) -> bool {
        self.free == 0
    }
    /// Take the first free inode at or after the cursor (wrapping).
    pub fn take(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let words = self.bits.len();
        let start = (self.cursor / 64) as usize;
        for k in 0..=words {
            let w = (start + k) % words;
            if self.bits[w] != 0 {
                let b = self.bits[w].trailing_zeros() as u64;
                let ino = w as u64 * 64 + b + 1;
                if ino > self.count {
                    continue;
                }
                self.bits[w] &= !(1 << b);
                self.free -= 1;
                self.cursor = ino - 1;
                return Some(ino);
            }
        }
        None
    }
}

pub struct Meta {
    pub space: Space,
    pub rec: Records,
    pub journal: Journal,
    pub free_inos: InoMap,
    /// Set when a commit failed half-way: every later change is refused.
    pub broken: bool,
}

enum Undo {
    Reserve(u64, u64),
    Ino(u64),
    Slot(RecKind, u64),
    NewBlock {
        kind: RecKind,
        blk: u64,
        old_head: u64,
        nslots: usize,
    },
}

pub struct Ctx<'a> {
    media: &'a Media,
    sb: &'a Superblock,
    pub m: MutexGuard<'a, Meta>,
    pub tx: Tx,
    undo: Vec<Undo>,
    free_slots: Vec<(RecKind, u64)>,
    free_blocks: Vec<(u64, u64)>,
    free_inos: Vec<u64>,
    done: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(media: &'a Media, sb: &'a Superblock, m: MutexGuard<'a, Meta>) -> FsResult<Ctx<'a>> {
        if m.broken {
            return Err(FsError::ReadOnly);
        }
        Ok(Ctx {
            media,
            sb,
            m,
            tx: Tx::new(),
            undo: Vec::new(),
            free_slots: Vec::new(),
            free_blocks: Vec::new(),
            free_inos: Vec::new(),
            done: false,
        })
    }

    pub fn media(&self) -> &Media {
        self.media
    }

    pub fn put_inode(&mut self, ino: u64, rec: &InodeRec) {
        self.tx.write(self.sb.inode_offset(ino), &rec.encode());
    }

    pub fn alloc_ino(&mut self) -> FsResult<u64> {
        let ino = self.m.free_inos.take().ok_or(FsError::NoSpace)?;
        self.undo.push(Undo::Ino(ino));
        Ok(ino)
    }

    /// Mark an inode free on media (keeping a bumped generation); reusable after commit.
    pub fn free_ino(&mut self, ino: u64, generation: u32) {
        let rec = InodeRec {
            generation: generation.wrapping_add(1),
            ..Default::default()
        };
        self.put_inode(ino, &rec);
        self.free_inos.push(ino);
    }

    /// Make sure `n` free slots of `kind` exist (allocating record blocks), so
    /// that later `slot_alloc` calls cannot fail.
    pub fn ensure_slots(&mut self, kind: RecKind, n: usize) -> FsResult<()> {
        while self.m.rec.free[kind.index()].len() < n {
            let (blk, _) = self.m.space.reserve(1, None).ok_or(FsError::NoSpace)?;
            self.undo.push(Undo::Reserve(blk, 1));
            // The block is free space: zero it directly, then link it by journal.
            self.media.fill(blk * BLOCK_SIZE, BLOCK_SIZE, 0)?;
            self.media.persist(blk * BLOCK_SIZE, BLOCK_SIZE)?;
            let old_head = self.m.rec.heads[kind.index()];
            let hdr = RecBlockHdr {
                kind,
                next: old_head,
            };
            self.tx.write(blk * BLOCK_SIZE, &hdr.encode());
            let meta = &mut *self.m;
            meta.space
                .tx_set(self.media, &mut self.tx, blk, 1, true)
                .map_err(FsError::from)?;
            meta.rec.heads[kind.index()] = blk;
            meta.rec.blocks[kind.index()] += 1;
            let nslots = kind.slots_per_block();
            for i in (0..nslots).rev() {
                meta.rec.free[kind.index()]
                    .push(blk * BLOCK_SIZE + (format::REC_HDR + i * kind.slot_size()) as u64);
            }
            let roots = Roots {
                heads: meta.rec.heads,
            };
            self.tx
                .write(self.sb.roots_block * BLOCK_SIZE, &roots.encode());
            self.undo.push(Undo::NewBlock {
                kind,
                blk,
                old_head,
                nslots,
            });
        }
        Ok(())
    }

    /// Take a free slot (call `ensure_slots` first when failure is not allowed).
    pub fn slot_alloc(&mut self, kind: RecKind) -> FsResult<u64> {
        self.ensure_slots(kind, 1)?;
        let off = self.m.rec.free[kind.index()].pop().expect("ensured");
        self.undo.push(Undo::Slot(kind, off));
        Ok(off)
    }

    pub fn slot_write(&mut self, off: u64, bytes: &[u8]) {
        self.tx.write(off, bytes);
    }

    pub fn slot_free(&mut self, kind: RecKind, off: u64) {
        self.tx.write(off, &vec![0u8; kind.slot_size()]);
        self.free_slots.push((kind, off));
    }

    /// Reserve data blocks in DRAM (undone if this context is dropped uncommitted).
    pub fn reserve(&mut self, n: u64, goal: Option<u64>) -> FsResult<Vec<(u64, u64)>> {
        let runs = self.m.space.reserve_many(n, goal).ok_or(FsError::NoSpace)?;
        for (p, l) in &runs {
            self.undo.push(Undo::Reserve(*p, *l));
        }
        Ok(runs)
    }

    fn check_range(&self, phys: u64, len: u64) -> FsResult<()> {
        match phys.checked_add(len) {
            Some(end) if phys >= self.sb.data_start && end <= self.sb.total_blocks => Ok(()),
            _ => Err(FsError::Corrupt(format!(
                "block range {phys}+{len} lies outside the data area"
            ))),
        }
    }

    /// Record blocks as used on media (they must be reserved in DRAM already).
    pub fn blocks_used(&mut self, phys: u64, len: u64) -> FsResult<()> {
        self.check_range(phys, len)?;
        let meta = &mut *self.m;
        meta.space
            .tx_set(self.media, &mut self.tx, phys, len, true)?;
        Ok(())
    }

    /// Free blocks on media; they become allocatable once the transaction commits.
    pub fn blocks_free(&mut self, phys: u64, len: u64) -> FsResult<()> {
        self.check_range(phys, len)?;
        let meta = &mut *self.m;
        meta.space
            .tx_set(self.media, &mut self.tx, phys, len, false)?;
        self.free_blocks.push((phys, len));
        Ok(())
    }

    pub fn tx_size(&self) -> usize {
        self.tx.encoded_size()
    }

    /// Commit atomically; on success the freed resources become reusable.
    pub fn commit(mut self) -> FsResult<()> {
        let r = {
            let meta = &mut *self.m;
            meta.journal.commit(self.media, &self.tx)
        };
        self.done = true;
        match r {
            Ok(()) => {
                let meta = &mut *self.m;
                for (k, off) in self.free_slots.drain(..) {
                    meta.rec.free[k.index()].push(off);
                }
                for (p, l) in self.free_blocks.drain(..) {
                    meta.space.unreserve(p, l);
                }
                for ino in self.free_inos.drain(..) {
                    meta.free_inos.insert(ino);
                }
                Ok(())
            }
            Err(e) => {
                log::error!("metadata commit failed, refusing further changes: {e}");
                self.m.broken = true;
                Err(FsError::Io(e.to_string()))
            }
        }
    }
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let meta = &mut *self.m;
        for u in self.undo.drain(..).rev() {
            match u {
                Undo::Reserve(p, l) => meta.space.unreserve(p, l),
                Undo::Ino(i) => {
                    meta.free_inos.insert(i);
                }
                Undo::Slot(k, off) => meta.rec.free[k.index()].push(off),
                Undo::NewBlock {
                    kind,
                    blk,
                    old_head,
                    nslots,
                } => {
                    let fl = &mut meta.rec.free[kind.index()];
                    let lo = blk * BLOCK_SIZE;
                    let hi = lo + BLOCK_SIZE;
                    fl.retain(|o| !(lo..hi).contains(o));
                    let _ = nslots;
                    meta.rec.heads[kind.index()] = old_head;
                    meta.rec.blocks[kind.index()] -= 1;
                }
            }
        }
    }
}
