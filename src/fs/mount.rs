//! Mounting: rebuild every DRAM index from the media (superblock, journal
//! recovery, bitmap, inode table, record chains, reverse map), reclaim
//! orphans, and mark the filesystem clean again at unmount.

use super::*;
use crate::check;

impl Fs {
    /// Does mounting this image read-write have work to do (journal replay,
    /// orphans)? True when the superblock says it was not cleanly unmounted
    /// (and nothing forbids writing it).
    pub fn needs_recovery(media: &Media) -> FsResult<bool> {
        let (sb, _) = read_superblock(media)?;
        Ok(!sb.clean && !sb.needs_read_only())
    }

    /// Mount: recover the journal, load every index, reclaim orphans.
    pub fn mount(media: Media, opts: FsOptions) -> FsResult<Fs> {
        let (mut sb, problems) = read_superblock(&media)?;
        for p in &problems {
            log::warn!("{p}; using the other copy");
        }
        if sb.needs_read_only() && !(opts.read_only || media.read_only()) {
            return Err(FsError::RoCompat(sb.ro_compat));
        }
        if !sb.clean && opts.norecovery {
            log::warn!("the filesystem was not cleanly unmounted and is mounted without recovery (norecovery): orphans are kept");
        } else if !sb.clean {
            log::info!("the filesystem was not cleanly unmounted; recovering");
        }
        let ro = opts.read_only || media.read_only();
        if opts.norecovery && !ro {
            return Err(FsError::Invalid);
        }
        let geo = journal_geometry(&sb, media.len());
        if ro && !opts.norecovery {
            let (_, st) = Journal::inspect(&media, geo)?;
            if matches!(st, format::TxState::Committed { .. }) {
                return Err(FsError::Corrupt(
                    "the journal holds a committed transaction that needs replay; mount read-write or run fsck-daxlink -y".into(),
                ));
            }
        }
        // Read-only: nothing is written (a committed transaction was refused
        // above, unless norecovery).
        let (journal, recovery) = Journal::open(&media, geo, !ro)?;
        match &recovery {
            Recovery::Clean => {}
            // Read-only: `open` wrote nothing (norecovery).
            Recovery::Replayed { seq, entries } if ro => log::warn!(
                "journal: transaction {seq} ({entries} entries) is committed but not replayed (norecovery): what this mount shows may be inconsistent"
            ),
            Recovery::Replayed { seq, entries } => {
                log::info!("journal: replayed transaction {seq} ({entries} entries)")
            }
            Recovery::DiscardedTorn { seq } => {
                log::info!("journal: discarded torn transaction {seq}")
            }
        }
        let roots = Roots::decode(&media.read_vec(sb.roots_block * BS, format::ROOTS_SIZE)?)?;
        roots.check_marks(&sb)?;
        // Only the initialized part of the bitmap and of the inode table is
        // read: the rest is free whatever it holds.
        let space = Space::load(&media, &sb, roots.bitmap_init)?;

        // Inodes.
        let mut inodes: HashMap<u64, Inode> = HashMap::new();
        let mut free_inos = ctx::InoMap::new(sb.inode_count, roots.inode_init);
        // Read the inode table a chunk at a time.
        let per_chunk = 4096u64;
        let mut ino = 1u64;
        while ino <= roots.inode_init {
            let n = per_chunk.min(roots.inode_init - ino + 1);
            let buf = media.read_vec(sb.inode_offset(ino), (n as usize) * format::INODE_SIZE)?;
            for (i, slot) in buf.chunks_exact(format::INODE_SIZE).enumerate() {
                let this = ino + i as u64;
                let rec = InodeRec::decode(slot)
                    .map_err(|e| FsError::Corrupt(format!("inode {this}: {e}")))?;
                if rec.is_free() {
                    free_inos.insert(this);
                } else {
                    // The xattr pointer only: the blob is read at first use.
                    check::xattr_ptr(&sb, &rec).map_err(|why| {
                        FsError::Corrupt(format!("inode {this}: xattr blob: {why}"))
                    })?;
                    inodes.insert(this, Inode::new(this, rec));
                }
            }
            ino += n;
        }
        match inodes.get(&ROOT_INO) {
            Some(r) if r.is_dir() => {}
            _ => return Err(FsError::Corrupt("root inode is not a directory".into())),
        }
        inodes
            .get_mut(&ROOT_INO)
            .unwrap()
            .dir
            .as_mut()
            .unwrap()
            .parent = ROOT_INO;

        let mut rec = Records::new(roots.heads);
        let mut chains = Chains {
            media: &media,
            sb: &sb,
            roots: &roots,
            rec: &mut rec,
        };
        // Extents, by the rules fsck applies (`check::extent`).
        chains.load(|off, x: ExtentRec| {
            let owner = inodes.get_mut(&x.ino);
            let mode = owner.as_ref().map(|i| i.rec.mode);
            check::extent(&sb, &x, mode, |l, n| {
                owner.as_ref().and_then(|i| i.extents.overlapping(l, n))
            })
            .map_err(|f| FsError::Corrupt(format!("{} {f}", check::extent_what(off, &x))))?;
            if let Some(ino) = owner {
                ino.mapped += x.len as u64;
                ino.extents.insert(
                    x.logical,
                    Ext {
                        phys: x.phys,
                        len: x.len as u64,
                        slot: off,
                    },
                );
            }
            Ok(())
        })?;
        // Directory entries, by the tree rules fsck applies (`check::dirent`,
        // `check::walk_up`).
        let mut dirents = Vec::new();
        chains.load(|off, d: DirentRec| {
            dirents.push((off, d));
            Ok(())
        })?;
        let mut dir_named: HashMap<u64, u64> = HashMap::new();
        for (off, d) in dirents {
            let parent = inodes.get(&d.parent).and_then(|p| p.dir.as_ref());
            let child_mode = inodes.get(&d.child).map(|c| c.rec.mode);
            let ctx = check::DirentCtx {
                parent_is_dir: parent.is_some(),
                child_mode,
                name_taken: parent.is_some_and(|p| p.contains(&d.name)),
                named_in: dir_named.get(&d.child).copied(),
            };
            check::dirent(&d, &ctx)
                .map_err(|f| FsError::Corrupt(f.message(&check::dirent_what(off, &d), &d)))?;
            if let Some(c) = inodes.get_mut(&d.child).and_then(|c| c.dir.as_mut()) {
                c.parent = d.parent;
                dir_named.insert(d.child, d.parent);
            }
            if let Some(p) = inodes.get_mut(&d.parent).and_then(|p| p.dir.as_mut()) {
                p.add(
                    &d.name,
                    DEnt {
                        child: d.child,
                        ftype: d.ftype,
                        slot: off,
                    },
                );
            }
        }
        // Every named directory leads up to the root or to a directory no
        // entry names (fsck reconnects it): no cycle.
        for &start in dir_named.keys() {
            let up = check::walk_up(start, |n| dir_named.get(&n).copied(), |n| n == ROOT_INO);
            if let check::Up::Cycle { child, parent } = up {
                return Err(FsError::Corrupt(format!(
                    "directory {child} (in directory {parent}) {}",
                    check::IN_CYCLE
                )));
            }
        }
        // Orphans.
        let mut orphans = Vec::new();
        chains.load(|off, o: OrphanRec| {
            orphans.push((off, o));
            Ok(())
        })?;
        // Reference counts of shared ranges, by the rules fsck applies.
        let mut refs: BTreeMap<u64, ctx::Ref> = BTreeMap::new();
        chains.load(|off, r: RefcountRec| {
            let overlap = |p, n| check::overlapping(&refs, p, n, |x| x.len);
            if let Some(why) = check::refcount(&sb, &r, overlap) {
                return Err(FsError::Corrupt(format!(
                    "refcount record at {off:#x} {why}"
                )));
            }
            refs.insert(
                r.phys,
                ctx::Ref {
                    len: r.len,
                    count: r.count,
                    slot: off,
                },
            );
            Ok(())
        })?;

        // The chains hand out a file's extents newest block first, which
        // splits the extent map's chunks half full: refill them in order.
        for i in inodes.values_mut() {
            i.extents.compact();
            if let Some(d) = i.dir.as_mut() {
                d.compact();
            }
        }
        let meta = Meta {
            refs,
            space,
            rec,
            journal,
            free_inos,
            broken: false,
            reserved: ctx::reserve_for(sb.data_blocks()),
        };
        let fs = Fs {
            media: Arc::new(media),
            sb: sb.clone(),
            pages: Pages::new(opts.page_model, opts.layout_timeout),
            rmap: Mutex::new(RMap::new()),
            opts: FsOptions {
                read_only: ro,
                ..opts.clone()
            },
            ro: std::sync::atomic::AtomicBool::new(ro),
            ns: RwLock::new(()),
            inodes: RwLock::new(
                inodes
                    .into_iter()
                    .map(|(k, v)| (k, node::Node::new(v)))
                    .collect(),
            ),
            meta: Mutex::new(meta),
            next_fh: AtomicU64::new(1),
            counters: Default::default(),
            recovery,
            lazy_times: Default::default(),
            recall: Default::default(),
        };
        {
            // In the map's order, so that its chunks fill (inserted in the
            // inode table's hash order they would be split half full).
            let mut all = Vec::new();
            for r in fs.inodes.read().values() {
                let g = r.read()?;
                all.extend(g.extents.iter().map(|(l, e)| (e.phys, g.ino, l, e.len)));
            }
            all.sort_unstable();
            let mut rm = fs.rmap.lock();
            for (p, ino, l, len) in all {
                rm.insert(p, ino, l, len);
            }
        }
        if !ro {
            for (off, o) in orphans {
                match o {
                    OrphanRec::Inode(ino) => {
                        let Ok(r) = fs.get(ino) else {
                            log::warn!("orphan record for free inode {ino}: dropping it");
                            let mut ctx = fs.ctx()?;
                            ctx.slot_free(RecKind::Orphan, off);
                            ctx.commit()?;
                            continue;
                        };
                        let mut g = r.write()?;
                        if g.rec.nlink > 0 {
                            log::warn!("orphan record for linked inode {ino}: dropping it");
                            let mut ctx = fs.ctx()?;
                            ctx.slot_free(RecKind::Orphan, off);
                            ctx.commit()?;
                            continue;
                        }
                        g.orphan_slot = std::num::NonZeroU64::new(off);
                        log::info!("reclaiming orphan inode {ino}");
                        fs.free_inode(&mut g)?;
                    }
                    OrphanRec::Truncate { ino, from } => {
                        log::info!("finishing the truncate of inode {ino} from block {from}");
                        match fs.get(ino) {
                            Ok(r) => {
                                let mut g = r.write()?;
                                fs.unmap_tail(&mut g, from, Some(off))?;
                            }
                            Err(_) => {
                                let mut ctx = fs.ctx()?;
                                ctx.slot_free(RecKind::Orphan, off);
                                ctx.commit()?;
                            }
                        }
                    }
                    OrphanRec::Range { op, ino, from, end } => {
                        fs.resume_range(off, op, ino, from, end)?;
                    }
                    OrphanRec::Remap {
                        src,
                        dst,
                        sb,
                        db,
                        blocks,
                    } => {
                        fs.resume_remap(off, (src, dst), (sb, db, blocks))?;
                    }
                    OrphanRec::Blocks { phys, len } => {
                        log::info!("reclaiming deferred free of blocks {phys}+{len}");
                        let mut ctx = fs.ctx()?;
                        ctx.blocks_free(phys, len)?;
                        ctx.slot_free(RecKind::Orphan, off);
                        ctx.commit()?;
                    }
                }
            }
            // Record blocks left empty (by a daxlink before they were
            // released, or a transaction without journal room for it).
            let empty = fs.meta.lock().rec.empty_blocks();
            for batch in empty.chunks(128) {
                log::info!("releasing {} empty record blocks", batch.len());
                let mut ctx = fs.ctx_freeing()?;
                ctx.release_blocks(batch.to_vec());
                ctx.commit()?;
            }
            sb.clean = false;
            sb.next_generation();
            sb.mount_count = sb.mount_count.saturating_add(1);
            write_superblocks(&fs.media, &sb)?;
        }
        release_free_heap();
        Ok(fs)
    }

