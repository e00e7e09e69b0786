//! The directory tree: a directory entry against its parent and child, a
//! directory named by one entry only (its `..`), and the walk up a
//! directory's parents that finds the root, a detached top or a cycle.

use std::collections::HashSet;

use crate::format::{ftype_byte, DirentRec, ROOT_INO};

/// A name for display (quoted, lossy).
pub fn name_text(n: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(n))
}

/// How mount and fsck name a directory entry (at media offset `slot`).
pub fn dirent_what(slot: u64, d: &DirentRec) -> String {
    format!(
        "directory entry {} in inode {} (slot {slot:#x})",
        name_text(&d.name),
        d.parent
    )
}

/// What the rules need to know about a directory entry's surroundings.
pub struct DirentCtx {
    /// The parent is an in-use directory.
    pub parent_is_dir: bool,
    /// The child's mode (None: the child is free).
    pub child_mode: Option<u32>,
    /// The parent already holds an entry of this name.
    pub name_taken: bool,
    /// The directory an entry read before names the child in, if any (a
    /// directory may be named once; other inodes, many times).
    pub named_in: Option<u64>,
}

/// Why a directory entry is bad, in the order the rules are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirentFault {
    BadParent,
    FreeChild,
    NamesRoot,
    DupName,
    /// The child directory is already named in this directory.
    DirNamedTwice(u64),
    /// The entry's file type differs from the child's (`want`, by its mode).
    FileType(u8),
}

impl DirentFault {
    /// fsck's finding code.
    pub fn code(&self) -> &'static str {
        match self {
            DirentFault::BadParent => "dirent-bad-parent",
            DirentFault::FreeChild => "dirent-free-inode",
            DirentFault::NamesRoot => "dirent-to-root",
            DirentFault::DupName => "dirent-dup-name",
            DirentFault::DirNamedTwice(_) => "dir-multi-link",
            DirentFault::FileType(_) => "dirent-ftype",
        }
    }

    /// The finding: `what` (from `dirent_what`) and why entry `d` is bad.
    pub fn message(&self, what: &str, d: &DirentRec) -> String {
        match self {
            DirentFault::BadParent => {
                format!("{what}: inode {} is not an in-use directory", d.parent)
            }
            DirentFault::FreeChild => format!("{what} points at free inode {}", d.child),
            DirentFault::NamesRoot => format!("{what} names the root directory"),
            DirentFault::DupName => format!("{what}: the directory already holds this name"),
            DirentFault::DirNamedTwice(first) => format!(
                "{what}: directory {} is named twice (already in directory {first})",
                d.child
            ),
            DirentFault::FileType(want) => format!(
                "{what}: file type {} but inode {} has type {want}",
                d.ftype, d.child
            ),
        }
    }
}

/// The rules on directory entry `d`. Each directory is named once (its
/// `..`), and the root never: a directory named twice, or a cycle, would
/// make rename's ancestor walk wrong.
pub fn dirent(d: &DirentRec, c: &DirentCtx) -> Result<(), DirentFault> {
    if !c.parent_is_dir {
        return Err(DirentFault::BadParent);
    }
    let mode = c.child_mode.ok_or(DirentFault::FreeChild)?;
    if d.child == ROOT_INO {
        return Err(DirentFault::NamesRoot);
    }
    if c.name_taken {
        return Err(DirentFault::DupName);
    }
    if mode & libc::S_IFMT == libc::S_IFDIR {
        if let Some(first) = c.named_in {
            return Err(DirentFault::DirNamedTwice(first));
        }
    }
    let want = ftype_byte(mode);
    if d.ftype != want {
        return Err(DirentFault::FileType(want));
    }
    Ok(())
}

/// Where the walk up from a directory ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Up {
    /// At a directory `stop` accepts (the root, or one known to reach it).
    Reached(u64),
    /// At a directory no entry names: the top of a detached tree.
    Detached(u64),
    /// The entry naming `child` in `parent` closes a cycle.
    Cycle { child: u64, parent: u64 },
}

