//! Inode flags (`chattr` / `lsattr`): immutable, append-only, noatime and
//! nodump, kept in the inode's `flags` field and enforced as ext4 enforces
//! them.
//!
//! The kernel's FUSE client does not mirror these flags into its inodes, so
//! the VFS cannot apply them: the core filesystem does, at every change.
//! Who may set them is the kernel's decision (the owner; immutable and
//! append-only only with CAP_LINUX_IMMUTABLE), made before the request
//! arrives. An immutable inode cannot be written, truncated, have its
//! attributes or xattrs changed, be linked, renamed or removed, and nothing
//! can be created in or removed from an immutable directory. An append-only
//! file only grows at its end (opened for writing only with O_APPEND, never
//! O_TRUNC), and an append-only directory only gains entries.

use super::*;

/// FS_IOC_GETFLAGS bits daxlink keeps.
pub const FL_IMMUTABLE: u32 = 0x10;
pub const FL_APPEND: u32 = 0x20;
pub const FL_NODUMP: u32 = 0x40;
pub const FL_NOATIME: u32 = 0x80;
pub const FL_USER: u32 = FL_IMMUTABLE | FL_APPEND | FL_NODUMP | FL_NOATIME;

/// The same flags as FS_IOC_FSGETXATTR's `fsx_xflags`.
pub const XFLAG_IMMUTABLE: u32 = 0x8;
pub const XFLAG_APPEND: u32 = 0x10;
pub const XFLAG_NOATIME: u32 = 0x40;
pub const XFLAG_NODUMP: u32 = 0x80;
const XMAP: [(u32, u32); 4] = [
    (FL_IMMUTABLE, XFLAG_IMMUTABLE),
    (FL_APPEND, XFLAG_APPEND),
    (FL_NOATIME, XFLAG_NOATIME),
    (FL_NODUMP, XFLAG_NODUMP),
];

pub fn to_xflags(fl: u32) -> u32 {
    XMAP.iter()
        .filter(|(f, _)| fl & f != 0)
        .fold(0, |a, (_, x)| a | x)
}

/// `None` if `x` holds an xflag daxlink does not keep.
pub fn from_xflags(x: u32) -> Option<u32> {
    let known = XMAP.iter().fold(0, |a, (_, x)| a | x);
    (x & !known == 0).then(|| {
        XMAP.iter()
            .filter(|(_, xf)| x & xf != 0)
            .fold(0, |a, (f, _)| a | f)
    })
}

impl Inode {
    pub(super) fn immutable(&self) -> bool {
        self.rec.flags & FL_IMMUTABLE != 0
    }

    pub(super) fn append_only(&self) -> bool {
        self.rec.flags & FL_APPEND != 0
    }

    /// Neither immutable nor append-only: may be renamed, removed, linked,
    /// truncated, and have its mode, owner, times and xattrs set (EPERM).
    pub(super) fn fully_mutable(&self) -> FsResult<()> {
        if self.immutable() || self.append_only() {
            return Err(FsError::Perm);
        }
        Ok(())
    }

    /// Not immutable (EPERM): its data may change (appends only if append-only).
    pub(super) fn not_immutable(&self) -> FsResult<()> {
        if self.immutable() {
            return Err(FsError::Perm);
        }
        Ok(())
    }
}

impl Fs {
    /// FS_IOC_GETFLAGS.
    pub fn get_flags(&self, ino: u64) -> FsResult<u32> {
        Ok(self.get(ino)?.read()?.rec.flags & FL_USER)
    }

    /// FS_IOC_SETFLAGS: `flags` replaces the user-settable flags (the kernel
    /// has checked ownership and CAP_LINUX_IMMUTABLE). Flags daxlink does not
    /// keep are refused (EOPNOTSUPP), as ext4 refuses those it lacks.
    pub fn set_flags(&self, ino: u64, flags: u32) -> FsResult<()> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        if flags & !FL_USER != 0 {
            return Err(FsError::NotSupported);
        }
        let r = self.get(ino)?;
        let mut g = r.write()?;
        let mut rec = g.rec.clone();
        rec.flags = (rec.flags & !FL_USER) | flags;
        if rec.flags == g.rec.flags {
            return Ok(());
        }
        rec.ctime = now();
        // Immutable or append-only gained: direct writers map again and get
        // no writable extents (`lease_map`).
        if (rec.flags & !g.rec.flags) & (FL_IMMUTABLE | FL_APPEND) != 0 {
            self.recall_layout(ino);
        }
        let mut ctx = self.ctx()?;
        ctx.put_inode(ino, &rec);
        ctx.commit()?;
        g.rec = rec;
        Ok(())
    }

    /// May `ino` be opened with open(2) `flags`? (EPERM for writing an
    /// immutable file, or an append-only one without O_APPEND or with O_TRUNC.)
    pub fn check_open(&self, ino: u64, flags: i32) -> FsResult<()> {
        let g = self.get(ino)?.read()?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if writing && g.immutable() {
            return Err(FsError::Perm);
        }
        if g.append_only()
            && ((flags & libc::O_ACCMODE != libc::O_RDONLY && flags & libc::O_APPEND == 0)
                || flags & libc::O_TRUNC != 0)
        {
            return Err(FsError::Perm);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xflags_round_trip() {
        for f in [0, FL_IMMUTABLE, FL_APPEND | FL_NODUMP, FL_USER] {
            assert_eq!(from_xflags(to_xflags(f)), Some(f));
        }
        assert_eq!(from_xflags(0x1), None);
    }
}
