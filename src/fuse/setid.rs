//! Set-ID bits on data changes and chown, where FUSE_HANDLE_KILLPRIV_V2
//! leaves the decision to the daemon (ARCHITECTURE.md, "Permissions and
//! who the caller is"): one rule in the core
//! (`fs::setid_cleared_by_data_change`), decided here for every request
//! but WRITE, which carries the kernel's own decision.

use super::*;

impl DaxFuse {
    /// Under FUSE_HANDLE_KILLPRIV_V2 the kernel leaves clearing set-ID bits
    /// on chown and truncate to us (fuser does not pass its
    /// FATTR_KILL_SUIDGID bit), so decide as the VFS does: chown of a
    /// non-directory clears set-user-ID always, and set-group-ID when the
    /// group may execute or the caller is neither in the file's group nor
    /// holds CAP_FSETID; a size change is a data change (`kills_setid`).
    pub(super) fn setid_bits_to_clear(
        &self,
        o: Origin,
        ino: u64,
        chown: bool,
        size: Option<u64>,
    ) -> u32 {
        if !chown && size.is_none() {
            return 0;
        }
        let Ok(a) = self.fs.getattr(ino) else {
            return 0;
        };
        let (suid, sgid) = (libc::S_ISUID, libc::S_ISGID);
        if a.mode & (suid | sgid) == 0 || a.mode & libc::S_IFMT == libc::S_IFDIR {
            return 0;
        }
        let c = o.caller();
        let fsetid = c.has_cap(who::CAP_FSETID);
        let in_group = |g: u32| c.gid == g || c.groups.contains(&g);
        if chown {
            let gx = a.mode & libc::S_IXGRP != 0;
            a.mode
                & (suid
                    | if gx || (!in_group(a.gid) && !fsetid) {
                        sgid
                    } else {
                        0
                    })
        } else if !fsetid {
            crate::fs::setid_cleared_by_data_change(a.mode, a.gid, &in_group)
        } else {
            0
        }
    }

    /// Before a data change that is not a WRITE (fallocate in every mode,
    /// the destination of a clone or of copy_file_range): what the VFS's
    /// `file_modified` does, here because under FUSE_HANDLE_KILLPRIV_V2 the
    /// kernel leaves it to the daemon. The one place where the daemon
    /// decides set-ID clearing on data changes; WRITE carries the kernel's
    /// own decision (FUSE_WRITE_KILL_SUIDGID) into the same core rule.
    pub(super) fn file_modified(&self, o: Origin, ino: u64) -> Result<(), FsError> {
        // /proc is read only for a file that has a set-ID bit.
        let bits = libc::S_ISUID | libc::S_ISGID;
        let kill = self.fs.getattr(ino).is_ok_and(|a| a.mode & bits != 0)
            && !o.caller().has_cap(who::CAP_FSETID);
        let in_group = |g| caller_in_group(&o, g);
        if self.fs.remove_privs(ino, kill.then_some(&in_group))? {
            self.invalidate_attrs(ino);
        }
        Ok(())
    }
}

/// Whether the caller of `o` is in group `gid`: its fs gid from the request
/// header, else its supplementary groups (read from /proc only then).
pub(super) fn caller_in_group(o: &Origin, gid: u32) -> bool {
    o.gid == gid || o.caller().groups.contains(&gid)
}
