//! Other filesystems' signatures, so that mkfs does not format over one
//! without `--force` (as `mkfs.xfs` refuses "appears to contain an existing
//! filesystem" and `mke2fs` asks). The magic numbers and their offsets are
//! those each filesystem's own tools and libblkid look for.

use crate::media::{Media, MediaError};

/// (name, byte offset, magic bytes). Swap's offset is the end of its first
/// page, 4096 on every architecture daxlink runs on.
const SIGNATURES: &[(&str, u64, &[u8])] = &[
    // struct ext2_super_block at 1024, s_magic (0xEF53, little-endian) at 56.
    ("ext2/ext3/ext4", 1024 + 56, &[0x53, 0xef]),
    // struct xfs_sb at 0, sb_magicnum "XFSB".
    ("xfs", 0, b"XFSB"),
    // struct btrfs_super_block at 64 KiB, magic "_BHRfS_M" at 64.
    ("btrfs", 65536 + 64, b"_BHRfS_M"),
    // union swap_header: the last 10 bytes of the first page.
    ("swap", 4096 - 10, b"SWAPSPACE2"),
    ("swap", 4096 - 10, b"SWAP-SPACE"),
    // struct f2fs_super_block at 1024, magic 0xF2F52010.
    ("f2fs", 1024, &[0x10, 0x20, 0xf5, 0xf2]),
    // LUKS header at 0.
    ("crypto_LUKS", 0, b"LUKS\xba\xbe"),
    // squashfs superblock at 0, "hsqs".
    ("squashfs", 0, b"hsqs"),
    // ISO 9660 primary volume descriptor at 32 KiB + 1.
    ("iso9660", 32768 + 1, b"CD001"),
];

/// The name of a foreign filesystem (or swap) whose signature the media
/// carries, if any.
pub fn foreign(media: &Media) -> Result<Option<&'static str>, MediaError> {
    for &(name, off, magic) in SIGNATURES {
        if off + magic.len() as u64 > media.len() {
            continue;
        }
        if media.read_vec(off, magic.len())? == magic {
            // ext2's 2-byte magic alone is weak: also ask for a sane
            // s_log_block_size (0..=6, blocks of 1 to 64 KiB) at 1024 + 24.
            if name.starts_with("ext2") {
                let lb = media.read_u64(1024 + 24)? as u32;
                if lb > 6 {
                    continue;
                }
            }
            return Ok(Some(name));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signature_is_found_and_zeroes_are_not() {
        let m = Media::anonymous(1 << 20).unwrap();
        assert_eq!(foreign(&m).unwrap(), None);
        for &(name, off, magic) in SIGNATURES {
            let m = Media::anonymous(1 << 20).unwrap();
            m.write_at(off, magic).unwrap();
            assert_eq!(foreign(&m).unwrap(), Some(name), "{name}");
        }
    }
}
