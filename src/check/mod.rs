//! The rules mount and fsck both apply to what they read, each in one place
//! (as XFS's libxfs serves both the kernel and xfs_repair): mount refuses an
//! image that breaks one, fsck reports it (with the same words) and repairs.
//!
//! Layer: between `format` and the core. Nothing here does I/O: every rule
//! is a pure function of decoded records (or, for ACLs, of an xattr value),
//! the superblock and what the caller has built so far; the callers keep
//! their own reactions.
//!
//! - `ranges`: block ranges, extent and refcount records on their own, the
//!   xattr blob pointer, overlap with a map of ranges.
//! - `records`: an extent record against its owner (free inode, an inode
//!   that holds no data, overlap), a refcount record against the others, a
//!   default ACL only on a directory.
//! - `tree`: the directory tree (an entry against its parent and child, a
//!   directory named once, the walk up to the root that finds cycles).
//! - `chain`: the walk of a record chain.
//! - `acl`: POSIX ACLs: the xattr value, its validation, how it ties to the
//!   mode and how it grants access (the core, the FUSE edge and fsck use it).

#![forbid(unsafe_code)]

pub mod acl;
pub mod chain;
mod ranges;
mod records;
mod tree;

pub use ranges::*;
pub use records::*;
pub use tree::*;

#[cfg(test)]
pub(crate) mod tests {
    use crate::format::Superblock;

    /// A superblock for the rules' tests: data area blocks [100, 1000).
    pub(crate) fn sb() -> Superblock {
        Superblock {
            version: crate::format::FORMAT_VERSION,
            incompat: 0,
            compat: 0,
            ro_compat: 0,
            uuid: [7; 16],
            label: String::new(),
            total_blocks: 1000,
            journal_start: 3,
            journal_blocks: 64,
            inode_start: 67,
            inode_count: 128,
            bitmap_start: 99,
            bitmap_blocks: 1,
            data_start: 100,
            roots_block: 2,
            generation: 1,
            clean: true,
            mkfs_time: 0,
            mount_count: 0,
        }
    }
}
