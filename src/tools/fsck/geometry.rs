//! Recovering the geometry when neither superblock copy is usable.
//!
//! mkfs gives the filesystem the whole media and derives every region from
//! its size (`mkfs::geometry`), and the regions follow each other with no gap
//! (FORMAT.md, Region layout). So the geometry is found again from the media
//! size plus what the regions themselves hold, as e2fsck falls back on backup
//! superblocks:
//!
//! 1. mkfs's default geometry for the media size, accepted when its bitmap
//!    blocks all carry a valid checksum or its inode table starts with the
//!    root directory;
//! 2. otherwise (the journal or inode count was chosen at mkfs time) a scan:
//!    the first block past the smallest journal that starts with a valid root
//!    directory inode is the inode table, and the first run of blocks after it
//!    that are all valid bitmap blocks, every block in between being inode
//!    slots that decode, is the bitmap.
//!
//! Either way the roots block (block 2) or the journal header (block 3) must
//! be there, as evidence that this is a daxlink filesystem at all. An image
//! shorter than what a damaged copy says the filesystem holds is reported as
//! truncated instead: recovering a smaller filesystem would drop whatever
//! lay past the cut.

use super::BS;
use crate::format::{
    self, InodeRec, JournalHdr, Roots, Superblock, BITS_PER_BITMAP_BLOCK, INODES_PER_BLOCK,
    INODE_SIZE, SB_MAGIC, SB_SIZE,
};
use crate::fs::make::{geometry, MkfsOptions, MIN_BLOCKS};
use crate::media::Media;

/// Smallest journal the format allows (FORMAT.md).
const MIN_JOURNAL: u64 = 16;

fn block(media: &Media, b: u64) -> Option<Vec<u8>> {
    media.read_vec(b.checked_mul(BS)?, BS as usize).ok()
}

fn bitmap_ok(media: &Media, b: u64) -> bool {
    block(media, b).is_some_and(|x| format::bitmap_check(&x).is_ok())
}

/// Whether block `b` starts with the root directory's inode.
fn root_at(media: &Media, b: u64) -> bool {
    b.checked_mul(BS)
        .and_then(|o| media.read_vec(o, INODE_SIZE).ok())
        .is_some_and(|x| {
            InodeRec::decode(&x)
                .is_ok_and(|r| !r.is_free() && r.mode & libc::S_IFMT == libc::S_IFDIR)
        })
}

/// Whether every slot of block `b` decodes as an inode (in use or free).
fn inode_block(media: &Media, b: u64) -> bool {
    block(media, b).is_some_and(|x| {
        x.chunks_exact(INODE_SIZE)
            .all(|s| s.iter().all(|&c| c == 0) || InodeRec::decode(s).is_ok())
    })
}

/// What a damaged copy still says: a copy with a good checksum whose only
/// fault is claiming more blocks than the media holds (a truncated image).
fn truncated(media: &Media) -> Option<(usize, u64)> {
    (0..2).find_map(|i| {
        let b = media.read_vec(i as u64 * BS, SB_SIZE).ok()?;
        let sb = Superblock::decode(&b, u64::MAX).ok()?;
        (sb.total_blocks > media.len() / BS).then_some((i, sb.total_blocks))
    })
}

/// Identity kept from a copy whose magic survived (uuid, label, mkfs time).
fn identity(media: &Media, sb: &mut Superblock) {
    for i in 0..2u64 {
        let Ok(b) = media.read_vec(i * BS, SB_SIZE) else {
            continue;
        };
        if b[..8] == SB_MAGIC {
            sb.uuid.copy_from_slice(&b[24..40]);
            let raw = &b[40..40 + format::LABEL_MAX];
            let n = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            sb.label = String::from_utf8_lossy(&raw[..n]).into_owned();
            sb.mkfs_time = format::Le::i64(&b, 200);
            return;
        }
    }
}

