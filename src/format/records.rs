//! Record blocks and the four kinds of records they hold (extent, directory
//! entry, orphan, refcount): one definition each.

use super::*;

// ---------------------------------------------------------------------------
// Record blocks and records
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecBlockHdr {
    pub kind: RecKind,
    pub next: u64,
}

impl RecBlockHdr {
    pub fn encode(&self) -> [u8; REC_HDR] {
        let mut b = [0u8; REC_HDR];
        Le::put32(&mut b, 0, RECBLK_MAGIC);
        Le::put16(&mut b, 4, self.kind as u16);
        Le::put16(&mut b, 6, self.kind.slot_size() as u16);
        Le::put64(&mut b, 8, self.next);
        Le::put32(&mut b, 16, self.kind.slots_per_block() as u32);
        let c = crc(&b[..REC_HDR - 4]);
        Le::put32(&mut b, REC_HDR - 4, c);
        b
    }
    pub fn decode(b: &[u8]) -> Result<RecBlockHdr, FormatError> {
        const W: &str = "record block header";
        need(W, b, REC_HDR)?;
        if Le::u32(b, 0) != RECBLK_MAGIC {
            return Err(FormatError::BadMagic { what: W });
        }
        check_crc(W, &b[..REC_HDR - 4], Le::u32(b, REC_HDR - 4))?;
        let kind = RecKind::from_u16(Le::u16(b, 4))
            .ok_or_else(|| invalid(W, format!("unknown record kind {}", Le::u16(b, 4))))?;
        if Le::u16(b, 6) as usize != kind.slot_size()
            || Le::u32(b, 16) as usize != kind.slots_per_block()
        {
            return Err(invalid(W, "slot geometry does not match its kind"));
        }
        Ok(RecBlockHdr {
            kind,
            next: Le::u64(b, 8),
        })
    }
}

/// One kind of record: its body. The framing every kind shares (the slot
/// size, an all-zero slot is free, the crc) is `encode_slot`'s and
/// `decode_slot`'s, the one definition.
pub trait Record: Sized {
    /// The chain that holds this kind.
    const KIND: RecKind;
    /// What a decode error names.
    const WHAT: &'static str;
    /// Where the crc is stored; it covers the rest of the slot before it
    /// (`checksum` says otherwise for a kind whose crc is not at the end).
    const CRC_AT: usize = Self::SIZE - 4;
    /// The slot size.
    const SIZE: usize;
    /// Write the fields into `b` (a zeroed slot), crc left out.
    fn put(&self, b: &mut [u8]);
    /// Read the fields of a slot that is not free and whose crc matched.
    fn get(b: &[u8]) -> Result<Self, FormatError>;
    /// The crc of slot `b`.
    fn checksum(b: &[u8]) -> u32 {
        crc(&b[..Self::CRC_AT])
    }
}

/// Record `r` as its slot's bytes (`N` is `R::SIZE`).
pub fn encode_slot<R: Record, const N: usize>(r: &R) -> [u8; N] {
    debug_assert_eq!(N, R::SIZE);
    let mut b = [0u8; N];
    r.put(&mut b);
    let c = R::checksum(&b);
    Le::put32(&mut b, R::CRC_AT, c);
    b
}

/// The record in slot `b`: `Ok(None)` for a free (all-zero) slot.
pub fn decode_slot<R: Record>(b: &[u8]) -> Result<Option<R>, FormatError> {
    need(R::WHAT, b, R::SIZE)?;
    let b = &b[..R::SIZE];
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let (stored, computed) = (Le::u32(b, R::CRC_AT), R::checksum(b));
    if stored != computed {
        return Err(FormatError::BadChecksum {
            what: R::WHAT,
            stored,
            computed,
        });
    }
    R::get(b).map(Some)
}

/// A record kind's inherent `encode` (its slot's bytes) and `decode`
/// (`Ok(None)` for a free slot), by the one framing.
macro_rules! slot_codec {
    ($t:ty, $n:expr) => {
        impl $t {
            pub fn encode(&self) -> [u8; $n] {
                encode_slot(self)
            }
            /// `Ok(None)` for a free (all-zero) slot.
            pub fn decode(b: &[u8]) -> Result<Option<$t>, FormatError> {
                decode_slot(b)
            }
        }
    };
}

pub const EXTENT_SIZE: usize = 32;

/// One extent: `len` blocks of file `ino` from logical block `logical` map to
/// physical blocks starting at `phys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentRec {
    pub ino: u64,
    pub logical: u64,
    pub phys: u64,
    pub len: u32,
}

slot_codec!(ExtentRec, EXTENT_SIZE);

