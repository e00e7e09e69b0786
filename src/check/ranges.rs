//! Range rules: a block range inside the data area, an extent's blocks and
//! logical range, a refcount record's range, an inode's xattr blob pointer,
//! and overlap of a range with a map of ranges.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::format::{
    ExtentRec, InodeRec, RefcountRec, Superblock, XattrPtr, BLOCK_SIZE, MAX_FILE_SIZE,
};

/// Logical blocks a file may have (MAX_FILE_SIZE / 4096).
pub const MAX_LOGICAL: u64 = MAX_FILE_SIZE / BLOCK_SIZE;

/// Blocks `phys .. phys + len` (len > 0) lie inside the data area.
pub fn in_data(sb: &Superblock, phys: u64, len: u64) -> bool {
    match phys.checked_add(len) {
        Some(end) => len > 0 && phys >= sb.data_start && end <= sb.total_blocks,
        None => false,
    }
}

/// What is wrong with an extent record on its own, if anything: its blocks
/// outside the data area, or its logical range past the largest file.
pub fn extent_problem(sb: &Superblock, x: &ExtentRec) -> Option<&'static str> {
    let len = x.len as u64;
    if !in_data(sb, x.phys, len) {
        Some("lies beyond the device or outside the data area")
    } else if x.logical.checked_add(len).is_none_or(|e| e > MAX_LOGICAL) {
        Some("lies beyond the largest file size")
    } else {
        None
    }
}

/// What is wrong with a refcount record on its own, if anything.
pub fn refcount_problem(sb: &Superblock, r: &RefcountRec) -> Option<&'static str> {
    (!in_data(sb, r.phys, r.len)).then_some("covers blocks outside the data area")
}

/// An inode's xattr blob pointer (`InodeRec::xattr_ptr`) with its blocks
/// inside the data area: None without xattrs, or why the pointer is bad.
/// Mount refuses an inode that breaks it, first use of the xattrs fails with
/// it (EIO), fsck clears the pointer.
pub fn xattr_ptr(sb: &Superblock, r: &InodeRec) -> Result<Option<XattrPtr>, String> {
    let p = r.xattr_ptr().map_err(|e| match e {
        crate::format::FormatError::Invalid { detail, .. } => detail,
        e => e.to_string(),
    })?;
    match p {
        Some(p) if !in_data(sb, p.block, p.blocks) => {
            Err("blob lies outside the data area".to_string())
        }
        p => Ok(p),
    }
}

/// The start of a range in `map` (start -> value, `len_of` its length) that
/// overlaps `start .. start + len`, if any. The ranges of `map` must not
/// overlap each other.
pub fn overlapping<V>(
    map: &BTreeMap<u64, V>,
    start: u64,
    len: u64,
    len_of: impl Fn(&V) -> u64,
) -> Option<u64> {
    let end = start.saturating_add(len);
    map.range(..end)
        .next_back()
        .filter(|(s, v)| s.saturating_add(len_of(v)) > start)
        .map(|(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_ptr_inside_the_data_area() {
        let sb = crate::check::tests::sb();
        let r = InodeRec {
            mode: libc::S_IFREG,
            xattr_block: 200,
            xattr_blocks: 1,
            xattr_len: 10,
            ..Default::default()
        };
        assert!(r.xattr_ptr().unwrap().is_some());
        // The pointer decodes on its own; only the check sees it is good.
        assert!(xattr_ptr(&sb, &r).unwrap().is_some());
        // An end past u64 is an error, not an overflow.
        let r = InodeRec {
            xattr_block: u64::MAX,
            ..r
        };
        assert!(r.xattr_ptr().unwrap().is_some());
        assert!(xattr_ptr(&sb, &r).is_err());
        let r = InodeRec {
            xattr_block: 99,
            ..r
        };
        assert!(xattr_ptr(&sb, &r).is_err());
    }

    #[test]
    fn overlapping_finds_neighbours() {
        let m: BTreeMap<u64, u64> = [(10, 5), (20, 1)].into_iter().collect();
        let f = |s, l| overlapping(&m, s, l, |v| *v);
        assert_eq!(f(0, 10), None);
        assert_eq!(f(0, 11), Some(10));
        assert_eq!(f(14, 1), Some(10));
        assert_eq!(f(15, 5), None);
        assert_eq!(f(15, 6), Some(20));
        assert_eq!(f(21, u64::MAX), None);
        assert_eq!(f(12, 100), Some(20));
    }
}
