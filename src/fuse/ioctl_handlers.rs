//! The FUSE adapter's ioctls: daxlink's private ones (`crate::fuse::ioctl`), the
//! inode-flag ioctls the kernel re-sends to FUSE (chattr, lsattr), remount
//! and FS_IOC_SHUTDOWN. Each lets a caller do only what ordinary syscalls
//! would let it do (docs/INTERNALS.md, "FUSE ioctls and notifier").

use super::*;

/// CAP_IPC_LOCK: lifts RLIMIT_MEMLOCK in the kernel, the per-user pin caps here.
const CAP_IPC_LOCK: u32 = 14;

/// `{"block", "owners":[{"inode","path","offset"}], "pins":[...],
/// "hidden_owners", "poisoned"}`
pub fn owners_json(r: &crate::fs::OwnersReport) -> String {
    serde_json::json!({
        "block": r.block,
        "owners": r.owners.iter().map(|o| serde_json::json!({
            "inode": o.ino, "path": o.path, "offset": o.offset,
        })).collect::<Vec<_>>(),
        "pins": r.pins.iter().map(|p| serde_json::json!({
            "id": p.id, "inode": p.ino, "offset": p.offset, "write": p.write,
            "longterm": p.longterm, "holder": p.holder,
        })).collect::<Vec<_>>(),
        "leases": r.leases.iter().map(|l| serde_json::json!({
            "id": l.id, "inode": l.ino, "pid": l.pid, "uid": l.uid, "write": l.write,
            "holder": l.holder,
        })).collect::<Vec<_>>(),
        "hidden_owners": r.hidden_owners,
        "poisoned": r.poisoned,
    })
    .to_string()
}