impl Record for ExtentRec {
    const KIND: RecKind = RecKind::Extent;
    const WHAT: &'static str = "extent record";
    const SIZE: usize = EXTENT_SIZE;
    fn put(&self, b: &mut [u8]) {
        Le::put64(b, 0, self.ino);
        Le::put64(b, 8, self.logical);
        Le::put64(b, 16, self.phys);
        Le::put32(b, 24, self.len);
    }
    fn get(b: &[u8]) -> Result<ExtentRec, FormatError> {
        const W: &str = ExtentRec::WHAT;
        let r = ExtentRec {
            ino: Le::u64(b, 0),
            logical: Le::u64(b, 8),
            phys: Le::u64(b, 16),
            len: Le::u32(b, 24),
        };
        if r.ino == 0 || r.len == 0 {
            return Err(invalid(W, "zero inode or length"));
        }
        if r.logical.checked_add(r.len as u64).is_none()
            || r.phys.checked_add(r.len as u64).is_none()
        {
            return Err(invalid(W, "range overflows"));
        }
        Ok(r)
    }
}

pub const DIRENT_SIZE: usize = 280;

/// A directory entry's `ftype` for an inode of `mode`: `(mode & S_IFMT) >> 12`.
pub fn ftype_byte(mode: u32) -> u8 {
    ((mode & libc::S_IFMT) >> 12) as u8
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirentRec {
    pub parent: u64,
    pub child: u64,
    /// File type (S_IFMT >> 12).
    pub ftype: u8,
    pub name: Vec<u8>,
}

slot_codec!(DirentRec, DIRENT_SIZE);

impl Record for DirentRec {
    const KIND: RecKind = RecKind::Dirent;
    const WHAT: &'static str = "directory entry";
    const SIZE: usize = DIRENT_SIZE;
    /// The crc sits before the name (bytes [20, 24)) and covers the rest.
    const CRC_AT: usize = 20;
    fn put(&self, b: &mut [u8]) {
        Le::put64(b, 0, self.parent);
        Le::put64(b, 8, self.child);
        b[16] = self.ftype;
        let n = self.name.len().min(MAX_NAME);
        b[17] = n as u8;
        b[24..24 + n].copy_from_slice(&self.name[..n]);
    }
    fn checksum(b: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&b[0..20]);
        h.update(&b[24..DIRENT_SIZE]);
        h.finalize()
    }
    fn get(b: &[u8]) -> Result<DirentRec, FormatError> {
        const W: &str = DirentRec::WHAT;
        let n = b[17] as usize;
        let name = b[24..24 + n].to_vec();
        if n == 0 || name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
            return Err(invalid(W, "invalid name"));
        }
        let r = DirentRec {
            parent: Le::u64(b, 0),
            child: Le::u64(b, 8),
            ftype: b[16],
            name,
        };
        if r.parent == 0 || r.child == 0 {
            return Err(invalid(W, "zero inode number"));
        }
        Ok(r)
    }
}

pub const ORPHAN_SIZE: usize = 32;

/// An orphan: an unlinked inode still open (freed at last close or at the next
/// mount), or a block range whose freeing was deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanRec {
    Inode(u64),
    Blocks {
        phys: u64,
        len: u64,
    },
    /// A truncate split into several transactions: blocks of `ino` from
    /// logical block `from` on are still to be freed (resumed at mount).
    Truncate {
        ino: u64,
        from: u64,
    },
    /// An intent: a change of logical blocks `[from, end)` of `ino` that
    /// takes several transactions, written by the first of them and freed
    /// by the last; a mount that finds it finishes the change.
    Range {
        op: RangeOp,
        ino: u64,
        from: u64,
        end: u64,
    },
    /// Kind 7, an intent: a remap (clone, dedupe, copy_file_range) of
    /// `blocks` blocks of `src` from logical block `sb` into `dst` at `db`,
    /// cut into several transactions; a mount that finds it remaps the whole
    /// range again (sharing is idempotent) and drops it.
    Remap {
        src: u64,
        dst: u64,
        sb: u64,
        db: u64,
        blocks: u64,
    },
}

/// Bits of the fields of a remap intent, packed little-endian into bytes
/// [4, 28) of its slot: two inode numbers (inode counts are below 2^40) and
/// three logical block numbers or counts (at most 2^34: files are at most
/// 2^46 bytes).
const REMAP_FIELDS: [u32; 5] = [40, 40, 35, 35, 35];
const MAX_LOGICAL: u64 = 1 << 34;

fn pack_bits(b: &mut [u8], fields: &[(u64, u32)]) {
    let mut at = 0usize;
    for &(v, n) in fields {
        for i in 0..n as usize {
            if v >> i & 1 == 1 {
                b[(at + i) / 8] |= 1 << ((at + i) % 8);
            }
        }
        at += n as usize;
    }
}

fn unpack_bits(b: &[u8], widths: &[u32]) -> Vec<u64> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(widths.len());
    for &n in widths {
        let mut v = 0u64;
        for i in 0..n as usize {
            if b[(at + i) / 8] >> ((at + i) % 8) & 1 == 1 {
                v |= 1 << i;
            }
        }
        out.push(v);
        at += n as usize;
    }
    out
}

/// What an intent record (orphan kinds 4-6) has still to do to its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    /// Kind 4, a hole punch: unmap every block of the range.
    Punch,
    /// Kind 5, a zero range: unmap every block of the range, then give
    /// every block a fresh zeroed one.
    Zero,
    /// Kind 6, an allocation (fallocate): give every hole of the range a
    /// fresh zeroed block.
    Fill,
}

