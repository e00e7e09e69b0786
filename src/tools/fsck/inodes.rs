//! Inodes: the inode table (bad and stale free slots), the root directory,
//! xattr blobs and their POSIX ACLs, and symlink targets.

use std::collections::BTreeMap;

use super::space::Owner;
use super::{free_inode, Ck, Ext, Ino, BS};
use crate::format::{self, InodeRec, Le, Timespec, INODES_PER_BLOCK, INODE_SIZE, ROOT_INO};

impl Ino {
    /// An empty directory fsck makes (the root, lost+found), as read `orig`.
    pub(super) fn new_dir(mode: u32, generation: u32, orig: Option<InodeRec>) -> Ino {
        let t = Timespec::now();
        Ino {
            orig,
            rec: InodeRec {
                mode,
                nlink: 2,
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                generation,
                ..Default::default()
            },
            extents: BTreeMap::new(),
            xattr_claimed: false,
            orphan_slot: None,
            reclaim: false,
            fresh: true,
        }
    }
}

impl Ck<'_> {
    // -- inodes -----------------------------------------------------------

    pub(super) fn inode_table(&mut self) {
        let count = self.inode_init;
        let mut ino = 1u64;
        while ino <= count {
            let n = INODES_PER_BLOCK.min(count - ino + 1);
            let off = self.sb.inode_offset(ino);
            let Some(buf) = self.rd(off, n as usize * INODE_SIZE) else {
                break;
            };
            for (i, slot) in buf.chunks_exact(INODE_SIZE).enumerate() {
                let this = ino + i as u64;
                if slot.iter().any(|b| *b != 0) {
                    self.itable_top = this;
                }
                match InodeRec::decode(slot) {
                    Err(e) => {
                        self.out
                            .add("inode-bad", true, format!("inode {this}: {e}; cleared"));
                        self.bad_inodes
                            .insert(this, Le::u32(slot, 76).wrapping_add(1));
                    }
                    Ok(rec) if rec.is_free() => {
                        let clean = free_inode(rec.generation);
                        if rec != clean {
                            self.out.add(
                                "inode-free-dirty",
                                true,
                                format!("free inode {this} holds stale fields; cleaned"),
                            );
                            self.fix.write(self.sb.inode_offset(this), &clean.encode());
                        }
                    }
                    Ok(rec) => {
                        self.inodes.insert(
                            this,
                            Ino {
                                orig: Some(rec.clone()),
                                rec,
                                extents: BTreeMap::new(),
                                xattr_claimed: false,
                                orphan_slot: None,
                                reclaim: false,
                                fresh: false,
                            },
                        );
                    }
                }
            }
            ino += n;
        }
        if self.marks_lost {
            // A rebuilt roots block: initialized up to the last slot in use.
            self.roots.inode_init = format::Roots::next_inode_init(
                self.itable_top.saturating_sub(1),
                self.sb.inode_count,
            )
            .max(1);
        }
    }

    pub(super) fn root(&mut self) {
        let why = match self.inodes.get(&ROOT_INO) {
            Some(r) if r.is_dir() => return,
            Some(r) => format!("is not a directory (mode {:#o})", r.rec.mode),
            None if self.bad_inodes.contains_key(&ROOT_INO) => "does not decode".to_string(),
            None => "is free".to_string(),
        };
        self.out.add(
            "root-bad",
            true,
            format!("the root directory (inode 1) {why}; a new empty root is made"),
        );
        let generation = match self.inodes.get(&ROOT_INO) {
            Some(r) => r.rec.generation,
            None => self.bad_inodes.get(&ROOT_INO).copied().unwrap_or(0),
        };
        self.bad_inodes.remove(&ROOT_INO);
        let orig = self.inodes.get(&ROOT_INO).and_then(|r| r.orig.clone());
        self.inodes.insert(
            ROOT_INO,
            Ino::new_dir(libc::S_IFDIR | 0o755, generation, orig),
        );
    }

    // -- xattrs -----------------------------------------------------------

    pub(super) fn xattrs(&mut self) {
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            let r = self.inodes[&ino].rec.clone();
            let blocks = r.xattr_blocks as u64;
            let len = r.xattr_len as u64;
            // The pointer by mount's rule, the blob by the format's decode.
            let why = match crate::check::xattr_ptr(&self.sb, &r) {
                Ok(None) => continue,
                Err(w) => Some(w),
                Ok(Some(p)) => match self.rd(p.block * BS, p.len) {
                    None => Some("blob unreadable".to_string()),
                    Some(b) => match format::decode_xattr_blob(&b, &p) {
                        Err(format::FormatError::BadChecksum { .. }) => {
                            Some("blob checksum mismatch".to_string())
                        }
                        Err(e) => Some(e.to_string()),
                        Ok(m) => {
                            let blocks = match self.check_acls(ino, &r, m) {
                                Some(n) => n,
                                None => {
                                    self.unclaim(r.xattr_block, blocks);
                                    self.clear_xattr(ino);
                                    continue;
                                }
                            };
                            match self.claim(r.xattr_block, blocks, Owner::Xattr(ino)) {
                                Ok(()) => None,
                                Err((blk, o)) => {
                                    self.out.add(
                                    "block-dup",
                                    true,
                                    format!(
                                        "block {blk} referenced twice: by {o} and by the xattr blob of inode {ino}; xattrs of inode {ino} cleared"
                                    ),
                                );
                                    self.unclaim(r.xattr_block, blocks);
                                    self.clear_xattr(ino);
                                    continue;
                                }
                            }
                        }
                    },
                },
            };
            match why {
                None => {
                    if let Some(i) = self.inodes.get_mut(&ino) {
                        i.xattr_claimed = true;
                    }
                }
                Some(w) => {
                    self.out.add(
                        "xattr-bad",
                        true,
                        format!(
                            "inode {ino}: xattr blob at block {} (+{blocks} blocks, {len} bytes): {w}; xattrs cleared",
                            r.xattr_block
                        ),
                    );
                    self.unclaim(r.xattr_block, blocks);
                    self.clear_xattr(ino);
                }
            }
        }
    }

    /// The ACL xattrs of inode `ino` (whose blob decoded to `m`) must be
    /// valid ACLs, and a default ACL only on a directory, as mount and the
    /// kernel require (`crate::check::acl` is the one definition). Bad ones are
    /// dropped: the blob is rewritten in place, smaller. Returns the blocks
    /// the blob keeps, or `None` when nothing is left of it.
    fn check_acls(&mut self, ino: u64, r: &InodeRec, mut m: format::XattrMap) -> Option<u64> {
        let mut bad = Vec::new();
        for name in [crate::check::acl::ACCESS, crate::check::acl::DEFAULT] {
            let Some(v) = m.get(name) else { continue };
            let why = match crate::check::acl::Acl::decode(v) {
                Err(e) => Some(e.to_string()),
                Ok(_) if name == crate::check::acl::DEFAULT => {
                    crate::check::default_acl(r.mode).map(str::to_string)
                }
                Ok(_) => None,
            };
            if let Some(w) = why {
                bad.push((name, w));
            }
        }
        let blocks = r.xattr_blocks as u64;
        if bad.is_empty() {
            return Some(blocks);
        }
        for (name, w) in &bad {
            m.remove(*name);
            self.out.add(
                "acl-bad",
                true,
                format!(
                    "inode {ino}: {}: {w}; removed",
                    String::from_utf8_lossy(name)
                ),
            );
        }
        if m.is_empty() {
            return None;
        }
        let blob = format::encode_xattrs(&m);
        let keep = (blob.len() as u64).div_ceil(BS);
        let mut padded = blob.clone();
        padded.resize((keep * BS) as usize, 0);
        self.fix.write(r.xattr_block * BS, &padded);
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.rec.xattr_blocks = keep as u32;
            i.rec.xattr_len = blob.len() as u32;
            i.rec.xattr_crc = format::crc(&blob);
        }
        // The blocks the smaller blob no longer needs return to free space.
        self.unclaim(r.xattr_block + keep, blocks - keep);
        Some(keep)
    }

    fn clear_xattr(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.rec.xattr_block = 0;
            i.rec.xattr_blocks = 0;
            i.rec.xattr_len = 0;
            i.rec.xattr_crc = 0;
            i.xattr_claimed = false;
        }
    }

    // -- symlinks ---------------------------------------------------------

    pub(super) fn symlinks(&mut self) {
        let links: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.ftype() == libc::S_IFLNK)
            .map(|(k, _)| *k)
            .collect();
        for ino in links {
            let (size, exts) = {
                let i = &self.inodes[&ino];
                (
                    i.rec.size,
                    i.extents.iter().map(|(l, e)| (*l, *e)).collect::<Vec<_>>(),
                )
            };
            let mut problems = Vec::new();
            let Some(&(_, first)) = exts.iter().find(|(l, _)| *l == 0) else {
                self.reclaim(
                    ino,
                    "symlink-bad",
                    format!("symlink {ino} has no target block at logical block 0; removed"),
                );
                continue;
            };
            for (l, e) in exts.iter().filter(|(l, _)| *l != 0) {
                problems.push(format!("extra extent at logical block {l} dropped"));
                self.zero(e.slot, format::EXTENT_SIZE);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.extents.remove(l);
                }
            }
            if first.len != 1 {
                problems.push(format!("target extent of {} blocks cut to 1", first.len));
                let ne = Ext { len: 1, ..first };
                self.write_extent(ino, 0, ne);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.extents.insert(0, ne);
                }
            }
            if size == 0 || size > 4095 {
                let n = self
                    .rd(first.phys * BS, 4095)
                    .map(|b| b.iter().position(|&c| c == 0).unwrap_or(4095))
                    .unwrap_or(0);
                if n == 0 {
                    self.reclaim(
                        ino,
                        "symlink-bad",
                        format!("symlink {ino} has size {size} and an empty target; removed"),
                    );
                    continue;
                }
                problems.push(format!("size {size} set to the target length {n}"));
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.rec.size = n as u64;
                }
            }
            if !problems.is_empty() {
                self.out.add(
                    "symlink-bad",
                    true,
                    format!("symlink {ino}: {}", problems.join(", ")),
                );
            }
        }
    }
}
