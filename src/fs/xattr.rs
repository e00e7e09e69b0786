//! Extended attributes and POSIX ACLs.
//!
//! An inode's xattrs are one blob (`format::encode_xattrs`) in contiguous
//! data blocks, rewritten copy-on-write: new blocks are written and persisted,
//! then one transaction switches the inode's pointer and frees the old blob.
//! The two ACL xattrs (`crate::check::acl`) are stored the same way, validated on
//! the way in, and kept consistent with the mode: setting an access ACL sets
//! the mode's permission bits (and an ACL the mode says in full is not
//! stored), chmod rewrites the access ACL, and a directory's default ACL is
//! inherited at create (`inherit_acls`). Each of these is one transaction
//! with the inode change it belongs to.

use super::*;
use crate::check;
use crate::check::acl::{self, Acl, Who};

/// An xattr blob on fresh blocks, not yet linked to its inode.
struct Blob {
    at: u64,
    blocks: u64,
    len: u32,
    crc: u32,
    /// Reserved inside the transaction that links it (else handed over).
    adopted: bool,
}

/// `m` encoded, and the blocks it takes; None when empty.
fn encode_blob(m: &XattrMap) -> FsResult<Option<(Vec<u8>, u64)>> {
    if m.is_empty() {
        return Ok(None);
    }
    let blob = format::encode_xattrs(m);
    if blob.len() > XATTR_TOTAL_MAX {
        return Err(FsError::NoSpace);
    }
    let n = (blob.len() as u64).div_ceil(BS);
    Ok(Some((blob, n)))
}

