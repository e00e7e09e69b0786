//! On-media format v2: the one definition of every on-media structure.
//!
//! Pure encode/decode, little-endian, with bounds and checksum (crc32fast, IEEE)
//! checks. No I/O. FORMAT.md is the byte map; it must agree with these files:
//! this one (superblock, inodes, bitmap), `xattr.rs` (the xattr blob and an
//! inode's pointer to it), `roots.rs`, `records.rs` and `txlog.rs` (journal).

#![forbid(unsafe_code)]

mod records;
mod roots;
mod txlog;
mod xattr;
pub use records::*;
pub use roots::*;
pub use txlog::*;
pub use xattr::*;

use thiserror::Error;

pub const BLOCK_SIZE: u64 = 4096;
pub const BS: usize = BLOCK_SIZE as usize;
pub const SB_MAGIC: [u8; 8] = *b"DAXLNK\r\n";
pub const FORMAT_VERSION: u32 = 2;
/// Incompatible feature bits this code understands.
pub const INCOMPAT_SUPPORTED: u32 = 0;
pub const RO_COMPAT_SUPPORTED: u32 = 0;

pub const SB_SIZE: usize = 512;
pub const INODE_SIZE: usize = 256;
pub const INODES_PER_BLOCK: u64 = (BLOCK_SIZE as usize / INODE_SIZE) as u64;
pub const ROOT_INO: u64 = 1;
pub const MAX_NAME: usize = 255;
/// Largest file size: 2^46 bytes (64 TiB); larger offsets give EFBIG.
pub const MAX_FILE_SIZE: u64 = 1 << 46;
pub const MAX_LINKS: u32 = 65000;
/// Largest xattr value (as Linux XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Largest encoded xattr blob of one inode.
pub const XATTR_TOTAL_MAX: usize = 1 << 20;
/// Bytes of a bitmap block that hold bits; the crc follows.
pub const BITMAP_BYTES: usize = 4088;
pub const BITS_PER_BITMAP_BLOCK: u64 = (BITMAP_BYTES * 8) as u64;

pub const ROOTS_MAGIC: u32 = 0x5452_5844; // "DXRT"
pub const RECBLK_MAGIC: u32 = 0x4252_5844; // "DXRB"
pub const JHDR_MAGIC: u32 = 0x484a_5844; // "DXJH"
pub const TX_MAGIC: u32 = 0x5854_5844; // "DXTX"
pub const COMMIT_MAGIC: u32 = 0x4d43_5844; // "DXCM"
pub const XATTR_MAGIC: u32 = 0x5841_5844; // "DXAX"

pub const REC_HDR: usize = 64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{what}: bad magic")]
    BadMagic { what: &'static str },
    #[error("{what}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("{what}: unsupported format version {version}")]
    BadVersion { what: &'static str, version: u32 },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{what}: truncated ({have} bytes, need {need})")]
    Short {
        what: &'static str,
        have: usize,
        need: usize,
    },
}

fn invalid(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        what,
        detail: detail.into(),
    }
}

