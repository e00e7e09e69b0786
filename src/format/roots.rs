//! The roots block (block 2): heads of the record chains and, in v2, the
//! initialization marks of the inode table and the bitmap.

use super::{check_crc, crc, invalid, need, FormatError, Le, Superblock, NKINDS};
use super::{FORMAT_VERSION, ROOTS_MAGIC};

/// Inode slots the inode table is initialized (zeroed) by at a time: mkfs
/// initializes the first chunk, allocation the next ones as they are needed.
pub const INODE_CHUNK: u64 = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roots {
    /// Head block of each record chain (0 = empty), indexed by RecKind::index().
    pub heads: [u64; NKINDS],
    /// Inode slots `1 ..= inode_init` are initialized; later ones are never
    /// read (they are free, whatever the media holds).
    pub inode_init: u64,
    /// Bitmap blocks `0 .. bitmap_init` are initialized; the data blocks the
    /// later ones describe are free, whatever the media holds.
    pub bitmap_init: u64,
}

pub const ROOTS_SIZE: usize = 64;

impl Roots {
    /// The roots of a new filesystem: empty chains, the first inode chunk and
    /// the first bitmap block initialized.
    pub fn new(sb: &Superblock) -> Roots {
        Roots {
            heads: [0; NKINDS],
            inode_init: INODE_CHUNK.min(sb.inode_count),
            bitmap_init: 1,
        }
    }

    /// The next inode-table mark after `init`: one chunk more, at most the geometry.
    pub fn next_inode_init(init: u64, inode_count: u64) -> u64 {
        ((init / INODE_CHUNK + 1) * INODE_CHUNK).min(inode_count)
    }

    /// Do the initialization marks fit the geometry?
    pub fn check_marks(&self, sb: &Superblock) -> Result<(), FormatError> {
        const W: &str = "roots block";
        if self.inode_init == 0 || self.inode_init > sb.inode_count {
            return Err(invalid(
                W,
                format!(
                    "inode-table mark {} is outside 1..={} (the inode count)",
                    self.inode_init, sb.inode_count
                ),
            ));
        }
        if self.bitmap_init == 0 || self.bitmap_init > sb.bitmap_blocks {
            return Err(invalid(
                W,
                format!(
                    "bitmap mark {} is outside 1..={} (the bitmap blocks)",
                    self.bitmap_init, sb.bitmap_blocks
                ),
            ));
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; ROOTS_SIZE] {
        let mut b = [0u8; ROOTS_SIZE];
        Le::put32(&mut b, 0, ROOTS_MAGIC);
        Le::put32(&mut b, 4, FORMAT_VERSION);
        for (i, h) in self.heads.iter().enumerate() {
            Le::put64(&mut b, 8 + 8 * i, *h);
        }
        Le::put64(&mut b, 40, self.inode_init);
        Le::put64(&mut b, 48, self.bitmap_init);
        let c = crc(&b[..ROOTS_SIZE - 4]);
        Le::put32(&mut b, ROOTS_SIZE - 4, c);
        b
    }
    pub fn decode(b: &[u8]) -> Result<Roots, FormatError> {
        const W: &str = "roots block";
        need(W, b, ROOTS_SIZE)?;
        if Le::u32(b, 0) != ROOTS_MAGIC {
            return Err(FormatError::BadMagic { what: W });
        }
        check_crc(W, &b[..ROOTS_SIZE - 4], Le::u32(b, ROOTS_SIZE - 4))?;
        if Le::u32(b, 4) != FORMAT_VERSION {
            return Err(FormatError::BadVersion {
                what: W,
                version: Le::u32(b, 4),
            });
        }
        let mut heads = [0u64; NKINDS];
        for (i, h) in heads.iter_mut().enumerate() {
            *h = Le::u64(b, 8 + 8 * i);
        }
        Ok(Roots {
            heads,
            inode_init: Le::u64(b, 40),
            bitmap_init: Le::u64(b, 48),
        })
    }
}