impl RangeOp {
    fn kind(self) -> u32 {
        match self {
            RangeOp::Punch => 4,
            RangeOp::Zero => 5,
            RangeOp::Fill => 6,
        }
    }
}

slot_codec!(OrphanRec, ORPHAN_SIZE);

impl Record for OrphanRec {
    const KIND: RecKind = RecKind::Orphan;
    const WHAT: &'static str = "orphan record";
    const SIZE: usize = ORPHAN_SIZE;
    fn put(&self, b: &mut [u8]) {
        match *self {
            OrphanRec::Inode(ino) => {
                Le::put32(b, 0, 1);
                Le::put64(b, 8, ino);
            }
            OrphanRec::Blocks { phys, len } => {
                Le::put32(b, 0, 2);
                Le::put64(b, 8, phys);
                Le::put64(b, 16, len);
            }
            OrphanRec::Truncate { ino, from } => {
                Le::put32(b, 0, 3);
                Le::put64(b, 8, ino);
                Le::put64(b, 16, from);
            }
            OrphanRec::Range { op, ino, from, end } => {
                // `end` is split: its high half in bytes [4, 8), its low half
                // in bytes [24, 28) (the two words the older kinds leave zero).
                Le::put32(b, 0, op.kind());
                Le::put32(b, 4, (end >> 32) as u32);
                Le::put64(b, 8, ino);
                Le::put64(b, 16, from);
                Le::put32(b, 24, end as u32);
            }
            OrphanRec::Remap {
                src,
                dst,
                sb,
                db,
                blocks,
            } => {
                Le::put32(b, 0, 7);
                let f = [src, dst, sb, db, blocks];
                let fields: Vec<(u64, u32)> = f.into_iter().zip(REMAP_FIELDS).collect();
                pack_bits(&mut b[4..28], &fields);
            }
        }
    }
    fn get(b: &[u8]) -> Result<OrphanRec, FormatError> {
        const W: &str = OrphanRec::WHAT;
        match Le::u32(b, 0) {
            1 => Ok(OrphanRec::Inode(Le::u64(b, 8))),
            2 => Ok(OrphanRec::Blocks {
                phys: Le::u64(b, 8),
                len: Le::u64(b, 16),
            }),
            3 => Ok(OrphanRec::Truncate {
                ino: Le::u64(b, 8),
                from: Le::u64(b, 16),
            }),
            k @ 4..=6 => {
                let op = match k {
                    4 => RangeOp::Punch,
                    5 => RangeOp::Zero,
                    _ => RangeOp::Fill,
                };
                let (ino, from) = (Le::u64(b, 8), Le::u64(b, 16));
                let end = (Le::u32(b, 4) as u64) << 32 | Le::u32(b, 24) as u64;
                if ino == 0 || from >= end {
                    return Err(invalid(
                        W,
                        format!("intent record names inode {ino}, blocks {from}..{end}"),
                    ));
                }
                Ok(OrphanRec::Range { op, ino, from, end })
            }
            7 => {
                let f = unpack_bits(&b[4..28], &REMAP_FIELDS);
                let (src, dst, sb, db, blocks) = (f[0], f[1], f[2], f[3], f[4]);
                let fits = |start: u64| start.checked_add(blocks).is_some_and(|e| e <= MAX_LOGICAL);
                if src == 0 || dst == 0 || blocks == 0 || !fits(sb) || !fits(db) {
                    return Err(invalid(W, format!("remap intent names inodes {src} -> {dst}, blocks {sb}+{blocks} -> {db}")));
                }
                Ok(OrphanRec::Remap {
                    src,
                    dst,
                    sb,
                    db,
                    blocks,
                })
            }
            k => Err(invalid(W, format!("unknown orphan kind {k}"))),
        }
    }
}

pub const REFCOUNT_SIZE: usize = 32;

/// Reference count of a shared range of physical blocks (XFS-style: only
/// ranges referenced two or more times have a record; ranges never overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefcountRec {
    pub phys: u64,
    pub len: u64,
    pub count: u32,
}

slot_codec!(RefcountRec, REFCOUNT_SIZE);

impl Record for RefcountRec {
    const KIND: RecKind = RecKind::Refcount;
    const WHAT: &'static str = "refcount record";
    const SIZE: usize = REFCOUNT_SIZE;
    fn put(&self, b: &mut [u8]) {
        Le::put64(b, 0, self.phys);
        Le::put64(b, 8, self.len);
        Le::put32(b, 16, self.count);
    }
    fn get(b: &[u8]) -> Result<RefcountRec, FormatError> {
        const W: &str = RefcountRec::WHAT;
        let r = RefcountRec {
            phys: Le::u64(b, 0),
            len: Le::u64(b, 8),
            count: Le::u32(b, 16),
        };
        if r.len == 0 || r.count < 2 || r.phys.checked_add(r.len).is_none() {
            return Err(invalid(W, "zero length, count below 2, or overflow"));
        }
        Ok(r)
    }
}