    /// Mark the filesystem cleanly unmounted.
    pub fn unmount(&self) -> FsResult<()> {
        // Read-only (also after a remount, which marked it clean), or shut
        // down (FS_IOC_SHUTDOWN: the next mount recovers, as after a crash).
        if self.read_only() || self.media.is_shut_down() {
            return Ok(());
        }
        self.close_everything()?;
        self.flush_lazy_times(None)?;
        // Write back device writes still in the CPU cache, as sync at unmount does.
        for b in self.pages.all_dirty() {
            self.media.flush(b * BS, BS)?;
        }
        self.media.fence();
        let broken = self.meta.lock().broken;
        let (mut sb, _) = read_superblock(&self.media)?;
        sb.clean = !broken;
        sb.next_generation();
        write_superblocks(&self.media, &sb)
    }
}

impl Fs {
    /// At a clean unmount no file is open any more, but the kernel drops
    /// the RELEASE requests still queued when the connection ends: end
    /// every pin and free every unlinked inode here, as the RELEASEs would
    /// have, so that no orphan survives a clean unmount.
    fn close_everything(&self) -> FsResult<()> {
        for id in self.pages.pin_ids() {
            self.unpin(id)?;
        }
        for ino in self.inode_numbers() {
            let Ok(r) = self.get(ino) else { continue };
            let mut g = r.write()?;
            g.open = 0;
            if g.rec.nlink == 0 && g.orphan_slot.is_some() {
                self.free_inode(&mut g)?;
            }
        }
        Ok(())
    }
}

