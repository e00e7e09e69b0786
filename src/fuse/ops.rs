//! The fuser::Filesystem implementation: one handler per FUSE opcode,
//! each translating its arguments for the core, running in `guarded`, and
//! turning the core's answer into a reply (errno at this edge). Long
//! operations finish on the long-operation threads (`long.rs`); the
//! opcodes the io_uring rings also answer call the shared functions of
//! `serve.rs`.

use super::*;

impl Filesystem for DaxFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        // POSIX_ACL: the kernel evaluates ACLs (fetched with getxattr) and
        // leaves mode/ACL consistency and inheritance to us; DONT_MASK: it
        // passes the umask instead of applying it (a default ACL replaces it).
        // EXPORT_SUPPORT: file handles (inode number + generation) survive
        // the kernel's cache and remounts; it looks them up as "." / "..".
        // DO_READDIRPLUS without READDIRPLUS_AUTO: every listing carries the
        // attributes, since the kernel keeps listings (FOPEN_CACHE_DIR) and
        // a later stat of a cached listing's names would cost a LOOKUP each.
        let want = InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let want = if self.cache.writeback {
            want | InitFlags::FUSE_WRITEBACK_CACHE
        } else {
            want
        };
        if let Err(missing) = config.add_capabilities(want) {
            let _ = config.add_capabilities(want & !missing);
        }
        let v = config.kernel_abi();
        let _ = self
            .transport
            .offer
            .set((config.capabilities().bits(), v.0, v.1));
        if self.transport.want_uring && !self.is_twin {
            let granted = config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
            self.transport
                .granted
                .store(granted, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if self.is_twin {
            return;
        }
        if let Some(r) = self.transport.running.lock().take() {
            r.stop();
        }
        self.long.wait_idle();
        if let Some(d) = &self.direct {
            d.stop();
        }
        self.finish();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.serve_lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(a.generation as u64)),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.serve_getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let o = origin(req);
        let body = move |me: &DaxFuse| {
            let t = |v: Option<TimeOrNow>| {
                v.map(|x| match x {
                    TimeOrNow::Now => SetTime::Now,
                    TimeOrNow::SpecificTime(s) => SetTime::At(timespec(s)),
                })
            };
            let s = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: t(atime),
                mtime: t(mtime),
                clear_mode: me.setid_bits_to_clear(o, ino.0, uid.or(gid).is_some(), size),
            };
            // A truncate whose caller is killed runs to its end, but the
            // caller gets its answer at the next step and is gone: the
            // attributes it would get (the new size is committed; only
            // freeing the blocks past it is left), so that the kernel drops
            // its cached pages past the new size at once.
            let slot = std::rc::Rc::new(std::cell::Cell::new(Some(reply)));
            let early = slot.clone();
            let answer_now = move |a: &Attr| {
                if let Some(r) = early.take() {
                    r.attr(&TTL, &file_attr(a));
                }
            };
            let r = crate::fs::stop::detaching(answer_now, || me.fs.setattr(ino.0, &s));
            match slot.take() {
                Some(reply) => match r {
                    Ok(a) => reply.attr(&TTL, &file_attr(&a)),
                    Err(e) => reply.error(errno(&e)),
                },
                // Answered early: the block count it carried is stale now,
                // and an error of the rest has nobody to go to but the log.
                None => {
                    if let Err(e) = &r {
                        log::warn!("truncate of inode {} after its caller was gone: {e}", ino.0);
                    }
                    me.invalidate_attrs(ino.0)
                }
            }
        };
        // A truncate may free a whole file's blocks.
        if size.is_some() {
            self.long(req, "setattr", body);
        } else {
            guarded("setattr", || body(self));
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            self.entry(
                self.fs
                    .mknod(parent.0, name.as_bytes(), mode, rdev, cred(req, umask)),
                reply,
            )
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            self.entry(
                self.fs
                    .mkdir(parent.0, name.as_bytes(), mode, cred(req, umask)),
                reply,
            )
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.serve_unlink(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            empty(self.fs.rmdir(parent.0, name.as_bytes()), reply)
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            self.entry(
                self.fs.symlink(
                    parent.0,
                    link_name.as_bytes(),
                    target.as_os_str().as_bytes(),
                    cred(req, 0),
                ),
                reply,
            )
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            empty(
                self.fs.rename_by(
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    flags.bits(),
                    cred(req, 0),
                ),
                reply,
            )
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            self.entry(self.fs.link(ino.0, newparent.0, newname.as_bytes()), reply)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.serve_open(ino.0, flags.0) {
            Ok((fh, f)) => reply.opened(FileHandle(fh), f),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.serve_read(ino.0, offset, size as usize, |r| match r {
            Ok(d) => reply.data(d),
            Err(e) => reply.error(Errno::from_i32(e)),
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.serve_write(
            origin(req),
            ino.0,
            fh.0,
            offset,
            data,
            write_flags.bits(),
            flags.0,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Sent only under the writeback cache (which ignores FOPEN_NOFLUSH),
        // after the kernel wrote the file's dirty pages back: ENOSYS turns
        // FLUSH off for the rest of the mount, and close goes on with 0.
        counters::entered("flush");
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.serve_release(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || empty(self.fs.fsync(ino.0), reply));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // An open directory, like an open file, outlives its last name
        // (rmdir, or rename of another directory over it) until released.
        guarded("opendir", || match self.fs.getattr(ino.0) {
            Ok(a) if a.is_dir() => match self.fs.open(ino.0) {
                Ok(fh) => reply.opened(FileHandle(fh), self.opendir_flags(ino.0)),
                Err(e) => reply.error(errno(&e)),
            },
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        guarded("releasedir", || empty(self.fs.close(ino.0), reply));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            let r = walk_dir(&self.fs, ino.0, offset, false, |e, _| {
                let name = OsStr::from_bytes(&e.name);
                reply.add(INodeNo(e.ino), e.offset, kind(e.mode_type), name)
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guarded("readdirplus", || {
            let r = walk_dir(&self.fs, ino.0, offset, true, |e, a| {
                let Some(a) = a else { return false };
                let (name, gen) = (OsStr::from_bytes(&e.name), Generation(a.generation as u64));
                reply.add(INodeNo(e.ino), e.offset, name, &TTL, &file_attr(a), gen)
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || empty(self.fs.fsync(ino.0), reply));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || {
            let s = self.fs.statfs();
            reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            );
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            // Only an access ACL needs to know the caller's groups (setgid
            // clearing): read /proc for that one name alone.
            let who = (name.as_bytes() == crate::check::acl::ACCESS).then(|| caller(req).who());
            empty(
                self.fs
                    .setxattr_by(ino.0, name.as_bytes(), Some(value), flags, who.as_ref()),
                reply,
            )
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.serve_getxattr(ino.0, name.as_bytes()) {
            Ok(v) => xattr_reply(v, size, reply),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                xattr_reply(buf, size, reply)
            }
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            empty(self.fs.setxattr(ino.0, name.as_bytes(), None, 0), reply)
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.serve_create(cred(req, umask), parent.0, name.as_bytes(), mode, flags) {
            Ok((a, fh, f)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(a.generation as u64),
                FileHandle(fh),
                f,
            ),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let o = origin(req);
        let in_data = in_data.to_vec();
        let body = move |me: &DaxFuse| match me.do_ioctl(o, ino.0, fh.0, cmd, &in_data) {
            Ok(out) if out.len() <= out_size as usize => reply.ioctl(0, &out),
            Ok(_) => reply.error(Errno::EIO),
            Err(FsError::NotTty) => {
                log::debug!("unknown ioctl {cmd:#x}");
                reply.error(Errno::ENOTTY)
            }
            Err(e) => reply.error(errno(&e)),
        };
        use crate::fuse::ioctl as io;
        if [io::CLONE, io::DEDUPE, io::UNSHARE, io::PIN].contains(&cmd) {
            self.long(req, "ioctl", body);
        } else {
            guarded("ioctl", || body(self));
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let o = origin(req);
        self.long(req, "fallocate", move |me| {
            let r = me
                .file_modified(o, ino.0)
                .and_then(|()| me.fs.fallocate(ino.0, offset, length, mode));
            empty(r, reply)
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        guarded("lseek", || {
            if offset < 0 {
                return reply.error(Errno::ENXIO);
            }
            match self.fs.lseek(ino.0, offset as u64, whence) {
                Ok(o) => reply.offset(o as i64),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Block-aligned parts become shared extents; the rest is copied.
        let o = origin(req);
        self.long(req, "copy_file_range", move |me| {
            let len = len.min(u32::MAX as u64 & !4095);
            // Under FUSE_HANDLE_KILLPRIV_V2 the kernel leaves the set-ID
            // bits of the destination to us, as for a write.
            if len > 0 {
                if let Err(e) = me.file_modified(o, ino_out.0) {
                    reply.error(errno(&e));
                    return;
                }
            }
            match me
                .fs
                .copy_range(ino_in.0, offset_in, ino_out.0, offset_out, len)
            {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}
