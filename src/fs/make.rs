//! Making an empty filesystem on a media: the geometry and the initial
//! on-media structures (superblocks, journal, inode table, bitmap, roots,
//! the root directory). mkfs, the crash harness, fsck's geometry fallback
//! and the core's unit tests share it; creating and checking the image
//! file around it is the mkfs tool's (`tools/mkfs.rs`).

use std::io::Read;

use crate::error::{FsError, FsResult};
use crate::format::{
    InodeRec, Roots, Superblock, Timespec, BITS_PER_BITMAP_BLOCK, BLOCK_SIZE, FORMAT_VERSION,
    INODES_PER_BLOCK, LABEL_MAX, ROOT_INO,
};
use crate::fs::{read_superblock, write_superblocks};
use crate::journal::{Journal, JournalGeometry};
use crate::media::Media;
use crate::space::Space;
use crate::util::progress::Progress;

#[derive(Clone, Debug, Default)]
pub struct MkfsOptions {
    pub label: String,
    /// Number of inodes; default one per 16 KiB of space (at least 1024).
    pub inodes: Option<u64>,
    /// Journal size in blocks; default 1/64 of the device, 64 to 16384 blocks.
    pub journal_blocks: Option<u64>,
    /// Owner of the root directory.
    pub root_uid: u32,
    pub root_gid: u32,
    /// Leave an image file on a disk filesystem sparse instead of allocating
    /// all of it (see [`mkfs_path`]).
    pub sparse: bool,
}

/// Smallest filesystem mkfs makes.
pub const MIN_BLOCKS: u64 = 512;

pub fn geometry(total_blocks: u64, o: &MkfsOptions) -> FsResult<Superblock> {
    if total_blocks < MIN_BLOCKS {
        return Err(FsError::Invalid);
    }
    let journal_blocks = o
        .journal_blocks
        .unwrap_or((total_blocks / 64).clamp(64, 16384))
        .max(16);
    let inode_count = o
        .inodes
        .unwrap_or((total_blocks / 4).max(1024))
        .div_ceil(INODES_PER_BLOCK)
        * INODES_PER_BLOCK;
    let journal_start = 3;
    let inode_start = journal_start + journal_blocks;
    let inode_blocks = inode_count / INODES_PER_BLOCK;
    let bitmap_start = inode_start + inode_blocks;
    let bitmap_blocks = total_blocks.div_ceil(BITS_PER_BITMAP_BLOCK);
    let data_start = bitmap_start + bitmap_blocks;
    if data_start + 64 > total_blocks {
        return Err(FsError::NoSpace);
    }
    let mut uuid = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut uuid);
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut label = o.label.clone();
    while label.len() > LABEL_MAX {
        label.pop();
    }
    let sb = Superblock {
        version: FORMAT_VERSION,
        incompat: 0,
        compat: 0,
        ro_compat: 0,
        uuid,
        label,
        total_blocks,
        journal_start,
        journal_blocks,
        inode_start,
        inode_count,
        bitmap_start,
        bitmap_blocks,
        data_start,
        roots_block: 2,
        generation: 1,
        clean: true,
        mkfs_time: Timespec::now().sec,
        mount_count: 0,
    };
    sb.validate_geometry(total_blocks * BLOCK_SIZE)
        .map_err(|_| FsError::Invalid)?;
    Ok(sb)
}

/// Does the media already hold a daxlink filesystem (either superblock copy)?
pub fn has_filesystem(media: &Media) -> bool {
    read_superblock(media).is_ok()
}

/// Write a new, empty filesystem onto `media`.
pub fn mkfs(media: &Media, o: &MkfsOptions) -> FsResult<Superblock> {
    let sb = geometry(media.len() / BLOCK_SIZE, o)?;
    let roots = Roots::new(&sb);
    let p = Progress::bytes(
        "mkfs",
        (sb.journal_blocks + roots.inode_init.div_ceil(INODES_PER_BLOCK) + roots.bitmap_init)
            * BLOCK_SIZE,
    );
    p.message("journal");
    // Invalidate old superblocks first so a half-made image is never mounted.
    media.fill(0, 2 * BLOCK_SIZE, 0)?;
    media.persist(0, 2 * BLOCK_SIZE)?;
    // Roots, journal, inode table, bitmap: only what the roots block's marks
    // say is initialized (the first inode chunk and the first bitmap block),
    // so mkfs writes the same few hundred KiB whatever the device's size.
    media.fill(2 * BLOCK_SIZE, BLOCK_SIZE, 0)?;
    media.write_at(2 * BLOCK_SIZE, &roots.encode())?;
    media.persist(2 * BLOCK_SIZE, BLOCK_SIZE)?;
    Journal::format(
        media,
        JournalGeometry {
            start_block: sb.journal_start,
            blocks: sb.journal_blocks,
            media_len: media.len(),
        },
    )?;
    p.inc(sb.journal_blocks * BLOCK_SIZE);
    p.message("inode table");
    let itab = sb.inode_start * BLOCK_SIZE;
    let ilen = roots.inode_init.div_ceil(INODES_PER_BLOCK) * BLOCK_SIZE;
    zero_with_progress(media, itab, ilen, &p)?;
    let t = Timespec::now();
    let root = InodeRec {
        mode: libc::S_IFDIR | 0o755,
        uid: o.root_uid,
        gid: o.root_gid,
        nlink: 2,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        ..Default::default()
    };
    media.write_at(sb.inode_offset(ROOT_INO), &root.encode())?;
    media.persist(itab, ilen)?;
    p.message("bitmap");
    Space::format(media, &sb, roots.bitmap_init)?;
    p.inc(roots.bitmap_init * BLOCK_SIZE);
    write_superblocks(media, &sb)?;
    Ok(sb)
}

/// Zero `len` bytes at `off` in chunks, advancing `p` (the inode table of a
/// large image is most of what mkfs writes).
fn zero_with_progress(media: &Media, off: u64, len: u64, p: &Progress) -> FsResult<()> {
    const CHUNK: u64 = 64 << 20;
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        media.fill(off + done, n, 0)?;
        done += n;
        p.inc(n);
    }
    Ok(())
}
