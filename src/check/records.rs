//! Rules on a record against what else the image holds: an extent record
//! against its owner and the owner's other extents, a refcount record against
//! the other refcount records, and where a default ACL may be.

use std::fmt;

use super::{extent_problem, in_data, refcount_problem};
use crate::format::{ExtentRec, RefcountRec, Superblock};

/// Whether an inode of `mode` holds data blocks (FORMAT.md, "Other data-area
/// contents"): a regular file and a symlink (its target block). A directory
/// keeps its entries in directory-entry records, so it has no extents, as
/// fifos, sockets and device nodes have none.
pub fn holds_data(mode: u32) -> bool {
    matches!(mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFLNK)
}

/// Why an extent record is bad, in the order the rules are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentFault {
    /// Its inode is free.
    FreeInode,
    /// Its inode (of this file type, `S_IFMT` bits) holds no data.
    NoData(u32),
    /// Its blocks or its logical range are out of bounds (`extent_problem`).
    Range(&'static str),
    /// It overlaps the owner's extent at this logical block.
    Overlap(u64),
}

impl ExtentFault {
    /// fsck's finding code.
    pub fn code(&self) -> &'static str {
        match self {
            ExtentFault::FreeInode => "extent-orphan",
            ExtentFault::NoData(_) => "extent-bad-owner",
            ExtentFault::Range(_) => "extent-range",
            ExtentFault::Overlap(_) => "extent-overlap",
        }
    }

    /// Whether the record's blocks are in the data area, so that dropping
    /// the record frees them (blocks outside it belong to no one).
    pub fn frees_blocks(&self, sb: &Superblock, x: &ExtentRec) -> bool {
        match self {
            ExtentFault::Range(_) => in_data(sb, x.phys, x.len as u64),
            _ => true,
        }
    }
}

impl fmt::Display for ExtentFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtentFault::FreeInode => write!(f, "belongs to a free inode"),
            ExtentFault::NoData(t) => {
                write!(f, "belongs to an inode of type {t:#o} that has no data")
            }
            ExtentFault::Range(why) => write!(f, "{why}"),
            ExtentFault::Overlap(s) => write!(f, "overlaps the extent at logical block {s}"),
        }
    }
}

/// How mount and fsck name an extent record (at media offset `slot`).
pub fn extent_what(slot: u64, x: &ExtentRec) -> String {
    format!(
        "extent record at {slot:#x} (inode {}, logical {}, block {} +{})",
        x.ino, x.logical, x.phys, x.len
    )
}

/// The rules on extent record `x`: `owner_mode` is its inode's mode (None:
/// the inode is free), `overlap(logical, len)` the start of an extent of
/// the same inode (loaded so far) that overlaps the range, if any.
pub fn extent(
    sb: &Superblock,
    x: &ExtentRec,
    owner_mode: Option<u32>,
    overlap: impl FnOnce(u64, u64) -> Option<u64>,
) -> Result<(), ExtentFault> {
    let mode = owner_mode.ok_or(ExtentFault::FreeInode)?;
    if !holds_data(mode) {
        return Err(ExtentFault::NoData(mode & libc::S_IFMT));
    }
    if let Some(why) = extent_problem(sb, x) {
        return Err(ExtentFault::Range(why));
    }
    match overlap(x.logical, x.len as u64) {
        Some(s) => Err(ExtentFault::Overlap(s)),
        None => Ok(()),
    }
}

/// The rules on refcount record `r`: its range on its own, then
/// `overlap(phys, len)`, a record loaded so far that overlaps it.
pub fn refcount(
    sb: &Superblock,
    r: &RefcountRec,
    overlap: impl FnOnce(u64, u64) -> Option<u64>,
) -> Option<&'static str> {
    refcount_problem(sb, r)
        .or_else(|| overlap(r.phys, r.len).map(|_| "overlaps another refcount record"))
}

/// A default ACL (`system.posix_acl_default`) is allowed only on a
/// directory (as ext4, whose set_acl refuses it on anything else): why not
/// on an inode of `mode`, if it is not. setxattr refuses it (EACCES), fsck
/// removes one it finds.
pub fn default_acl(mode: u32) -> Option<&'static str> {
    (mode & libc::S_IFMT != libc::S_IFDIR).then_some("a default ACL on a non-directory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::sb;

    fn x(logical: u64, phys: u64, len: u32) -> ExtentRec {
        ExtentRec {
            ino: 5,
            logical,
            phys,
            len,
        }
    }

    #[test]
    fn extent_owner_rules() {
        let sb = sb();
        let none = |_, _| None;
        let file = libc::S_IFREG | 0o644;
        assert_eq!(extent(&sb, &x(0, 200, 4), Some(file), none), Ok(()));
        assert_eq!(
            extent(&sb, &x(0, 200, 4), Some(libc::S_IFLNK | 0o777), none),
            Ok(())
        );
        assert_eq!(
            extent(&sb, &x(0, 200, 4), None, none),
            Err(ExtentFault::FreeInode)
        );
        // A directory holds no data: the rule mount once skipped.
        let e = extent(&sb, &x(0, 200, 4), Some(libc::S_IFDIR | 0o755), none).unwrap_err();
        assert_eq!(e, ExtentFault::NoData(libc::S_IFDIR));
        assert_eq!(e.code(), "extent-bad-owner");
        assert_eq!(
            e.to_string(),
            "belongs to an inode of type 0o40000 that has no data"
        );
        for t in [libc::S_IFIFO, libc::S_IFCHR, libc::S_IFBLK, libc::S_IFSOCK] {
            assert!(extent(&sb, &x(0, 200, 4), Some(t | 0o600), none).is_err());
        }
        assert!(matches!(
            extent(&sb, &x(0, 990, 20), Some(file), none),
            Err(ExtentFault::Range(_))
        ));
        assert_eq!(
            extent(&sb, &x(3, 200, 4), Some(file), |l, n| {
                assert_eq!((l, n), (3, 4));
                Some(2)
            }),
            Err(ExtentFault::Overlap(2))
        );
    }

    #[test]
    fn default_acl_only_on_directories() {
        assert_eq!(default_acl(libc::S_IFDIR | 0o755), None);
        assert!(default_acl(libc::S_IFREG | 0o644).is_some());
        assert!(default_acl(libc::S_IFLNK | 0o777).is_some());
    }
}
