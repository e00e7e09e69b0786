//! Whole-filesystem administration the kernel passes through: FITRIM
//! (fstrim) and the volume label (FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL),
//! with ext4's rules.

use super::{read_superblock, write_superblocks, Fs, BS};
use crate::error::{FsError, FsResult};
use crate::format::LABEL_MAX;

/// FSLABEL_MAX of <linux/fs.h>: the label buffer of the ioctls, NUL included.
pub const FSLABEL_MAX: usize = 256;

/// Blocks of the bitmap FITRIM reads under one hold of the meta lock
/// (128 KiB of bitmap, 4 GiB of data).
const TRIM_WINDOW: u64 = 1 << 20;

impl Fs {
    /// FITRIM over the byte range `start..start+len` of the device: the free
    /// runs of at least `minlen` bytes in it, as ext4_trim_fs walks them.
    /// Returns the bytes of those runs. daxlink discards nothing: pmem has
    /// no discard, and an image file keeps its blocks allocated (mkfs
    /// allocates every block of an image on a disk so that no store lands
    /// in a hole); so "trimmed" is the free space the call considered, as
    /// README ("Linux interfaces") says. ext4's errors: EINVAL for a range
    /// that starts past the end, is shorter than a block, or a minlen
    /// larger than the data area; EROFS when read-only.
    pub fn trim(&self, start: u64, len: u64, minlen: u64) -> FsResult<u64> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let total = self.sb.total_blocks;
        let first = start / BS;
        let (ds, nblocks) = {
            let m = self.meta.lock();
            (m.space.data_start(), m.space.data_blocks())
        };
        if first >= total || len < BS || minlen > nblocks.saturating_mul(BS) {
            return Err(FsError::Invalid);
        }
        let end = first.saturating_add(len / BS).min(total).min(ds + nblocks);
        let min_blocks = minlen.div_ceil(BS).max(1);
        let mut trimmed = 0u64;
        // The bitmap a window at a time, the meta lock taken per window, so
        // that a trim of a large filesystem never holds every transaction
        // for the whole walk (ext4 trims a group at a time). A free run
        // that reaches a window's end is carried into the next.
        let mut carry: Option<(u64, u64)> = None;
        let mut w = first.max(ds);
        while w < end {
            if self.media.is_shut_down() {
                return Err(FsError::Io("the filesystem was shut down".into()));
            }
            let we = w.saturating_add(TRIM_WINDOW).min(end);
            let runs = self.meta.lock().space.free_runs_in(w, we);
            for (s, e) in runs {
                match carry {
                    Some((cs, ce)) if ce == s => carry = Some((cs, e)),
                    Some((cs, ce)) => {
                        if ce - cs >= min_blocks {
                            trimmed += ce - cs;
                        }
                        carry = Some((s, e));
                    }
                    None => carry = Some((s, e)),
                }
            }
            w = we;
        }
        if let Some((cs, ce)) = carry {
            if ce - cs >= min_blocks {
                trimmed += ce - cs;
            }
        }
        Ok(trimmed * BS)
    }

    /// The volume label (what mkfs -L set), as FS_IOC_GETFSLABEL reads it.
    pub fn label(&self) -> FsResult<String> {
        let _m = self.meta.lock();
        Ok(read_superblock(&self.media)?.0.label)
    }

    /// FS_IOC_SETFSLABEL: a new label in both superblock copies. As ext4:
    /// EINVAL for a label that fills the whole buffer without a NUL or is
    /// longer than the superblock's field (64 bytes here, FORMAT.md; 16 on
    /// ext4); EROFS when read-only. The caller's privilege is checked at
    /// the FUSE edge.
    pub fn set_label(&self, raw: &[u8]) -> FsResult<()> {
        let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if n >= FSLABEL_MAX || n > LABEL_MAX {
            return Err(FsError::Invalid);
        }
        let label = std::str::from_utf8(&raw[..n]).map_err(|_| FsError::Invalid)?;
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let _ns = self.ns.write();
        let _m = self.meta.lock();
        if self.media.is_shut_down() {
            return Err(FsError::Io("the filesystem was shut down".into()));
        }
        let (mut sb, _) = read_superblock(&self.media)?;
        sb.label = label.to_string();
        sb.next_generation();
        write_superblocks(&self.media, &sb)
    }
}
