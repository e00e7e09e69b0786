//! Attributes: getattr, lookup, and setattr (chmod, chown, utimes,
//! truncate) as the kernel asks for them.

use super::counters::Counters;
use super::*;

impl Fs {
    // ------------------------------------------------------------------
    // Attributes
    // ------------------------------------------------------------------

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        Ok(self.get(ino)?.read()?.attr())
    }

    /// `name` in directory `parent`. "." and ".." are how the kernel turns a
    /// file handle (inode number + generation) back into an inode it no
    /// longer caches: "." of any inode still linked is that inode (its
    /// generation tells a reused number apart), ".." of a directory its
    /// parent.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        let _ns = nowait::read(&self.ns)?;
        let p = self.get(parent)?;
        let child = {
            let g = p.read()?;
            if name == b"." {
                if g.rec.nlink == 0 {
                    return Err(FsError::NotFound);
                }
                return Ok(g.attr());
            }
            let d = g.dir.as_ref().ok_or(FsError::NotDir)?;
            if name == b".." {
                d.parent
            } else {
                d.get(name).ok_or(FsError::NotFound)?.child
            }
        };
        self.getattr(child)
    }

    /// chmod, chown, utimes and truncate. With `default_permissions` the
    /// kernel has already decided that the caller may make this change and
    /// computed the new mode (set-user-ID and set-group-ID clearing on chmod,
    /// chown, write and truncate included), with the caller's supplementary
    /// groups and capabilities: the daemon applies what it is asked, and
    /// checks only what the kernel cannot know (file type, size limits).
    pub fn setattr(&self, ino: u64, s: &SetAttr) -> FsResult<Attr> {
        let r = self.get(ino)?;
        let mut g = r.write()?;
        // Inode flags: nothing changes on an immutable inode; an append-only
        // one may only have its times set to now (touch).
        let only_touch = s.mode.is_none()
            && s.uid.is_none()
            && s.gid.is_none()
            && s.size.is_none()
            && !matches!(s.atime, Some(SetTime::At(_)))
            && !matches!(s.mtime, Some(SetTime::At(_)));
        g.not_immutable()?;
        if !only_touch {
            g.fully_mutable()?;
        }
        let mut rec = g.rec.clone();
        let t = now();
        if let Some(mode) = s.mode {
            rec.mode = (rec.mode & libc::S_IFMT) | (mode & 0o7777);
        }
        let killed = rec.mode & s.clear_mode & (libc::S_ISUID | libc::S_ISGID);
        rec.mode &= !killed;
        if let Some(uid) = s.uid {
            rec.uid = uid;
        }
        if let Some(gid) = s.gid {
            rec.gid = gid;
        }
        let at = |v: SetTime| match v {
            SetTime::Now => t,
            SetTime::At(ts) => ts,
        };
        if let Some(v) = s.atime {
            rec.atime = at(v);
        }
        if let Some(v) = s.mtime {
            rec.mtime = at(v);
        }
        rec.ctime = t;
        // A set-ID bit gained: a direct write could not clear it, so direct
        // writers map again and get no writable extents (`lease_map`).
        if (rec.mode & !g.rec.mode) & (libc::S_ISUID | libc::S_ISGID) != 0 {
            self.recall_layout(ino);
        }
        // A mode change rewrites the access ACL's owner, mask (or group) and
        // other entries (POSIX 1003.1e chmod), in the same transaction.
        let acl_blob = match s.mode {
            Some(_) => self.acl_after_chmod(&mut g, rec.mode)?,
            None => None,
        };
        if let Some(size) = s.size {
            if g.is_dir() {
                return Err(FsError::IsDir);
            }
            if g.ftype() != libc::S_IFREG {
                return Err(FsError::Invalid);
            }
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            if s.mtime.is_none() {
                rec.mtime = t;
            }
            self.truncate_locked(&mut g, size, rec, acl_blob)?;
        } else {
            match acl_blob {
                Some(m) => self.store_xattrs(&mut g, m, rec)?,
                None => {
                    let mut ctx = self.ctx()?;
                    ctx.put_inode(ino, &rec);
                    ctx.commit()?;
                    g.rec = rec;
                }
            }
        }
        if killed != 0 {
            Counters::bump(&self.counters.setid_cleared);
        }
        Ok(g.attr())
    }
}