/// Give the heap's free pages back to the kernel. Building the indexes
/// at mount leaves freed temporaries (chain buffers, the sorted reverse-map
/// list, maps rebuilt in order) in the middle of the heap, where they would
/// stay resident for the life of the mount.
fn release_free_heap() {
    crate::util::heap::release_free();
}

/// The record chains of the image being mounted.
struct Chains<'a> {
    media: &'a Media,
    sb: &'a Superblock,
    roots: &'a Roots,
    rec: &'a mut Records,
}

impl Chains<'_> {
    /// Load the chain of `R`: every record, in chain order, to `f(slot
    /// offset, record)`; the chain's blocks and free slots to the record
    /// allocator. A bad link, a record that does not decode, or an error
    /// of `f` fails the mount.
    fn load<R: format::Record>(
        &mut self,
        mut f: impl FnMut(u64, R) -> FsResult<()>,
    ) -> FsResult<()> {
        let mut free = Vec::new();
        let head = self.roots.heads[R::KIND.index()];
        let order = walk_chain(self.media, self.sb, R::KIND, head, |off, b| {
            match format::decode_slot::<R>(b)
                .map_err(|e| FsError::Corrupt(format!("record at {off:#x}: {e}")))?
            {
                None => free.push(off),
                Some(r) => f(off, r)?,
            }
            Ok(())
        })?;
        self.rec.load_chain(R::KIND, &order, &free);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::make::{mkfs, MkfsOptions};

    const C: Cred = Cred {
        uid: 0,
        gid: 0,
        umask: 0o022,
    };

    fn open(path: &std::path::Path, read_only: bool) -> Media {
        Media::open(path, None, read_only).unwrap()
    }

    fn ro(norecovery: bool) -> FsOptions {
        FsOptions {
            read_only: true,
            norecovery,
            ..FsOptions::default()
        }
    }

    /// An image cut between a transaction's commit and its apply (the
    /// create of `b` is committed in the journal, nothing of it is in
    /// place): `norecovery` shows the image as it is and writes nothing;
    /// a read-write mount replays it.
    #[test]
    fn norecovery_shows_the_image_as_it_is_and_writes_nothing() {
        let len = 2048 * BS;
        let m = Media::anonymous(len).unwrap();
        mkfs(&m, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        fs.mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
            .unwrap();
        let before = fs.media.read_vec(0, len as usize).unwrap();
        fs.mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
            .unwrap();
        let after = fs.media.read_vec(0, len as usize).unwrap();
        let geo = journal_geometry(&fs.sb, len);
        // The journal area (past its header) of `after`, the rest of `before`.
        let area =
            ((geo.start_block + 1) * BS) as usize..((geo.start_block + geo.blocks) * BS) as usize;
        let mut cut = before;
        cut[area.clone()].copy_from_slice(&after[area]);
        let file = tempfile::Builder::new().tempfile_in("/dev/shm").unwrap();
        std::fs::write(file.path(), &cut).unwrap();

        let fs = Fs::mount(open(file.path(), true), ro(true)).unwrap();
        assert!(fs.lookup(ROOT_INO, b"a").is_ok());
        assert!(matches!(fs.lookup(ROOT_INO, b"b"), Err(FsError::NotFound)));
        assert!(matches!(
            fs.mknod(ROOT_INO, b"c", libc::S_IFREG | 0o644, 0, C),
            Err(FsError::ReadOnly)
        ));
        assert!(matches!(fs.set_read_only(false), Err(FsError::ReadOnly)));
        fs.unmount().unwrap();
        drop(fs);
        assert!(
            std::fs::read(file.path()).unwrap() == cut,
            "norecovery wrote"
        );
        // Read-only without norecovery refuses it (the mount tool recovers
        // it read-write first), and norecovery without read-only is refused.
        assert!(Fs::mount(open(file.path(), true), ro(false)).is_err());
        let rw_norecovery = FsOptions {
            norecovery: true,
            ..FsOptions::default()
        };
        assert!(matches!(
            Fs::mount(open(file.path(), false), rw_norecovery),
            Err(FsError::Invalid)
        ));
        // On writable media too, norecovery writes nothing.
        let fs = Fs::mount(open(file.path(), false), ro(true)).unwrap();
        assert!(matches!(fs.lookup(ROOT_INO, b"b"), Err(FsError::NotFound)));
        fs.unmount().unwrap();
        drop(fs);
        assert!(
            std::fs::read(file.path()).unwrap() == cut,
            "norecovery wrote"
        );
        let fs = Fs::mount(open(file.path(), false), FsOptions::default()).unwrap();
        assert!(
            fs.lookup(ROOT_INO, b"b").is_ok(),
            "a read-write mount replays"
        );
        fs.unmount().unwrap();
    }
}
