//! The namespace: creating inodes of every type, hard links, unlink and
//! rmdir (with orphan records for what is still open), freeing inodes,
//! rename (NOREPLACE, EXCHANGE, WHITEOUT), readdir, readlink, statfs.

use super::*;

impl Fs {
    // ------------------------------------------------------------------
    // Namespace
    // ------------------------------------------------------------------

    pub(super) fn new_inode_rec(
        &self,
        parent: &Inode,
        mode: u32,
        cred: Cred,
        rdev: u32,
    ) -> InodeRec {
        let t = now();
        let mut mode = mode;
        let mut gid = cred.gid;
        if parent.rec.mode & libc::S_ISGID != 0 {
            gid = parent.rec.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                mode |= libc::S_ISGID;
            }
        }
        InodeRec {
            mode,
            uid: cred.uid,
            gid,
            nlink: if mode & libc::S_IFMT == libc::S_IFDIR {
                2
            } else {
                1
            },
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev,
            ..Default::default()
        }
    }

    /// Take a free inode number for `rec` inside `ctx`, with the generation
    /// its slot carries (bumped when the number was last freed), so that a
    /// file handle of the old inode goes stale.
    pub(super) fn alloc_ino_for(&self, ctx: &mut Ctx<'_>, rec: &mut InodeRec) -> FsResult<u64> {
        let ino = ctx.alloc_ino()?;
        let old = InodeRec::decode(
            &self
                .media
                .read_vec(self.sb.inode_offset(ino), format::INODE_SIZE)?,
        )
        .unwrap_or_default();
        rec.generation = old.generation;
        Ok(ino)
    }

    /// Create a node of any type (regular, dir, device, fifo, socket, symlink).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: Cred,
    ) -> FsResult<Attr> {
        self.create_node(parent, name, mode, rdev, cred, None)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, cred: Cred) -> FsResult<Attr> {
        self.create_node(parent, name, libc::S_IFDIR | (mode & 0o7777), 0, cred, None)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], cred: Cred) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() >= 4096 {
            return Err(FsError::NameTooLong);
        }
        self.create_node(parent, name, libc::S_IFLNK | 0o777, 0, cred, Some(target))
    }

    pub(super) fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: Cred,
        link_target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        check_name(name)?;
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let ftype = mode & libc::S_IFMT;
        let mode = if ftype == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        let _ns = nowait::write(&self.ns)?;
        let pr = self.get(parent)?;
        let mut pg = pr.write()?;
        {
            let d = pg.dir.as_ref().ok_or(FsError::NotDir)?;
            if pg.rec.nlink == 0 {
                return Err(FsError::NotFound);
            }
            pg.not_immutable()?;
            if d.contains(name) {
                return Err(FsError::Exists);
            }
        }
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && pg.rec.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        let (mode, xattrs) = self.inherit_acls(&mut pg, mode, cred.umask)?;
        let mut rec = self.new_inode_rec(&pg, mode, cred, rdev);
        // Symlink target: its data block is written before the metadata commits.
        let mut target_run = None;
        let mut ctx = self.ctx()?;
        ctx.ensure_slots(RecKind::Dirent, 1)?;
        if link_target.is_some() {
            ctx.ensure_slots(RecKind::Extent, 1)?;
        }
        let ino = self.alloc_ino_for(&mut ctx, &mut rec)?;
        if let Some(t) = link_target {
            let runs = ctx.reserve(1, None)?;
            let (p, _) = runs[0];
            let mut blk = vec![0u8; BS as usize];
            blk[..t.len()].copy_from_slice(t);
            self.media.write_at(p * BS, &blk)?;
            self.media.persist(p * BS, BS)?;
            ctx.blocks_used(p, 1)?;
            rec.size = t.len() as u64;
            target_run = Some(p);
        }
        let slot = ctx.slot_alloc(RecKind::Dirent)?;
        ctx.slot_write(
            slot,
            &DirentRec {
                parent,
                child: ino,
                ftype: ftype_byte(mode),
                name: name.to_vec(),
            }
            .encode(),
        );
        let mut ext_slot = None;
        if let Some(p) = target_run {
            let es = ctx.slot_alloc(RecKind::Extent)?;
            ctx.slot_write(
                es,
                &ExtentRec {
                    ino,
                    logical: 0,
                    phys: p,
                    len: 1,
                }
                .encode(),
            );
            ext_slot = Some((p, es));
        }
        if !xattrs.is_empty() {
            self.stage_xattrs(&mut ctx, &InodeRec::default(), &xattrs, &mut rec)?;
        }
        ctx.put_inode(ino, &rec);
        let mut prec = pg.rec.clone();
        prec.mtime = rec.ctime;
        prec.ctime = rec.ctime;
        if is_dir {
            link_count_up(&mut prec.nlink)?;
        }
        ctx.put_inode(parent, &prec);
        ctx.commit()?;
        // DRAM.
        pg.rec = prec;
        let d = pg.dir.as_mut().expect("dir");
        d.add(
            name,
            DEnt {
                child: ino,
                ftype: ftype_byte(mode),
                slot,
            },
        );
        let mut inode = Inode::new(ino, rec);
        if !xattrs.is_empty() {
            inode.xattrs = Some(Box::new(xattrs));
        }
        if let Some(dd) = inode.dir.as_mut() {
            dd.parent = parent;
        }
        if let Some((p, es)) = ext_slot {
            inode.extents.insert(
                0,
                Ext {
                    phys: p,
                    len: 1,
                    slot: es,
                },
            );
            inode.mapped = 1;
            self.rmap.lock().insert(p, ino, 0, 1);
        }
        let attr = inode.attr();
        self.inodes.write().insert(ino, node::Node::new(inode));
        Ok(attr)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let _ns = self.ns.write();
        let mut gs = self.lock_many(&[ino, newparent])?;
        {
            let c = &gs[&ino];
            if c.is_dir() {
                return Err(FsError::Perm);
            }
            c.fully_mutable()?;
            gs[&newparent].not_immutable()?;
            if c.rec.nlink >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            if c.rec.nlink == 0 {
                return Err(FsError::NotFound);
            }
            let p = &gs[&newparent];
            let d = p.dir.as_ref().ok_or(FsError::NotDir)?;
            if d.contains(newname) {
                return Err(FsError::Exists);
            }
        }
        let t = now();
        let mut ctx = self.ctx()?;
        let slot = ctx.slot_alloc(RecKind::Dirent)?;
        let ft = ftype_byte(gs[&ino].rec.mode);
        ctx.slot_write(
            slot,
            &DirentRec {
                parent: newparent,
                child: ino,
                ftype: ft,
                name: newname.to_vec(),
            }
            .encode(),
        );
        let mut crec = gs[&ino].rec.clone();
        link_count_up(&mut crec.nlink)?;
        crec.ctime = t;
        let mut prec = gs[&newparent].rec.clone();
        prec.mtime = t;
        prec.ctime = t;
        ctx.put_inode(ino, &crec);
        ctx.put_inode(newparent, &prec);
        ctx.commit()?;
        gs.get_mut(&ino).unwrap().rec = crec;
        let p = gs.get_mut(&newparent).unwrap();
        p.rec = prec;
        let d = p.dir.as_mut().unwrap();
        d.add(
            newname,
            DEnt {
                child: ino,
                ftype: ft,
                slot,
            },
        );
        Ok(gs[&ino].attr())
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.remove(parent, name, true)
    }

    pub(super) fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let ns = nowait::write(&self.ns)?;
        let child = {
            let p = self.get(parent)?;
            let g = p.read()?;
            let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
            d.get(name).ok_or(FsError::NotFound)?.child
        };
        let mut gs = self.lock_many(&[parent, child])?;
        gs[&parent].fully_mutable()?;
        let c = &gs[&child];
        c.fully_mutable()?;
        if dir {
            let d = c.dir.as_ref().ok_or(FsError::NotDir)?;
            if !d.is_empty() {
                return Err(FsError::NotEmpty);
            }
            if child == ROOT_INO {
                return Err(FsError::Busy);
            }
        } else if c.is_dir() {
            return Err(FsError::IsDir);
        }
        let t = now();
        let dent = gs[&parent].dir.as_ref().and_then(|d| d.get(name));
        let dent_slot = dent.ok_or(FsError::NotFound)?.slot;
        let mut ctx = self.ctx_freeing()?;
        let mut crec = gs[&child].rec.clone();
        crec.nlink = if dir { 0 } else { crec.nlink.saturating_sub(1) };
        crec.ctime = t;
        let mut orphan = None;
        if crec.nlink == 0 {
            let s = ctx.slot_alloc(RecKind::Orphan)?;
            ctx.slot_write(s, &OrphanRec::Inode(child).encode());
            orphan = Some(s);
        }
        ctx.slot_free(RecKind::Dirent, dent_slot);
        let mut prec = gs[&parent].rec.clone();
        prec.mtime = t;
        prec.ctime = t;
        if dir {
            link_count_down(&mut prec.nlink)?;
        }
        ctx.put_inode(child, &crec);
        if parent != child {
            ctx.put_inode(parent, &prec);
        }
        ctx.commit()?;
        {
            let p = gs.get_mut(&parent).unwrap();
            p.rec = prec;
            let d = p.dir.as_mut().unwrap();
            d.remove(name);
        }
        let free_now = {
            let c = gs.get_mut(&child).unwrap();
            c.rec = crec;
            match orphan {
                Some(s) => {
                    c.orphan_slot = std::num::NonZeroU64::new(s);
                    c.open == 0
                }
                None => false,
            }
        };
        if free_now {
            // Freeing a large file takes many transactions: not under the
            // namespace lock (its orphan record makes the work crash-safe).
            let mut c = gs.remove(&child).expect("locked");
            drop(gs);
            drop(ns);
            self.free_inode(&mut c)?;
        }
        Ok(())
    }

    /// Free an inode whose link count is 0 and that nobody has open: extents in
    /// batches (each a consistent state), then the inode and its orphan record.
    pub(super) fn free_inode(&self, g: &mut Inode) -> FsResult<()> {
        let ino = g.ino;
        // Its blocks go back to the allocator: no direct access may outlive them.
        self.recall_layout(ino);
        loop {
            let mut ctx = self.ctx_freeing()?;
            // As many extents as the step's journal budget holds.
            let (ops, last) =
                self.unmap_walk(&mut ctx, g, 0, u64::MAX, Budget::Step(FREE_BATCH))?;
            if last {
                // Leave the inode table before the number can be reused: the
                // commit below returns it to the free inode map, and a create
                // on another thread may take it at once; removing the map
                // entry afterwards would remove that new inode. (The table
                // is a leaf lock: taking it under `meta` is in order.)
                self.inodes.write().remove(&ino);
                if g.rec.xattr_blocks > 0 {
                    ctx.blocks_free(g.rec.xattr_block, g.rec.xattr_blocks as u64)?;
                }
                if let Some(s) = g.orphan_slot {
                    ctx.slot_free(RecKind::Orphan, s.get());
                }
                ctx.free_ino(ino, g.rec.generation);
            }
            ctx.commit()?;
            for op in ops {
                self.apply_op(g, op);
            }
            if last {
                break;
            }
        }
        g.rec = InodeRec {
            generation: g.rec.generation.wrapping_add(1),
            ..Default::default()
        };
        g.orphan_slot = None;
        Ok(())
    }

    /// rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT
    /// (a whiteout made by this call belongs to root).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.rename_by(parent, name, newparent, newname, flags, Cred::ROOT)
    }

    /// rename(2) on behalf of `cred`, who owns the whiteout that
    /// RENAME_WHITEOUT leaves at the old name (a character device 0:0 with
    /// no permission bits, as overlayfs expects), made in the same
    /// transaction.
    pub fn rename_by(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        cred: Cred,
    ) -> FsResult<()> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let whiteout = flags & libc::RENAME_WHITEOUT != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0
            || (noreplace && exchange)
            || (whiteout && exchange)
        {
            return Err(FsError::Invalid);
        }
        check_name(newname).map_err(|e| {
            if e == FsError::Exists {
                FsError::Busy
            } else {
                e
            }
        })?;
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        let ns = self.ns.write();
        let lookup = |p: u64, n: &[u8]| -> FsResult<Option<DEnt>> {
            let r = self.get(p)?;
            let g = r.read()?;
            let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
            Ok(d.get(n))
        };
        let src = lookup(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = lookup(newparent, newname)?;
        if exchange && dst.is_none() {
            return Err(FsError::NotFound);
        }
        if noreplace && dst.is_some() {
            return Err(FsError::Exists);
        }
        if let Some(d) = &dst {
            if d.child == src.child {
                return Ok(());
            }
        }
        // A directory may not move below itself.
        // (Bounded: mount refuses a directory cycle, but a walk that cannot
        // end must not hang the namespace lock.)
        let limit = self.inodes.read().len() + 1;
        let is_ancestor = |anc: u64, mut node: u64| -> FsResult<bool> {
            for _ in 0..limit {
                if node == anc {
                    return Ok(true);
                }
                if node == ROOT_INO {
                    return Ok(false);
                }
                let r = self.get(node)?;
                let p = r.read()?.dir.as_ref().map(|d| d.parent).unwrap_or(ROOT_INO);
                node = p;
            }
            Err(FsError::Corrupt(format!(
                "directory {node} does not lead back to the root"
            )))
        };
        let src_dir = src.ftype as u32 == libc::S_IFDIR >> 12;
        let dst_dir = dst.as_ref().map(|d| d.ftype as u32 == libc::S_IFDIR >> 12);
        if src_dir && is_ancestor(src.child, newparent)? {
            return Err(FsError::Invalid);
        }
        if exchange {
            if dst_dir == Some(true) && is_ancestor(dst.as_ref().unwrap().child, parent)? {
                return Err(FsError::Invalid);
            }
        } else if let Some(dd) = dst_dir {
            if src_dir && !dd {
                return Err(FsError::NotDir);
            }
            if !src_dir && dd {
                return Err(FsError::IsDir);
            }
        }
        let mut inos = vec![parent, newparent, src.child];
        if let Some(d) = &dst {
            inos.push(d.child);
        }
        let mut gs = self.lock_many(&inos)?;
        // Inode flags: the moved inode (and a replaced one) must be fully
        // mutable, the directory losing an entry too, the one gaining one
        // not immutable.
        gs[&src.child].fully_mutable()?;
        gs[&parent].fully_mutable()?;
        gs[&newparent].not_immutable()?;
        if let Some(d) = &dst {
            gs[&d.child].fully_mutable()?;
            gs[&newparent].fully_mutable()?;
        }
        if let (Some(d), Some(true)) = (&dst, dst_dir) {
            if !exchange && !gs[&d.child].dir.as_ref().unwrap().is_empty() {
                return Err(FsError::NotEmpty);
            }
        }
        let t = now();
        let mut ctx = self.ctx_freeing()?;
        ctx.ensure_slots(RecKind::Dirent, 1)?;
        ctx.ensure_slots(RecKind::Orphan, 1)?;
        let mut recs: BTreeMap<u64, InodeRec> =
            gs.iter().map(|(k, v)| (*k, v.rec.clone())).collect();
        let mut orphan = None;
        let mut whiteout_ino = None;
        let new_slot;
        if exchange {
            let d = dst.unwrap();
            // Swap children of the two entries in place.
            ctx.slot_write(
                src.slot,
                &DirentRec {
                    parent,
                    child: d.child,
                    ftype: d.ftype,
                    name: name.to_vec(),
                }
                .encode(),
            );
            ctx.slot_write(
                d.slot,
                &DirentRec {
                    parent: newparent,
                    child: src.child,
                    ftype: src.ftype,
                    name: newname.to_vec(),
                }
                .encode(),
            );
            if parent != newparent {
                if src_dir {
                    link_count_down(&mut recs.get_mut(&parent).unwrap().nlink)?;
                    link_count_up(&mut recs.get_mut(&newparent).unwrap().nlink)?;
                }
                if dst_dir == Some(true) {
                    link_count_down(&mut recs.get_mut(&newparent).unwrap().nlink)?;
                    link_count_up(&mut recs.get_mut(&parent).unwrap().nlink)?;
                }
            }
            recs.get_mut(&d.child).unwrap().ctime = t;
            new_slot = d.slot;
        } else {
            if whiteout {
                // The old name now names a new whiteout inode (same slot).
                let mut wrec = self.new_inode_rec(&gs[&parent], libc::S_IFCHR, cred, 0);
                let wino = self.alloc_ino_for(&mut ctx, &mut wrec)?;
                ctx.slot_write(
                    src.slot,
                    &DirentRec {
                        parent,
                        child: wino,
                        ftype: ftype_byte(libc::S_IFCHR),
                        name: name.to_vec(),
                    }
                    .encode(),
                );
                ctx.put_inode(wino, &wrec);
                whiteout_ino = Some((wino, wrec));
            } else {
                ctx.slot_free(RecKind::Dirent, src.slot);
            }
            let dent = DirentRec {
                parent: newparent,
                child: src.child,
                ftype: src.ftype,
                name: newname.to_vec(),
            };
            if let Some(d) = &dst {
                ctx.slot_write(d.slot, &dent.encode());
                new_slot = d.slot;
                let vr = recs.get_mut(&d.child).unwrap();
                vr.ctime = t;
                if dst_dir == Some(true) {
                    vr.nlink = 0;
                    link_count_down(&mut recs.get_mut(&newparent).unwrap().nlink)?;
                } else {
                    link_count_down(&mut vr.nlink)?;
                }
                if recs[&d.child].nlink == 0 {
                    let s = ctx.slot_alloc(RecKind::Orphan)?;
                    ctx.slot_write(s, &OrphanRec::Inode(d.child).encode());
                    orphan = Some((d.child, s));
                }
            } else {
                let s = ctx.slot_alloc(RecKind::Dirent)?;
                ctx.slot_write(s, &dent.encode());
                new_slot = s;
            }
            if src_dir && parent != newparent {
                link_count_down(&mut recs.get_mut(&parent).unwrap().nlink)?;
                link_count_up(&mut recs.get_mut(&newparent).unwrap().nlink)?;
            }
        }
        recs.get_mut(&src.child).unwrap().ctime = t;
        for p in [parent, newparent] {
            let r = recs.get_mut(&p).unwrap();
            r.mtime = t;
            r.ctime = t;
        }
        for (ino, r) in &recs {
            if *r != gs[ino].rec {
                ctx.put_inode(*ino, r);
            }
        }
        ctx.commit()?;
        // DRAM.
        for (ino, r) in recs {
            gs.get_mut(&ino).unwrap().rec = r;
        }
        {
            let p = gs.get_mut(&parent).unwrap().dir.as_mut().unwrap();
            p.remove(name);
        }
        if exchange {
            let d = dst.unwrap();
            let p = gs.get_mut(&parent).unwrap().dir.as_mut().unwrap();
            p.add(
                name,
                DEnt {
                    child: d.child,
                    ftype: d.ftype,
                    slot: src.slot,
                },
            );
            if let Some(dd) = gs.get_mut(&d.child).unwrap().dir.as_mut() {
                dd.parent = parent;
            }
        }
        {
            let np = gs.get_mut(&newparent).unwrap().dir.as_mut().unwrap();
            if let Some(d) = &dst {
                debug_assert_eq!(np.get(newname).map(|e| e.slot), Some(d.slot));
                np.remove(newname);
            }
            np.add(
                newname,
                DEnt {
                    child: src.child,
                    ftype: src.ftype,
                    slot: new_slot,
                },
            );
        }
        if let Some(sd) = gs.get_mut(&src.child).unwrap().dir.as_mut() {
            sd.parent = newparent;
        }
        if let Some((wino, wrec)) = whiteout_ino {
            let p = gs.get_mut(&parent).unwrap().dir.as_mut().unwrap();
            p.add(
                name,
                DEnt {
                    child: wino,
                    ftype: ftype_byte(libc::S_IFCHR),
                    slot: src.slot,
                },
            );
            self.inodes
                .write()
                .insert(wino, node::Node::new(Inode::new(wino, wrec)));
        }
        if let Some((victim, s)) = orphan {
            let v = gs.get_mut(&victim).unwrap();
            v.orphan_slot = std::num::NonZeroU64::new(s);
            if v.open == 0 {
                // As in `remove`: outside the namespace lock.
                let mut v = gs.remove(&victim).expect("locked");
                drop(gs);
                drop(ns);
                self.free_inode(&mut v)?;
            }
        }
        Ok(())
    }

    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let _ns = self.ns.read();
        let r = self.get(ino)?;
        let g = r.read()?;
        let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry {
                offset: 1,
                ino,
                mode_type: libc::S_IFDIR,
                name: b".".to_vec(),
            });
        }
        if offset < 2 {
            out.push(DirEntry {
                offset: 2,
                ino: d.parent,
                mode_type: libc::S_IFDIR,
                name: b"..".to_vec(),
            });
        }
        for (name, e) in d.iter_from(offset.max(2) + 1) {
            if out.len() >= max {
                break;
            }
            out.push(DirEntry {
                offset: e.slot,
                ino: e.child,
                mode_type: (e.ftype as u32) << 12,
                name: name.to_vec(),
            });
        }
        drop(g);
        if offset == 0 {
            self.touch_atime(ino);
        }
        Ok(out)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let r = self.get(ino)?;
        let g = r.read()?;
        if g.ftype() != libc::S_IFLNK {
            return Err(FsError::Invalid);
        }
        let (_, e) = g
            .find(0)
            .ok_or_else(|| FsError::Corrupt(format!("symlink {ino} has no target block")))?;
        let n = g.rec.size.min(4095) as usize;
        Ok(self.media.read_vec(e.phys * BS, n)?)
    }

    pub fn statfs(&self) -> StatFs {
        let m = self.meta.lock();
        StatFs {
            blocks: m.space.data_blocks(),
            bfree: m.space.free_blocks(),
            bavail: m.space.free_blocks().saturating_sub(m.reserved),
            files: self.sb.inode_count,
            ffree: m.free_inos.free_total(),
            bsize: BS as u32,
            namelen: MAX_NAME as u32,
        }
    }
}

/// One link more (EMLINK guards the limit; a hostile count must not wrap).
fn link_count_up(n: &mut u32) -> FsResult<()> {
    *n = n
        .checked_add(1)
        .ok_or_else(|| FsError::Corrupt("link count overflow".into()))?;
    Ok(())
}

/// One link fewer (a count already at 0 is corruption, not a wrap to 2^32-1).
fn link_count_down(n: &mut u32) -> FsResult<()> {
    *n = n
        .checked_sub(1)
        .ok_or_else(|| FsError::Corrupt("link count below zero".into()))?;
    Ok(())
}