/// The candidate made of a journal of `journal` blocks and `inode_blocks`
/// inode blocks on `total` blocks, if the format accepts it.
fn candidate(total: u64, journal: u64, inode_blocks: u64) -> Option<Superblock> {
    let mut sb = geometry(total, &MkfsOptions::default()).ok()?;
    sb.journal_blocks = journal;
    sb.inode_start = sb.journal_start + journal;
    sb.inode_count = inode_blocks * INODES_PER_BLOCK;
    sb.bitmap_start = sb.inode_start + inode_blocks;
    sb.data_start = sb.bitmap_start + sb.bitmap_blocks;
    sb.validate_geometry(total * BS).ok()?;
    Some(sb)
}

fn bitmaps_ok(media: &Media, sb: &Superblock) -> bool {
    (sb.bitmap_start..sb.bitmap_start + sb.bitmap_blocks).all(|b| bitmap_ok(media, b))
}

/// Find the geometry of the filesystem on `media` when both superblock copies
/// are unusable: Ok(a superblock to write, how it was found) or Err(why not).
pub(super) fn recover(media: &Media) -> Result<(Superblock, String), String> {
    let total = media.len() / BS;
    if let Some((i, claimed)) = truncated(media) {
        return Err(format!(
            "superblock copy {} says the filesystem has {claimed} blocks, but the image holds only {total}: \
             the image was truncated (or that field is damaged); restore its full size ({} bytes) and run fsck again",
            if i == 0 { "A" } else { "B" },
            claimed.saturating_mul(BS)
        ));
    }
    if total < MIN_BLOCKS {
        return Err(format!(
            "the image holds {total} blocks, fewer than the smallest filesystem ({MIN_BLOCKS})"
        ));
    }
    let roots = block(media, 2).is_some_and(|b| Roots::decode(&b).is_ok());
    let journal = block(media, 3).is_some_and(|b| JournalHdr::decode(&b).is_ok());
    if !roots && !journal {
        return Err(
            "no roots block at block 2 and no journal header at block 3 either: not a daxlink filesystem, or too damaged to find its geometry"
                .into(),
        );
    }
    let mut sb = geometry(total, &MkfsOptions::default()).map_err(|e| e.to_string())?;
    let how = if bitmaps_ok(media, &sb) || root_at(media, sb.inode_start) {
        "mkfs's geometry for the media size (bitmap or root inode found in place)".to_string()
    } else {
        sb = scan(media, total).ok_or_else(|| {
            format!(
                "mkfs's geometry for {total} blocks does not match the image and no inode table and bitmap were found: cannot recover the geometry"
            )
        })?;
        format!(
            "a scan (inode table at block {}, bitmap at block {})",
            sb.inode_start, sb.bitmap_start
        )
    };
    identity(media, &mut sb);
    sb.generation = 1;
    sb.clean = false;
    sb.mount_count = 0;
    Ok((
        sb.clone(),
        format!(
            "geometry recovered from {how}: {} blocks, journal {}, {} inodes, data from block {}",
            sb.total_blocks, sb.journal_blocks, sb.inode_count, sb.data_start
        ),
    ))
}

/// The scan of step 2 (module comment).
fn scan(media: &Media, total: u64) -> Option<Superblock> {
    let bitmap_blocks = total.div_ceil(BITS_PER_BITMAP_BLOCK);
    let first = 3 + MIN_JOURNAL;
    for s in first..total {
        if !root_at(media, s) {
            continue;
        }
        // Inode blocks until the bitmap.
        let mut b = s + 1;
        while b < total && !bitmap_ok(media, b) {
            if !inode_block(media, b) {
                break;
            }
            b += 1;
        }
        if b >= total || !bitmap_ok(media, b) {
            continue;
        }
        if let Some(sb) = candidate(total, s - 3, b - s) {
            if bitmaps_ok(media, &sb) && sb.bitmap_blocks == bitmap_blocks {
                return Some(sb);
            }
        }
    }
    None
}