pub fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Little-endian field access over a byte slice, bounds checked by the callers'
/// length checks (every decode first checks the slice length).
pub(crate) struct Le;
impl Le {
    pub fn u16(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    pub fn u32(b: &[u8], o: usize) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[o..o + 4]);
        u32::from_le_bytes(a)
    }
    pub fn u64(b: &[u8], o: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    }
    pub fn i64(b: &[u8], o: usize) -> i64 {
        Le::u64(b, o) as i64
    }
    pub fn put16(b: &mut [u8], o: usize, v: u16) {
        b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put64(b: &mut [u8], o: usize, v: u64) {
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), FormatError> {
    if b.len() < n {
        Err(FormatError::Short {
            what,
            have: b.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

fn check_crc(what: &'static str, body: &[u8], stored: u32) -> Result<(), FormatError> {
    let computed = crc(body);
    if computed != stored {
        Err(FormatError::BadChecksum {
            what,
            stored,
            computed,
        })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Superblock
// ---------------------------------------------------------------------------

/// Geometry and identity; two copies at blocks 0 and 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub incompat: u32,
    pub compat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub label: String,
    pub total_blocks: u64,
    pub journal_start: u64,
    pub journal_blocks: u64,
    pub inode_start: u64,
    pub inode_count: u64,
    pub bitmap_start: u64,
    pub bitmap_blocks: u64,
    pub data_start: u64,
    pub roots_block: u64,
    pub generation: u64,
    pub clean: bool,
    pub mkfs_time: i64,
    pub mount_count: u64,
}

pub const LABEL_MAX: usize = 64;

impl Superblock {
    pub fn inode_blocks(&self) -> u64 {
        self.inode_count.div_ceil(INODES_PER_BLOCK)
    }
    pub fn data_blocks(&self) -> u64 {
        self.total_blocks - self.data_start
    }
    pub fn inode_offset(&self, ino: u64) -> u64 {
        self.inode_start * BLOCK_SIZE + (ino - 1) * INODE_SIZE as u64
    }

    pub fn encode(&self) -> [u8; SB_SIZE] {
        let mut b = [0u8; SB_SIZE];
        b[0..8].copy_from_slice(&SB_MAGIC);
        Le::put32(&mut b, 8, self.version);
        Le::put32(&mut b, 12, self.incompat);
        Le::put32(&mut b, 16, self.compat);
        Le::put32(&mut b, 20, self.ro_compat);
        b[24..40].copy_from_slice(&self.uuid);
        // Cut at a character boundary, so that decoding gives back exactly
        // the label encoded (a label decoded lossily from invalid bytes can
        // be longer than the field).
        let lb = self.label.as_bytes();
        let mut n = lb.len().min(LABEL_MAX);
        while !self.label.is_char_boundary(n) {
            n -= 1;
        }
        b[40..40 + n].copy_from_slice(&lb[..n]);
        Le::put32(&mut b, 104, BLOCK_SIZE as u32);
        Le::put64(&mut b, 112, self.total_blocks);
        Le::put64(&mut b, 120, self.journal_start);
        Le::put64(&mut b, 128, self.journal_blocks);
        Le::put64(&mut b, 136, self.inode_start);
        Le::put64(&mut b, 144, self.inode_count);
        Le::put64(&mut b, 152, self.bitmap_start);
        Le::put64(&mut b, 160, self.bitmap_blocks);
        Le::put64(&mut b, 168, self.data_start);
        Le::put64(&mut b, 176, self.roots_block);
        Le::put64(&mut b, 184, self.generation);
        Le::put32(&mut b, 192, self.clean as u32);
        Le::put64(&mut b, 200, self.mkfs_time as u64);
        Le::put64(&mut b, 208, self.mount_count);
        let c = crc(&b[..SB_SIZE - 4]);
        Le::put32(&mut b, SB_SIZE - 4, c);
        b
    }

    /// Decode and validate one superblock copy against the media size in bytes.
    pub fn decode(b: &[u8], media_len: u64) -> Result<Superblock, FormatError> {
        const W: &str = "superblock";
        need(W, b, SB_SIZE)?;
        if b[0..8] != SB_MAGIC {
            return Err(FormatError::BadMagic { what: W });
        }
        check_crc(W, &b[..SB_SIZE - 4], Le::u32(b, SB_SIZE - 4))?;
        let version = Le::u32(b, 8);
        if version != FORMAT_VERSION {
            return Err(FormatError::BadVersion { what: W, version });
        }
        let label_raw = &b[40..40 + LABEL_MAX];
        let ll = label_raw.iter().position(|&c| c == 0).unwrap_or(LABEL_MAX);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        let sb = Superblock {
            version,
            incompat: Le::u32(b, 12),
            compat: Le::u32(b, 16),
            ro_compat: Le::u32(b, 20),
            uuid,
            label: String::from_utf8_lossy(&label_raw[..ll]).into_owned(),
            total_blocks: Le::u64(b, 112),
            journal_start: Le::u64(b, 120),
            journal_blocks: Le::u64(b, 128),
            inode_start: Le::u64(b, 136),
            inode_count: Le::u64(b, 144),
            bitmap_start: Le::u64(b, 152),
            bitmap_blocks: Le::u64(b, 160),
            data_start: Le::u64(b, 168),
            roots_block: Le::u64(b, 176),
            generation: Le::u64(b, 184),
            clean: Le::u32(b, 192) == 1,
            mkfs_time: Le::i64(b, 200),
            mount_count: Le::u64(b, 208),
        };
        if Le::u32(b, 104) != BLOCK_SIZE as u32 {
            return Err(invalid(
                W,
                format!("block size {} is not 4096", Le::u32(b, 104)),
            ));
        }
        if sb.incompat & !INCOMPAT_SUPPORTED != 0 {
            return Err(invalid(
                W,
                format!("unknown incompatible features {:#x}", sb.incompat),
            ));
        }
        sb.validate_geometry(media_len)?;
        Ok(sb)
    }

    /// The format version of a superblock copy whose magic and crc are good
    /// (None otherwise): lets mount and fsck name an image of another version.
    pub fn peek_version(b: &[u8]) -> Option<u32> {
        if b.len() < SB_SIZE || b[0..8] != SB_MAGIC {
            return None;
        }
        (crc(&b[..SB_SIZE - 4]) == Le::u32(b, SB_SIZE - 4)).then(|| Le::u32(b, 8))
    }

    /// The next rewrite of the superblock: generation + 1, saturating (a
    /// copy found at 2^64 - 1, written by nobody but a hostile image, stays
    /// there; both copies are always written alike, so the choice between
    /// them does not suffer).
    pub fn next_generation(&mut self) {
        self.generation = self.generation.saturating_add(1);
    }

    /// Unknown read-only-compatible features: the filesystem may only be mounted read-only.
    pub fn needs_read_only(&self) -> bool {
        self.ro_compat & !RO_COMPAT_SUPPORTED != 0
    }

    pub fn validate_geometry(&self, media_len: u64) -> Result<(), FormatError> {
        const W: &str = "superblock geometry";
        let media_blocks = media_len / BLOCK_SIZE;
        if self.total_blocks > media_blocks {
            return Err(invalid(
                W,
                format!(
                    "filesystem has {} blocks but the media holds only {}",
                    self.total_blocks, media_blocks
                ),
            ));
        }
        // Regions must be in order and non-overlapping: sb(0,1) roots journal inodes bitmap data.
        let ok = self.roots_block == 2
            && self.journal_start == 3
            && self.journal_blocks >= 16
            && self.inode_start == self.journal_start.saturating_add(self.journal_blocks)
            && self.inode_count >= 16
            && self.inode_count < (1 << 40)
            && self.bitmap_start == self.inode_start.saturating_add(self.inode_blocks())
            && self.data_start == self.bitmap_start.saturating_add(self.bitmap_blocks)
            && self.data_start < self.total_blocks
            && self.bitmap_blocks.saturating_mul(BITS_PER_BITMAP_BLOCK)
                >= self.total_blocks - self.data_start;
        if !ok {
            return Err(invalid(W, "regions overlap or lie outside the device"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Roots block: heads of the record-block chains
// ---------------------------------------------------------------------------

/// Kinds of record blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecKind {
    Extent = 1,
    Dirent = 2,
    Orphan = 3,
    Refcount = 4,
}

/// Number of record kinds (chains in the roots block).
pub const NKINDS: usize = 4;
pub const REC_KINDS: [RecKind; NKINDS] = [
    RecKind::Extent,
    RecKind::Dirent,
    RecKind::Orphan,
    RecKind::Refcount,
];

impl RecKind {
    pub fn from_u16(v: u16) -> Option<RecKind> {
        match v {
            1 => Some(RecKind::Extent),
            2 => Some(RecKind::Dirent),
            3 => Some(RecKind::Orphan),
            4 => Some(RecKind::Refcount),
            _ => None,
        }
    }
    pub fn slot_size(self) -> usize {
        match self {
            RecKind::Extent => EXTENT_SIZE,
            RecKind::Dirent => DIRENT_SIZE,
            RecKind::Orphan => ORPHAN_SIZE,
            RecKind::Refcount => REFCOUNT_SIZE,
        }
    }
    pub fn slots_per_block(self) -> usize {
        (BS - REC_HDR) / self.slot_size()
    }
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

// ---------------------------------------------------------------------------
// Inodes
// ---------------------------------------------------------------------------

/// Seconds then nanoseconds: the derived order is time order. Packed to 12
/// bytes (no tail padding): an inode in DRAM holds four.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(4))]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Timespec {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InodeRec {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    pub flags: u32,
    pub generation: u32,
    pub rdev: u32,
    /// Xattr blob: first block, block count, byte length, crc of the blob.
    pub xattr_block: u64,
    pub xattr_blocks: u32,
    pub xattr_len: u32,
    pub xattr_crc: u32,
}

impl InodeRec {
    pub fn is_free(&self) -> bool {
        self.mode == 0
    }

    pub fn encode(&self) -> [u8; INODE_SIZE] {
        let mut b = [0u8; INODE_SIZE];
        if self.is_free() {
            // A free inode is all zeros except its generation (kept for reuse).
            Le::put32(&mut b, 76, self.generation);
            let c = crc(&b[..INODE_SIZE - 4]);
            Le::put32(&mut b, INODE_SIZE - 4, c);
            return b;
        }
        Le::put32(&mut b, 0, self.mode);
        Le::put32(&mut b, 4, self.uid);
        Le::put32(&mut b, 8, self.gid);
        Le::put32(&mut b, 12, self.nlink);
        Le::put64(&mut b, 16, self.size);
        Le::put64(&mut b, 24, self.atime.sec as u64);
        Le::put32(&mut b, 32, self.atime.nsec);
        Le::put32(&mut b, 36, self.mtime.nsec);
        Le::put64(&mut b, 40, self.mtime.sec as u64);
        Le::put64(&mut b, 48, self.ctime.sec as u64);
        Le::put32(&mut b, 56, self.ctime.nsec);
        Le::put32(&mut b, 60, self.flags);
        Le::put64(&mut b, 64, self.crtime.sec as u64);
        Le::put32(&mut b, 72, self.crtime.nsec);
        Le::put32(&mut b, 76, self.generation);
        Le::put32(&mut b, 80, self.rdev);
        Le::put32(&mut b, 84, self.xattr_len);
        Le::put64(&mut b, 88, self.xattr_block);
        Le::put32(&mut b, 96, self.xattr_blocks);
        Le::put32(&mut b, 100, self.xattr_crc);
        let c = crc(&b[..INODE_SIZE - 4]);
        Le::put32(&mut b, INODE_SIZE - 4, c);
        b
    }

    /// Decode an inode slot. An all-zero slot (never used) is a free inode.
    pub fn decode(b: &[u8]) -> Result<InodeRec, FormatError> {
        const W: &str = "inode";
        need(W, b, INODE_SIZE)?;
        if b[..INODE_SIZE].iter().all(|&x| x == 0) {
            return Ok(InodeRec::default());
        }
        check_crc(W, &b[..INODE_SIZE - 4], Le::u32(b, INODE_SIZE - 4))?;
        let nsec = |o| {
            let v = Le::u32(b, o);
            if v >= 1_000_000_000 {
                Err(invalid(W, format!("nanoseconds {v} out of range")))
            } else {
                Ok(v)
            }
        };
        let r = InodeRec {
            mode: Le::u32(b, 0),
            uid: Le::u32(b, 4),
            gid: Le::u32(b, 8),
            nlink: Le::u32(b, 12),
            size: Le::u64(b, 16),
            atime: Timespec {
                sec: Le::i64(b, 24),
                nsec: nsec(32)?,
            },
            mtime: Timespec {
                sec: Le::i64(b, 40),
                nsec: nsec(36)?,
            },
            ctime: Timespec {
                sec: Le::i64(b, 48),
                nsec: nsec(56)?,
            },
            flags: Le::u32(b, 60),
            crtime: Timespec {
                sec: Le::i64(b, 64),
                nsec: nsec(72)?,
            },
            generation: Le::u32(b, 76),
            rdev: Le::u32(b, 80),
            xattr_len: Le::u32(b, 84),
            xattr_block: Le::u64(b, 88),
            xattr_blocks: Le::u32(b, 96),
            xattr_crc: Le::u32(b, 100),
        };
        if r.mode != 0 {
            let ft = r.mode & libc::S_IFMT;
            let valid = [
                libc::S_IFREG,
                libc::S_IFDIR,
                libc::S_IFLNK,
                libc::S_IFCHR,
                libc::S_IFBLK,
                libc::S_IFIFO,
                libc::S_IFSOCK,
            ];
            if !valid.contains(&ft) {
                return Err(invalid(W, format!("bad file type in mode {:#o}", r.mode)));
            }
            if r.size > MAX_FILE_SIZE {
                return Err(invalid(W, format!("size {} beyond the maximum", r.size)));
            }
        }
        Ok(r)
    }
}

// ---------------------------------------------------------------------------
// Bitmap blocks
// ---------------------------------------------------------------------------

pub fn bitmap_crc(block: &[u8]) -> u32 {
    crc(&block[..BITMAP_BYTES])
}

pub fn bitmap_check(block: &[u8]) -> Result<(), FormatError> {
    need("bitmap block", block, BS)?;
    check_crc(
        "bitmap block",
        &block[..BITMAP_BYTES],
        Le::u32(block, BITMAP_BYTES),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(super) fn sample_sb() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            incompat: 0,
            compat: 0,
            ro_compat: 0,
            uuid: [7; 16],
            label: "lbl".into(),
            total_blocks: 10000,
            journal_start: 3,
            journal_blocks: 64,
            inode_start: 67,
            inode_count: 1024,
            bitmap_start: 67 + 64,
            bitmap_blocks: 1,
            data_start: 67 + 65,
            roots_block: 2,
            generation: 5,
            clean: true,
            mkfs_time: 1,
            mount_count: 0,
        }
    }

    #[test]
    fn superblock_roundtrip_and_corruption() {
        let sb = sample_sb();
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b, 10000 * 4096).unwrap(), sb);
        assert!(Superblock::decode(&b, 100 * 4096).is_err());
        b[130] ^= 1;
        assert!(matches!(
            Superblock::decode(&b, 10000 * 4096),
            Err(FormatError::BadChecksum { .. })
        ));
    }

    #[test]
    fn an_old_version_is_named_not_decoded() {
        let sb = Superblock {
            version: 1,
            ..sample_sb()
        };
        let b = sb.encode();
        assert!(matches!(
            Superblock::decode(&b, 10000 * 4096),
            Err(FormatError::BadVersion { version: 1, .. })
        ));
        assert_eq!(Superblock::peek_version(&b), Some(1));
        assert_eq!(
            Superblock::peek_version(&sample_sb().encode()),
            Some(FORMAT_VERSION)
        );
    }

    #[test]
    fn roots_marks_roundtrip_and_bounds() {
        let sb = sample_sb();
        let r = Roots::new(&sb);
        assert_eq!((r.inode_init, r.bitmap_init), (1024, 1));
        assert_eq!(Roots::decode(&r.encode()).unwrap(), r);
        assert!(r.check_marks(&sb).is_ok());
        for (i, b) in [(0, 1), (1025, 1), (1024, 0), (1024, 2)] {
            let bad = Roots {
                inode_init: i,
                bitmap_init: b,
                ..r.clone()
            };
            assert!(bad.check_marks(&sb).is_err(), "{i} {b}");
        }
        assert_eq!(Roots::next_inode_init(1024, 5000), 2048);
        assert_eq!(Roots::next_inode_init(4100, 5000), 5000);
    }

    proptest! {
        #[test]
        fn inode_roundtrip(mode in prop::sample::select(vec![0o100644u32, 0o40755, 0o120777]),
                           uid: u32, gid: u32, nlink: u32, size in 0..MAX_FILE_SIZE,
                           s: i64, ns in 0u32..1_000_000_000, gen: u32) {
            let r = InodeRec { mode, uid, gid, nlink, size,
                atime: Timespec{sec:s,nsec:ns}, mtime: Timespec{sec:s/2,nsec:ns},
                ctime: Timespec{sec:-s/3,nsec:ns}, generation: gen, ..Default::default() };
            prop_assert_eq!(InodeRec::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Superblock::decode(&bytes, 1 << 30);
            let _ = InodeRec::decode(&bytes);
            let _ = ExtentRec::decode(&bytes);
            let _ = DirentRec::decode(&bytes);
            let _ = OrphanRec::decode(&bytes);
            let _ = RefcountRec::decode(&bytes);
            let _ = RecBlockHdr::decode(&bytes);
            let _ = JournalHdr::decode(&bytes);
            let _ = Roots::decode(&bytes);
            let _ = decode_xattrs(&bytes);
            let _ = decode_tx(&bytes, 1);
        }

        #[test]
        fn intent_roundtrip(k in 0usize..3, ino in 1u64.., from in 0u64..1 << 40, n in 1u64..1 << 40) {
            let op = [RangeOp::Punch, RangeOp::Zero, RangeOp::Fill][k];
            let r = OrphanRec::Range { op, ino, from, end: from + n };
            let mut b = r.encode();
            prop_assert_eq!(OrphanRec::decode(&b).unwrap(), Some(r));
            b[5] ^= 1;
            prop_assert!(OrphanRec::decode(&b).is_err());
        }

        #[test]
        fn remap_intent_roundtrip(src in 1u64..1 << 40, dst in 1u64..1 << 40, sb in 0u64..1 << 33,
                                  db in 0u64..1 << 33, blocks in 1u64..1 << 33) {
            let r = OrphanRec::Remap { src, dst, sb, db, blocks };
            prop_assert_eq!(OrphanRec::decode(&r.encode()).unwrap(), Some(r));
        }

        #[test]
        fn dirent_roundtrip(name in "[a-zA-Z0-9._-]{1,255}", parent in 1u64.., child in 1u64.., ft: u8) {
            prop_assume!(name != "." && name != "..");
            let d = DirentRec { parent, child, ftype: ft, name: name.into_bytes() };
            prop_assert_eq!(DirentRec::decode(&d.encode()).unwrap(), Some(d));
        }

        #[test]
        fn tx_roundtrip(entries in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..100)), 0..20),
                        seq: u64, cut in 0usize..4000) {
            let enc = encode_tx(seq, entries.iter().map(|(o, d)| (*o, d.as_slice())));
            match decode_tx(&enc, seq) {
                TxState::Committed { entries: e, .. } => {
                    prop_assert_eq!(e.len(), entries.len());
                    for (a, b) in e.iter().zip(entries.iter()) {
                        prop_assert_eq!(a.off, b.0);
                        prop_assert_eq!(&a.data, &b.1);
                    }
                }
                other => prop_assert!(false, "{:?}", other),
            }
            // Any truncation is torn, never committed.
            if cut < enc.len() {
                let st = decode_tx(&enc[..cut], seq);
                let committed = matches!(st, TxState::Committed { .. });
                prop_assert!(!committed);
            }
        }
    }
}
