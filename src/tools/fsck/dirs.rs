//! Directories and links: directory entries, orphan records of inodes
//! (reclaim or drop), reachability from the root (cycles, detached trees and
//! unnamed inodes moved to /lost+found, made when missing) and link counts.

use std::collections::{HashMap, HashSet};

use super::{name_text, Ck, Dent, Ino};
use crate::check;
use crate::format::{self, ftype_byte, DirentRec, InodeRec, RecKind, INODE_SIZE, ROOT_INO};

impl Ck<'_> {
    // -- directory entries ------------------------------------------------

    fn add_dent(&mut self, d: Dent) -> usize {
        let idx = self.dents.len();
        self.names.insert((d.parent, d.name.clone()), idx);
        self.kids.entry(d.parent).or_default().push(idx);
        if self.is_live_dir(d.child) {
            self.dir_parent.insert(d.child, idx);
        }
        self.dents.push(d);
        idx
    }

    fn remove_dent(&mut self, idx: usize) {
        let (slot, parent, child, name) = {
            let d = &mut self.dents[idx];
            d.alive = false;
            (d.slot, d.parent, d.child, d.name.clone())
        };
        self.names.remove(&(parent, name));
        if self.dir_parent.get(&child) == Some(&idx) {
            self.dir_parent.remove(&child);
        }
        self.zero(slot, format::DIRENT_SIZE);
        self.free_slots[RecKind::Dirent.index()].push(slot);
    }

    pub(super) fn dirents(&mut self) {
        let raw = std::mem::take(&mut self.dirents_raw);
        for (slot, d) in raw {
            let what = check::dirent_what(slot, &d);
            // Mount's rules (`check::dirent`).
            let ctx = check::DirentCtx {
                parent_is_dir: self.is_live_dir(d.parent),
                child_mode: self.live(d.child).map(|c| c.rec.mode),
                name_taken: self.names.contains_key(&(d.parent, d.name.clone())),
                named_in: self.dir_parent.get(&d.child).map(|&i| self.dents[i].parent),
            };
            match check::dirent(&d, &ctx) {
                Ok(()) => {}
                // A wrong type byte is corrected from the inode's mode.
                Err(f @ check::DirentFault::FileType(want)) => {
                    let msg = f.message(&what, &d);
                    self.out.add(f.code(), true, format!("{msg}; corrected"));
                    let r = DirentRec {
                        ftype: want,
                        ..d.clone()
                    };
                    self.fix.write(slot, &r.encode());
                }
                Err(f) => {
                    let msg = f.message(&what, &d);
                    self.out
                        .add(f.code(), true, format!("{msg}; entry removed"));
                    self.zero(slot, format::DIRENT_SIZE);
                    self.free_slots[RecKind::Dirent.index()].push(slot);
                    continue;
                }
            }
            self.add_dent(Dent {
                slot,
                parent: d.parent,
                child: d.child,
                name: d.name,
                alive: true,
            });
        }
    }

    fn named_count(&self) -> HashMap<u64, u32> {
        let mut m: HashMap<u64, u32> = HashMap::new();
        for d in self.dents.iter().filter(|d| d.alive) {
            *m.entry(d.child).or_default() += 1;
        }
        m
    }

    fn has_kids(&self, ino: u64) -> bool {
        self.kids
            .get(&ino)
            .is_some_and(|v| v.iter().any(|&i| self.dents[i].alive))
    }

    /// Orphan records of inodes: reclaim the unlinked ones, drop the others.
    pub(super) fn orphan_inodes(&mut self) {
        let named = self.named_count();
        let held: Vec<(u64, u64)> = self
            .inodes
            .iter()
            .filter_map(|(k, i)| i.orphan_slot.map(|s| (*k, s)))
            .collect();
        for (ino, slot) in held {
            let n = named.get(&ino).copied().unwrap_or(0);
            let (nlink, reclaimed) = {
                let i = &self.inodes[&ino];
                (i.rec.nlink, i.reclaim)
            };
            if reclaimed {
                continue;
            }
            if nlink == 0 && n == 0 && !self.has_kids(ino) {
                self.reclaim(ino, "orphan-reclaim", format!("inode {ino} was unlinked while open (orphan record at {slot:#x}): reclaimed"));
            } else {
                self.out.add(
                    "orphan-bad",
                    true,
                    format!(
                        "orphan record at {slot:#x} names inode {ino}, which is still linked (nlink {nlink}, {n} entries); dropped"
                    ),
                );
                self.zero(slot, format::ORPHAN_SIZE);
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.orphan_slot = None;
                }
            }
        }
    }

    // -- reachability -----------------------------------------------------

    fn mark_reachable(&self, start: u64, reach: &mut HashSet<u64>) {
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            let Some(ks) = self.kids.get(&d) else {
                continue;
            };
            for &i in ks {
                let e = &self.dents[i];
                if e.alive && reach.insert(e.child) && self.is_live_dir(e.child) {
                    stack.push(e.child);
                }
            }
        }
    }

    pub(super) fn namespace(&mut self) {
        let mut reach = HashSet::new();
        reach.insert(ROOT_INO);
        self.mark_reachable(ROOT_INO, &mut reach);
        let dirs: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(k, i)| !i.reclaim && i.is_dir() && !reach.contains(k))
            .map(|(k, _)| *k)
            .collect();
        for ino in dirs {
            if reach.contains(&ino) {
                continue;
            }
            // Walk up to the top of this detached tree (mount's walk,
            // `check::walk_up`), cutting a cycle if there is one.
            let up = check::walk_up(
                ino,
                |n| self.dir_parent.get(&n).map(|&i| self.dents[i].parent),
                |n| reach.contains(&n),
            );
            let top = match up {
                check::Up::Reached(_) => continue,
                check::Up::Detached(top) => top,
                check::Up::Cycle { child, parent } => {
                    let idx = self.dir_parent[&child];
                    let name = name_text(&self.dents[idx].name);
                    self.out.add(
                        "dir-cycle",
                        true,
                        format!(
                            "directory {child} (entry {name} in directory {parent}) {}; entry removed",
                            check::IN_CYCLE
                        ),
                    );
                    self.remove_dent(idx);
                    child
                }
            };
            let nlink = self.inodes[&top].rec.nlink;
            if nlink == 0 && !self.has_kids(top) {
                self.reclaim(
                    top,
                    "inode-unlinked",
                    format!("directory {top} has no links, no entries and no orphan record; freed"),
                );
                reach.insert(top);
                continue;
            }
            self.rehome(
                top,
                "dir-unreachable",
                format!("directory {top} is not reachable from the root"),
                &mut reach,
            );
            reach.insert(top);
            self.mark_reachable(top, &mut reach);
        }
        let others: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(k, i)| !i.reclaim && !reach.contains(k))
            .map(|(k, _)| *k)
            .collect();
        for ino in others {
            let nlink = self.inodes[&ino].rec.nlink;
            if nlink == 0 {
                self.reclaim(
                    ino,
                    "inode-unlinked",
                    format!("inode {ino} has no links and no orphan record; freed"),
                );
                continue;
            }
            self.rehome(
                ino,
                "inode-unreachable",
                format!("inode {ino} (nlink {nlink}) is in no directory"),
                &mut reach,
            );
        }
    }

    /// Move `ino` into /lost+found and report `code`: "`what`; moved to PATH",
    /// or, not fixed, "`what`; cannot create /lost+found".
    fn rehome(&mut self, ino: u64, code: &'static str, what: String, reach: &mut HashSet<u64>) {
        let placed = self.attach(ino, reach);
        let message = match &placed {
            Some(p) => format!("{what}; moved to {p}"),
            None => format!("{what}; cannot create /lost+found"),
        };
        self.out.add(code, placed.is_some(), message);
    }

    /// Put `ino` into /lost+found as `#INO`; returns the path.
    fn attach(&mut self, ino: u64, reach: &mut HashSet<u64>) -> Option<String> {
        let lf = self.lost_found(reach)?;
        let mut name = format!("#{ino}").into_bytes();
        let mut k = 1;
        while self.names.contains_key(&(lf, name.clone())) {
            name = format!("#{ino}.{k}").into_bytes();
            k += 1;
        }
        let slot = self.alloc_slot(RecKind::Dirent)?;
        let ftype = ftype_byte(self.inodes.get(&ino)?.rec.mode);
        let d = DirentRec {
            parent: lf,
            child: ino,
            ftype,
            name: name.clone(),
        };
        self.fix.write(slot, &d.encode());
        let lf_name = self
            .dir_parent
            .get(&lf)
            .map(|&i| String::from_utf8_lossy(&self.dents[i].name).into_owned())
            .unwrap_or_default();
        self.add_dent(Dent {
            slot,
            parent: lf,
            child: ino,
            name: name.clone(),
            alive: true,
        });
        reach.insert(ino);
        Some(format!("/{lf_name}/{}", String::from_utf8_lossy(&name)))
    }

    pub(super) fn lost_found(&mut self, reach: &mut HashSet<u64>) -> Option<u64> {
        if let Some(l) = self.lost_found {
            return l;
        }
        let mut found = None;
        for k in 0..10 {
            let name = if k == 0 {
                b"lost+found".to_vec()
            } else {
                format!("lost+found.{k}").into_bytes()
            };
            match self.names.get(&(ROOT_INO, name.clone())) {
                Some(&i) => {
                    let c = self.dents[i].child;
                    if self.is_live_dir(c) {
                        found = Some(c);
                        break;
                    }
                }
                None => {
                    found = self.make_lost_found(name, reach);
                    break;
                }
            }
        }
        self.lost_found = Some(found);
        found
    }

    fn make_lost_found(&mut self, name: Vec<u8>, reach: &mut HashSet<u64>) -> Option<u64> {
        let ino = (2..=self.inode_init)
            .find(|i| !self.inodes.contains_key(i) && !self.bad_inodes.contains_key(i))?;
        let slot = self.alloc_slot(RecKind::Dirent)?;
        let generation = self
            .rd(self.sb.inode_offset(ino), INODE_SIZE)
            .and_then(|b| InodeRec::decode(&b).ok())
            .map(|r| r.generation)
            .unwrap_or(0);
        self.inodes
            .insert(ino, Ino::new_dir(libc::S_IFDIR | 0o700, generation, None));
        let d = DirentRec {
            parent: ROOT_INO,
            child: ino,
            ftype: ftype_byte(libc::S_IFDIR),
            name: name.clone(),
        };
        self.fix.write(slot, &d.encode());
        self.add_dent(Dent {
            slot,
            parent: ROOT_INO,
            child: ino,
            name,
            alive: true,
        });
        reach.insert(ino);
        Some(ino)
    }

    // -- link counts ------------------------------------------------------

    pub(super) fn link_counts(&mut self) {
        let named = self.named_count();
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        for d in self.dents.iter().filter(|d| d.alive) {
            if self.is_live_dir(d.child) {
                *subdirs.entry(d.parent).or_default() += 1;
            }
        }
        let inos: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| !i.reclaim)
            .map(|(k, _)| *k)
            .collect();
        for ino in inos {
            let i = &self.inodes[&ino];
            let want = if i.is_dir() {
                subdirs.get(&ino).copied().unwrap_or(0).saturating_add(2)
            } else {
                named.get(&ino).copied().unwrap_or(0)
            };
            if i.rec.nlink != want {
                if !i.fresh {
                    self.out.add(
                        "nlink-wrong",
                        true,
                        format!(
                            "inode {ino} has link count {}, should be {want}; corrected",
                            i.rec.nlink
                        ),
                    );
                }
                if let Some(i) = self.inodes.get_mut(&ino) {
                    i.rec.nlink = want;
                }
            }
        }
    }
}