impl Fs {
    pub(super) fn load_xattrs(&self, g: &mut Inode) -> FsResult<()> {
        if g.xattrs.is_some() {
            return Ok(());
        }
        // The pointer by the rule mount checked (and fsck repairs), the blob
        // by the format's checked decode: a hostile length is an error (EIO).
        let corrupt = |why: String| FsError::Corrupt(format!("inode {}: xattr blob: {why}", g.ino));
        let m = match crate::check::xattr_ptr(&self.sb, &g.rec).map_err(corrupt)? {
            None => XattrMap::new(),
            Some(p) => {
                let b = self.media.read_vec(p.block * BS, p.len)?;
                format::decode_xattr_blob(&b, &p).map_err(|e| {
                    log::error!("inode {}: xattr blob: {e}", g.ino);
                    corrupt(e.to_string())
                })?
            }
        };
        g.xattrs = Some(Box::new(m));
        Ok(())
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        known_namespace(name)?;
        let r = self.get(ino)?;
        let mut g = r.write()?;
        self.load_xattrs(&mut g)?;
        let v = g.xattrs.as_ref().and_then(|m| m.get(name)).cloned();
        v.ok_or(if name == SELINUX {
            FsError::NotSupported
        } else {
            FsError::NoData
        })
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        let r = self.get(ino)?;
        let mut g = r.write()?;
        self.load_xattrs(&mut g)?;
        Ok(g.xattrs
            .as_ref()
            .map(|m| {
                m.keys()
                    .filter(|k| known_namespace(k).is_ok())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Set (`value: Some`) or remove (`None`) an xattr, as a trusted caller.
    /// flags: XATTR_CREATE (1) / XATTR_REPLACE (2).
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: Option<&[u8]>,
        flags: i32,
    ) -> FsResult<()> {
        self.setxattr_by(ino, name, value, flags, None)
    }

    /// `setxattr` on behalf of `who`: setting an access ACL clears the
    /// set-group-ID bit unless `who` is in the file's group or has
    /// CAP_FSETID (`None`: keep it), as Linux does.
    pub fn setxattr_by(
        &self,
        ino: u64,
        name: &[u8],
        value: Option<&[u8]>,
        flags: i32,
        who: Option<&Who>,
    ) -> FsResult<()> {
        if self.read_only() {
            return Err(FsError::ReadOnly);
        }
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(if name.is_empty() {
                FsError::Invalid
            } else {
                FsError::Range
            });
        }
        if value.is_some_and(|v| v.len() > XATTR_VALUE_MAX) {
            return Err(FsError::Range);
        }
        known_namespace(name)?;
        let is_acl = name == acl::ACCESS || name == acl::DEFAULT;
        let parsed = match (is_acl, value) {
            (true, Some(v)) => Some(Acl::decode(v).map_err(|e| {
                log::debug!("inode {ino}: {e}");
                FsError::Invalid
            })?),
            _ => None,
        };
        let r = self.get(ino)?;
        let mut g = r.write()?;
        g.fully_mutable()?;
        if name == acl::DEFAULT && value.is_some() && check::default_acl(g.rec.mode).is_some() {
            return Err(FsError::Access);
        }
        self.load_xattrs(&mut g)?;
        let mut m = g.xattrs.as_deref().cloned().unwrap_or_default();
        let exists = m.contains_key(name);
        let mut rec = g.rec.clone();
        match value {
            None => {
                if !exists {
                    return Err(FsError::NoData);
                }
                m.remove(name);
            }
            Some(v) => {
                if flags & libc::XATTR_CREATE != 0 && exists {
                    return Err(FsError::Exists);
                }
                if flags & libc::XATTR_REPLACE != 0 && !exists {
                    return Err(FsError::NoData);
                }
                match parsed.filter(|_| name == acl::ACCESS) {
                    Some(a) => {
                        // The mode follows the ACL; an ACL the mode says in
                        // full is not kept (posix_acl_update_mode).
                        let (bits, extended) = a.mode_bits();
                        rec.mode = (rec.mode & !0o777) | bits;
                        if who.is_some_and(|w| !w.cap_fsetid && !w.in_group(rec.gid)) {
                            rec.mode &= !libc::S_ISGID;
                        }
                        if extended {
                            m.insert(name.to_vec(), v.to_vec());
                        } else {
                            m.remove(name);
                        }
                    }
                    None => {
                        m.insert(name.to_vec(), v.to_vec());
                    }
                }
            }
        }
        rec.ctime = now();
        self.store_xattrs(&mut g, m, rec)
    }

    /// Write `m` as `g`'s xattrs and `rec` (whose xattr fields are set here)
    /// as its inode, in one transaction. The blob (up to 1 MiB) is written
    /// first, holding only the inode's lock (`write_blob`); the transaction
    /// then links it.
    pub(super) fn store_xattrs(
        &self,
        g: &mut Inode,
        m: XattrMap,
        mut rec: InodeRec,
    ) -> FsResult<()> {
        let blob = self.write_blob(&m)?;
        let mut ctx = match self.ctx() {
            Ok(c) => c,
            Err(e) => {
                self.drop_blob(blob);
                return Err(e);
            }
        };
        self.link_blob(&mut ctx, &g.rec, blob, &mut rec)?;
        ctx.put_inode(g.ino, &rec);
        ctx.commit()?;
        g.rec = rec;
        g.xattrs = Some(Box::new(m));
        Ok(())
    }

    /// Inside `ctx`: write `m` to new blocks, point `rec` at them and free
    /// the blob `old` points at. The caller commits and then installs `m`.
    /// (For small maps written with other changes; `store_xattrs` writes
    /// its blob before taking `meta`.)
    pub(super) fn stage_xattrs(
        &self,
        ctx: &mut Ctx<'_>,
        old: &InodeRec,
        m: &XattrMap,
        rec: &mut InodeRec,
    ) -> FsResult<()> {
        let blob = encode_blob(m)?;
        let blob = match blob {
            Some((bytes, n)) => {
                let p = ctx.reserve_contiguous(n)?;
                self.persist_blob(p, &bytes, n)?;
                Some(Blob {
                    at: p,
                    blocks: n,
                    len: bytes.len() as u32,
                    crc: format::crc(&bytes),
                    adopted: true,
                })
            }
            None => None,
        };
        self.link_blob(ctx, old, blob, rec)
    }

    /// Encode `m` and write it to blocks reserved for it, outside `meta`.
    fn write_blob(&self, m: &XattrMap) -> FsResult<Option<Blob>> {
        let Some((bytes, n)) = encode_blob(m)? else {
            return Ok(None);
        };
        let p = self.ctx()?.reserve_detached(n)?;
        if let Err(e) = self.persist_blob(p, &bytes, n) {
            self.meta.lock().space.unreserve(p, n);
            return Err(e);
        }
        Ok(Some(Blob {
            at: p,
            blocks: n,
            len: bytes.len() as u32,
            crc: format::crc(&bytes),
            adopted: false,
        }))
    }

    fn drop_blob(&self, blob: Option<Blob>) {
        if let Some(b) = blob.filter(|b| !b.adopted) {
            self.meta.lock().space.unreserve(b.at, b.blocks);
        }
    }

    fn persist_blob(&self, p: u64, bytes: &[u8], n: u64) -> FsResult<()> {
        let mut padded = bytes.to_vec();
        padded.resize((n * BS) as usize, 0);
        self.media.write_at(p * BS, &padded)?;
        self.media.persist(p * BS, n * BS)?;
        Ok(())
    }

    /// Inside `ctx`: point `rec` at `blob` (none: no xattrs) and free the
    /// blob `old` points at.
    fn link_blob(
        &self,
        ctx: &mut Ctx<'_>,
        old: &InodeRec,
        blob: Option<Blob>,
        rec: &mut InodeRec,
    ) -> FsResult<()> {
        match blob {
            Some(b) => {
                if !b.adopted {
                    ctx.adopt(b.at, b.blocks);
                }
                ctx.blocks_used(b.at, b.blocks)?;
                rec.xattr_block = b.at;
                rec.xattr_blocks = b.blocks as u32;
                rec.xattr_len = b.len;
                rec.xattr_crc = b.crc;
            }
            None => {
                rec.xattr_block = 0;
                rec.xattr_blocks = 0;
                rec.xattr_len = 0;
                rec.xattr_crc = 0;
            }
        }
        if old.xattr_blocks > 0 {
            ctx.blocks_free(old.xattr_block, old.xattr_blocks as u64)?;
        }
        Ok(())
    }

    pub(super) fn acl_after_chmod(&self, g: &mut Inode, mode: u32) -> FsResult<Option<XattrMap>> {
        self.load_xattrs(g)?;
        let Some(m) = g.xattrs.as_ref() else {
            return Ok(None);
        };
        let Some(v) = m.get(acl::ACCESS) else {
            return Ok(None);
        };
        let mut a = Acl::decode(v)
            .map_err(|e| FsError::Corrupt(format!("inode {}: access ACL: {e}", g.ino)))?;
        a.chmod(mode);
        let mut m = XattrMap::clone(m);
        m.insert(acl::ACCESS.to_vec(), a.encode());
        Ok(Some(m))
    }

    /// Inheritance at create (POSIX 1003.1e, as ext4): with a default ACL
    /// on `parent`, the new inode's permission bits are `mode` restricted by
    /// it, it gets an access ACL when the result needs one, and a new
    /// directory inherits the default ACL; without one, the umask applies.
    /// Returns the new mode and the new inode's xattrs. Symlinks take neither.
    pub(super) fn inherit_acls(
        &self,
        parent: &mut Inode,
        mode: u32,
        umask: u32,
    ) -> FsResult<(u32, XattrMap)> {
        let mut m = XattrMap::new();
        if mode & libc::S_IFMT == libc::S_IFLNK {
            return Ok((mode, m));
        }
        self.load_xattrs(parent)?;
        let default = parent
            .xattrs
            .as_ref()
            .and_then(|x| x.get(acl::DEFAULT))
            .map(|v| {
                Acl::decode(v).map_err(|e| {
                    FsError::Corrupt(format!("inode {}: default ACL: {e}", parent.ino))
                })
            })
            .transpose()?;
        let Some(d) = default else {
            return Ok((mode & !(umask & 0o777), m));
        };
        let mut access = d.clone();
        let (bits, extended) = access.create_masq(mode);
        if extended {
            m.insert(acl::ACCESS.to_vec(), access.encode());
        }
        if mode & libc::S_IFMT == libc::S_IFDIR {
            m.insert(acl::DEFAULT.to_vec(), d.encode());
        }
        Ok(((mode & !0o777) | bits, m))
    }

    /// The access ACL of `g`, if it has a valid one (for permission checks
    /// the daemon itself must make).
    pub(super) fn access_acl(&self, g: &mut Inode) -> Option<Acl> {
        self.load_xattrs(g).ok()?;
        Acl::decode(g.xattrs.as_ref()?.get(acl::ACCESS)?).ok()
    }
}

/// The SELinux label. daxlink assigns none (SELinux labels a FUSE mount as a
/// whole, by a genfs rule of its policy or the `context=` mount option) but
/// stores one that is set, as ext4 and tmpfs do (a copy that carries labels
/// keeps them). A file without one answers "not supported" where ext4
/// says "no such attribute": coreutils' `ls -l` asks every file for its
/// label, and the kernel caches no `security.` xattr for FUSE, so with
/// "no such attribute" each listing sent one GETXATTR per file; on "not
/// supported" ls stops asking on that device (docs/ROUNDTRIPS.md).
const SELINUX: &[u8] = b"security.selinux";

/// The xattr namespaces daxlink stores, as ext4's handlers: `user.`,
/// `trusted.`, `security.` (the kernel checks who may use each before a
/// request arrives: write permission, CAP_SYS_ADMIN, the security modules)
/// and of `system.` only the two POSIX ACL names, which the kernel itself
/// checks (owner or CAP_FOWNER). The kernel applies no check at all to
/// other `system.` names, so those, like names in no namespace, are not
/// supported (EOPNOTSUPP), not stored for anyone who asks.
pub fn known_namespace(name: &[u8]) -> FsResult<()> {
    let ok = [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.len() > p.len() && name.starts_with(p))
        || name == acl::ACCESS
        || name == acl::DEFAULT;
    if ok {
        Ok(())
    } else {
        Err(FsError::NotSupported)
    }
}