/// The words for a directory in a cycle.
pub const IN_CYCLE: &str = "is in a directory cycle detached from the root";

/// Walk up from directory `start` along `parent_of` (the directory whose
/// entry names it) until `stop` accepts a directory, none names it, or the
/// walk comes back to a directory it passed. Bounded by the directories on
/// the path, whatever the links.
pub fn walk_up(
    start: u64,
    parent_of: impl Fn(u64) -> Option<u64>,
    stop: impl Fn(u64) -> bool,
) -> Up {
    let mut on_path = HashSet::from([start]);
    let mut cur = start;
    loop {
        if stop(cur) {
            return Up::Reached(cur);
        }
        let Some(p) = parent_of(cur) else {
            return Up::Detached(cur);
        };
        if !on_path.insert(p) {
            return Up::Cycle {
                child: cur,
                parent: p,
            };
        }
        cur = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn d(parent: u64, child: u64, ftype: u8) -> DirentRec {
        DirentRec {
            parent,
            child,
            ftype,
            name: b"n".to_vec(),
        }
    }

    #[test]
    fn dirent_rules_in_order() {
        let dir = libc::S_IFDIR | 0o755;
        let ok = DirentCtx {
            parent_is_dir: true,
            child_mode: Some(dir),
            name_taken: false,
            named_in: None,
        };
        let e = d(1, 7, ftype_byte(dir));
        assert_eq!(dirent(&e, &ok), Ok(()));
        let bad = |c: DirentCtx| dirent(&e, &c).unwrap_err();
        assert_eq!(
            bad(DirentCtx {
                parent_is_dir: false,
                child_mode: None,
                ..ok
            }),
            DirentFault::BadParent
        );
        assert_eq!(
            bad(DirentCtx {
                child_mode: None,
                ..ok
            }),
            DirentFault::FreeChild
        );
        assert_eq!(
            bad(DirentCtx {
                name_taken: true,
                named_in: Some(3),
                ..ok
            }),
            DirentFault::DupName
        );
        assert_eq!(
            bad(DirentCtx {
                named_in: Some(3),
                ..ok
            }),
            DirentFault::DirNamedTwice(3)
        );
        assert_eq!(
            dirent(&d(1, ROOT_INO, ftype_byte(dir)), &ok),
            Err(DirentFault::NamesRoot)
        );
        let file = libc::S_IFREG | 0o644;
        let f = DirentCtx {
            child_mode: Some(file),
            named_in: Some(3),
            ..ok
        };
        // A file may have many names; its type byte must match.
        assert_eq!(dirent(&d(1, 7, ftype_byte(file)), &f), Ok(()));
        assert_eq!(
            dirent(&d(1, 7, ftype_byte(dir)), &f),
            Err(DirentFault::FileType(ftype_byte(file)))
        );
    }

    #[test]
    fn walk_up_finds_root_top_and_cycles() {
        // 2 in 1 (root), 3 in 2; 4 in 5, 5 detached; 6 in 7, 7 in 6; 8 in 6.
        let parents: HashMap<u64, u64> = [(2, 1), (3, 2), (4, 5), (6, 7), (7, 6), (8, 6)].into();
        let up = |s| walk_up(s, |n| parents.get(&n).copied(), |n| n == ROOT_INO);
        assert_eq!(up(3), Up::Reached(ROOT_INO));
        assert_eq!(up(4), Up::Detached(5));
        assert_eq!(
            up(6),
            Up::Cycle {
                child: 7,
                parent: 6
            }
        );
        assert_eq!(
            up(8),
            Up::Cycle {
                child: 7,
                parent: 6
            }
        );
        let known = |n| n == 2;
        assert_eq!(
            walk_up(3, |n| parents.get(&n).copied(), known),
            Up::Reached(2)
        );
    }
}