/// `[{"logical","physical","length","shared","refcount"}...]`: logical offset and
/// length in bytes, physical block number.
pub fn extents_json(e: &[crate::fs::ExtentInfo]) -> String {
    let v: Vec<serde_json::Value> = e
        .iter()
        .map(|x| {
            serde_json::json!({
                "logical": x.logical * 4096,
                "physical": x.physical,
                "length": x.length * 4096,
                "shared": x.refcount > 1,
                "refcount": x.refcount,
            })
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

impl DaxFuse {
    /// The inode behind descriptor `fd` of the requesting thread, which must
    /// be open for reading on this filesystem: how FICLONERANGE and
    /// FIDEDUPERANGE name their source (EBADF, or EXDEV for another
    /// filesystem, as the kernel answers).
    pub(super) fn source_fd(&self, o: Origin, fd: u64) -> Result<u64, FsError> {
        let fd = i32::try_from(fd).map_err(|_| FsError::BadFd)?;
        let f = who::open_file(o.pid, fd).ok_or(FsError::BadFd)?;
        if !f.readable() {
            return Err(FsError::BadFd);
        }
        match self.dev.get() {
            Some(d) if *d == f.dev => Ok(f.ino),
            Some(_) => Err(FsError::CrossDev),
            None => Err(FsError::BadFd),
        }
    }

    /// Serve one of daxlink's private ioctls (see `crate::fuse::ioctl`).
    pub(super) fn do_ioctl(
        &self,
        o: Origin,
        ino: u64,
        fh: u64,
        cmd: u32,
        input: &[u8],
    ) -> Result<Vec<u8>, FsError> {
        use crate::fuse::ioctl as io;
        if !io::SERVED.contains(&cmd) {
            return Err(FsError::NotTty);
        }
        match cmd {
            io::CLONE | io::DEDUPE => {
                let a = io::RemapArgs::decode(input).ok_or(FsError::Invalid)?;
                if !self.writable(fh) {
                    return Err(FsError::BadFd);
                }
                let src = self.source_fd(o, a.src_fd)?;
                let mut out = input.to_vec();
                if cmd == io::CLONE {
                    // New contents: set-ID bits go as for a write. A dedupe
                    // changes no byte and keeps them (as the VFS's remap prep).
                    self.file_modified(o, ino)?;
                    let n = self.fs.clone_range(src, a.src_off, ino, a.dst_off, a.len)?;
                    io::put_u64(&mut out, 32, n);
                } else {
                    let (st, n) = self
                        .fs
                        .dedupe_range(src, a.src_off, ino, a.dst_off, a.len)?;
                    io::put_u32(
                        &mut out,
                        32,
                        (st == crate::fs::DedupeStatus::Differs) as u32,
                    );
                    io::put_u64(&mut out, 40, n);
                }
                self.invalidate(ino);
                Ok(out)
            }
            io::UNSHARE => {
                if !self.writable(fh) {
                    return Err(FsError::BadFd);
                }
                let off = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                let len = io::get_u64(input, 8).ok_or(FsError::Invalid)?;
                self.fs.unshare(ino, off, len)?;
                Ok(Vec::new())
            }
            io::EXTENTS => {
                // The physical layout, as FIEMAP gives it: to a reader.
                if !self.readable(fh) {
                    return Err(FsError::BadFd);
                }
                let start = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                // One page, never the whole list: a file may have millions.
                let (page, next) = self.fs.extents_page(ino, start, io::EXTENTS_MAX)?;
                let mut out = vec![0u8; io::EXTENTS_HDR + page.len() * io::EXTENT_ENTRY];
                io::put_u32(&mut out, 0, page.len() as u32);
                io::put_u32(&mut out, 4, next.is_some() as u32);
                io::put_u64(&mut out, 8, next.unwrap_or(0));
                for (i, e) in page.iter().enumerate() {
                    let o = io::EXTENTS_HDR + i * io::EXTENT_ENTRY;
                    io::put_u64(&mut out, o, e.logical);
                    io::put_u64(&mut out, o + 8, e.physical);
                    io::put_u64(&mut out, o + 16, e.length);
                    io::put_u32(&mut out, o + 24, e.refcount);
                }
                Ok(out)
            }
            io::STAT => {
                let s = self.fs.share_stats();
                let st = self.fs.statfs();
                let mut out = vec![0u8; io::STAT_SIZE];
                for (i, v) in [
                    s.shared_blocks,
                    s.saved_blocks,
                    s.refcount_records,
                    st.blocks,
                    st.bfree,
                    s.record_blocks,
                ]
                .into_iter()
                .enumerate()
                {
                    io::put_u64(&mut out, i * 8, v);
                }
                Ok(out)
            }
            io::PIN => {
                let off = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                let len = io::get_u64(input, 8).ok_or(FsError::Invalid)?;
                let flags = io::get_u32(input, 16).ok_or(FsError::Invalid)?;
                if flags & !(io::PIN_WRITE | io::PIN_LONGTERM) != 0 {
                    return Err(FsError::Invalid);
                }
                // As pin_user_pages of a shared mapping of this open file:
                // mapping needs it open for reading, a write pin for writing too.
                let write = flags & io::PIN_WRITE != 0;
                let fd_writable = self.writable(fh);
                if !self.readable(fh) || (write && !fd_writable) {
                    return Err(FsError::BadFd);
                }
                // Charged to the caller; the per-user caps spare CAP_IPC_LOCK,
                // as RLIMIT_MEMLOCK does.
                let by = crate::fs::PinCaller {
                    uid: o.uid,
                    limit_user: !o.caller().has_cap(CAP_IPC_LOCK),
                    fd_writable,
                };
                let longterm = flags & io::PIN_LONGTERM != 0;
                let id = self.fs.pin_as(ino, fh, off, len, (write, longterm), by)?;
                // A write pin may have moved blocks (unshare): drop stale cached pages.
                self.invalidate(ino);
                let mut out = input.to_vec();
                io::put_u64(&mut out, 24, id);
                Ok(out)
            }
            io::UNPIN => {
                let id = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                match self.fs.pages.pin_owner(id) {
                    Some((holder, _)) if holder == fh => {}
                    Some(_) => return Err(FsError::Perm),
                    None => return Err(FsError::Invalid),
                }
                self.fs.unpin(id)?;
                Ok(Vec::new())
            }
            io::DMA_WRITE | io::DMA_READ => {
                let id = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                let off = io::get_u64(input, 8).ok_or(FsError::Invalid)?;
                let len = io::get_u32(input, 16).ok_or(FsError::Invalid)? as usize;
                if len > io::DMA_MAX || input.len() < 24 + len {
                    return Err(FsError::Invalid);
                }
                // The device acts through the open file that registered the
                // pin (a write needs a write pin: the core refuses with EPERM).
                match self.fs.pages.pin_owner(id) {
                    Some((holder, i)) if i == ino && holder == fh => {}
                    Some((_, i)) if i == ino => return Err(FsError::Perm),
                    _ => return Err(FsError::Invalid),
                }
                if cmd == io::DMA_WRITE {
                    // Not through a descriptor that may not write the file,
                    // in any model: legacy accepts a device write through a
                    // read pin (S3), but only its writer's.
                    if !self.writable(fh) {
                        return Err(FsError::BadFd);
                    }
                    let owners = self.fs.dma_write(id, off, &input[24..24 + len])?;
                    // The kernel's page cache must not hide what the device wrote.
                    for o in owners.into_iter().chain([ino]) {
                        self.invalidate(o);
                    }
                    Ok(Vec::new())
                } else {
                    let data = self.fs.dma_read(id, off, len as u64)?;
                    let mut out = vec![0u8; 24 + data.len()];
                    out[..24].copy_from_slice(&input[..24]);
                    out[24..].copy_from_slice(&data);
                    Ok(out)
                }
            }
            io::POISON => {
                // Simulated hardware failure, destroying data of every owner:
                // root's, as memory-failure injection is (CAP_SYS_ADMIN).
                if !o.caller().has_cap(who::CAP_SYS_ADMIN) {
                    return Err(FsError::Perm);
                }
                let off = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                let crate::fs::Poisoned {
                    block,
                    notified,
                    owners,
                } = self.fs.poison(ino, off)?;
                for (o, _) in &owners {
                    self.invalidate(*o);
                }
                let mut out = vec![0u8; io::POISON_SIZE];
                io::put_u64(&mut out, 0, off);
                io::put_u64(&mut out, 8, block);
                io::put_u32(&mut out, 16, notified.len() as u32);
                io::put_u32(&mut out, 20, owners.len() as u32);
                Ok(out)
            }
            io::OWNERS => {
                // Physical blocks and who else maps them: to a reader of
                // this file, and of each other file it names.
                if !self.readable(fh) {
                    return Err(FsError::BadFd);
                }
                let off = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
                let r = self.fs.owners(ino, off, Some(&o.caller().who()))?;
                let j = owners_json(&r).into_bytes();
                if j.len() > io::OWNERS_SIZE - 16 {
                    return Err(FsError::Range);
                }
                let mut out = vec![0u8; 16 + j.len()];
                io::put_u64(&mut out, 0, off);
                io::put_u32(&mut out, 8, j.len() as u32);
                out[16..].copy_from_slice(&j);
                Ok(out)
            }
            io::SNAPSHOT => {
                // Every file's mapping: only for the administrator.
                if !o.caller().has_cap(who::CAP_SYS_ADMIN) {
                    return Err(FsError::Perm);
                }
                let n = io::get_u64(input, 0).ok_or(FsError::Invalid)? as usize;
                if n > io::SNAPSHOT_EXTRA_MAX {
                    return Err(FsError::Invalid);
                }
                let extra: Vec<u64> = (0..n)
                    .map(|i| io::get_u64(input, 8 + 8 * i).ok_or(FsError::Invalid))
                    .collect::<Result<_, _>>()?;
                let j = self.fs.snapshot(&extra)?.to_string().into_bytes();
                if j.len() > io::SNAPSHOT_SIZE - 16 {
                    return Err(FsError::Range);
                }
                let mut out = vec![0u8; 16 + j.len()];
                io::put_u64(&mut out, 0, j.len() as u64);
                out[16..].copy_from_slice(&j);
                Ok(out)
            }
            io::CHECK => {
                let mask = self
                    .fs
                    .check_invariants()
                    .into_iter()
                    .fold(0u64, |m, i| m | (1 << i));
                Ok(mask.to_le_bytes().to_vec())
            }
            io::REMOUNT | io::GOINGDOWN => self.state_ioctl(o, cmd, input),
            io::HELLO => self.direct_hello(),
            io::MAP => self.direct_map(o, ino, fh, input),
            io::TOUCH => self.direct_touch(ino, fh, input),
            io::PINMAP => self.direct_pinmap(o, ino, fh, input),
            io::FITRIM => {
                // As ext4: CAP_SYS_ADMIN; the range comes in and goes back
                // with len = the bytes trimmed (src/fs/admin.rs says which).
                if !o.caller().has_cap(who::CAP_SYS_ADMIN) {
                    return Err(FsError::Perm);
                }
                let r = |i| io::get_u64(input, i).ok_or(FsError::Invalid);
                let n = self.fs.trim(r(0)?, r(8)?, r(16)?)?;
                let mut out = input[..io::FSTRIM_RANGE_SIZE].to_vec();
                io::put_u64(&mut out, 8, n);
                Ok(out)
            }
            io::FS_IOC_GETFSLABEL => {
                let mut out = vec![0u8; crate::fs::FSLABEL_MAX];
                let l = self.fs.label()?;
                // NUL-terminated, however long a hostile image's label decodes.
                let n = l.len().min(crate::fs::FSLABEL_MAX - 1);
                out[..n].copy_from_slice(&l.as_bytes()[..n]);
                Ok(out)
            }
            io::FS_IOC_SETFSLABEL => {
                if !o.caller().has_cap(who::CAP_SYS_ADMIN) {
                    return Err(FsError::Perm);
                }
                self.fs.set_label(input).map(|()| Vec::new())
            }
            io::COUNTERS => self.counters_ioctl(o, ino, input),
            io::OPTIONS => {
                let mut out = vec![0u8; io::OPTIONS_SIZE];
                let o = self.options.as_bytes();
                let n = o.len().min(io::OPTIONS_SIZE);
                out[..n].copy_from_slice(&o[..n]);
                Ok(out)
            }
            io::MODEL => {
                let m = match self.fs.pages.model {
                    crate::pages::PageModel::Legacy => 0u64,
                    crate::pages::PageModel::Upstream => 1,
                    crate::pages::PageModel::Proxy => 2,
                };
                Ok(m.to_le_bytes().to_vec())
            }
            io::FS_IOC_GETFLAGS => Ok(self.fs.get_flags(ino)?.to_le_bytes().to_vec()),
            io::FS_IOC_SETFLAGS => {
                let f = io::get_u32(input, 0).ok_or(FsError::Invalid)?;
                self.fs.set_flags(ino, f)?;
                self.invalidate(ino);
                Ok(Vec::new())
            }
            io::FS_IOC_FSGETXATTR => {
                let mut out = vec![0u8; io::FSXATTR_SIZE];
                let fl = self.fs.get_flags(ino)?;
                io::put_u32(&mut out, 0, crate::fs::flags::to_xflags(fl));
                let n = self.fs.extents(ino)?.len();
                io::put_u32(&mut out, 8, n.min(u32::MAX as usize) as u32);
                Ok(out)
            }
            io::FS_IOC_FSSETXATTR => {
                let x = io::get_u32(input, 0).ok_or(FsError::Invalid)?;
                // No extent size hints or project ids here (nextents, at 8,
                // is whatever FSGETXATTR said).
                let rest_zero = [4, 12, 16]
                    .iter()
                    .all(|&o| io::get_u32(input, o) == Some(0));
                let fl = crate::fs::flags::from_xflags(x)
                    .filter(|_| rest_zero)
                    .ok_or(FsError::NotSupported)?;
                self.fs.set_flags(ino, fl)?;
                self.invalidate(ino);
                Ok(Vec::new())
            }
            _ => Err(FsError::NotTty),
        }
    }

    /// REMOUNT and FS_IOC_SHUTDOWN: CAP_SYS_ADMIN only (EPERM), as in XFS and ext4.
    pub(super) fn state_ioctl(
        &self,
        o: Origin,
        cmd: u32,
        input: &[u8],
    ) -> Result<Vec<u8>, FsError> {
        use crate::fuse::ioctl as io;
        if !o.caller().has_cap(who::CAP_SYS_ADMIN) {
            return Err(FsError::Perm);
        }
        if cmd == io::REMOUNT {
            let ro = io::get_u32(input, 0).ok_or(FsError::Invalid)? != 0;
            self.fs.set_read_only(ro)?;
            return Ok(Vec::new());
        }
        // _IOR: the kernel sends no payload; read the flags where the caller points.
        let flags = who::ioctl_arg_u32(o.pid).unwrap_or_else(|| {
            log::warn!("shutdown: cannot read the caller's flags; using DEFAULT");
            0
        });
        let mode = crate::fs::ShutdownMode::from_flags(flags).ok_or(FsError::Invalid)?;
        self.fs.shutdown(mode);
        crate::fuse::inflight::refuse_all();
        // Cached attributes and pages would still answer stat and read.
        for ino in self.fs.inode_numbers() {
            self.invalidate(ino);
        }
        Ok(Vec::new())
    }
}
