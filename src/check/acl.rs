//! POSIX ACLs: the one definition of the `system.posix_acl_access` and
//! `system.posix_acl_default` xattr values (the Linux xattr ACL format, which
//! daxlink stores as is), their validation, and the rules that tie an ACL to
//! the file mode (chmod, setting an ACL, inheritance at create) and evaluate
//! it. The core filesystem, the FUSE edge and fsck all use this module.
//!
//! Value: a little-endian u32 version (2), then entries of
//! {tag u16, perm u16, id u32}. Tags: owner (`USER_OBJ`), named users
//! (`USER`), owning group (`GROUP_OBJ`), named groups (`GROUP`), `MASK`,
//! `OTHER`, in that order; named entries need a mask; obj entries carry the
//! id `u32::MAX`.

#![forbid(unsafe_code)]

use thiserror::Error;

use crate::format::Le;

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

pub const VERSION: u32 = 2;
pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;
pub const UNDEFINED_ID: u32 = u32::MAX;
/// Most entries one value may hold (the kernel refuses larger than a page).
pub const MAX_ENTRIES: usize = (4096 - 4) / 8;

const HDR: usize = 4;
const ENTRY: usize = 8;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AclError {
    #[error("ACL value has a bad size ({0} bytes)")]
    Size(usize),
    #[error("ACL version {0} (expected 2)")]
    Version(u32),
    #[error("ACL entry {0}: unknown tag {1:#x}")]
    Tag(usize, u16),
    #[error("ACL entry {0}: permission bits {1:#o} beyond rwx")]
    Perm(usize, u16),
    #[error("ACL entries are missing, duplicated or out of order")]
    Order,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A decoded, valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<Entry>,
}

/// Whom a permission check is for: fs uid and gid, supplementary groups, and
/// whether the caller may override read/search permission checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH (search of any directory).
    pub can_search_any: bool,
    /// CAP_FSETID (keeps set-group-ID when not in the file's group).
    pub cap_fsetid: bool,
}

impl Who {
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

impl Acl {
    /// Decode and validate (the kernel's rules: order, one of each obj
    /// entry, a mask when there are named entries, rwx bits only).
    pub fn decode(b: &[u8]) -> Result<Acl, AclError> {
        if b.len() < HDR
            || !(b.len() - HDR).is_multiple_of(ENTRY)
            || (b.len() - HDR) / ENTRY > MAX_ENTRIES
        {
            return Err(AclError::Size(b.len()));
        }
        let v = Le::u32(b, 0);
        if v != VERSION {
            return Err(AclError::Version(v));
        }
        let entries: Vec<Entry> = (0..(b.len() - HDR) / ENTRY)
            .map(|i| {
                let o = HDR + i * ENTRY;
                Entry {
                    tag: Le::u16(b, o),
                    perm: Le::u16(b, o + 2),
                    id: Le::u32(b, o + 4),
                }
            })
            .collect();
        let acl = Acl { entries };
        acl.validate()?;
        Ok(acl)
    }

    fn validate(&self) -> Result<(), AclError> {
        // States: what may come next.
        #[derive(PartialEq)]
        enum S {
            UserObj,
            Users,
            Groups,
            Other,
            Done,
        }
        let mut s = S::UserObj;
        let mut named = false;
        for (i, e) in self.entries.iter().enumerate() {
            if e.perm & !7 != 0 {
                return Err(AclError::Perm(i, e.perm));
            }
            s = match (e.tag, s) {
                (USER_OBJ, S::UserObj) => S::Users,
                (USER, S::Users) => {
                    named = true;
                    S::Users
                }
                (GROUP_OBJ, S::Users) => S::Groups,
                (GROUP, S::Groups) => {
                    named = true;
                    S::Groups
                }
                (MASK, S::Groups) => S::Other,
                (OTHER, S::Other) => S::Done,
                (OTHER, S::Groups) if !named => S::Done,
                (USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER, _) => {
                    return Err(AclError::Order)
                }
                (t, _) => return Err(AclError::Tag(i, t)),
            };
        }
        if s == S::Done {
            Ok(())
        } else {
            Err(AclError::Order)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HDR + ENTRY * self.entries.len()];
        Le::put32(&mut b, 0, VERSION);
        for (i, e) in self.entries.iter().enumerate() {
            let o = HDR + i * ENTRY;
            Le::put16(&mut b, o, e.tag);
            Le::put16(&mut b, o + 2, e.perm);
            Le::put32(&mut b, o + 4, e.id);
        }
        b
    }

    fn find_mut(&mut self, tag: u16) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.tag == tag)
    }

    /// The permission bits (0o777) this ACL gives the mode, and whether the
    /// ACL says more than the mode can (named entries or a mask).
    pub fn mode_bits(&self) -> (u32, bool) {
        let mut mode = 0u32;
        let mut extended = false;
        let mut mask = None;
        for e in &self.entries {
            let p = (e.perm & 7) as u32;
            match e.tag {
                USER_OBJ => mode |= p << 6,
                GROUP_OBJ => mode |= p << 3,
                OTHER => mode |= p,
                MASK => {
                    mask = Some(p);
                    extended = true;
                }
                _ => extended = true,
            }
        }
        if let Some(m) = mask {
            mode = (mode & !0o070) | (m << 3);
        }
        (mode, extended)
    }

    /// chmod: the owner, mask (or, without a mask, owning group) and other
    /// entries take the new mode's bits.
    pub fn chmod(&mut self, mode: u32) {
        let has_mask = self.entries.iter().any(|e| e.tag == MASK);
        for e in self.entries.iter_mut() {
            match e.tag {
                USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
                OTHER => e.perm = (mode & 7) as u16,
                MASK => e.perm = ((mode >> 3) & 7) as u16,
                GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
                _ => {}
            }
        }
    }

    /// Inheritance at create: restrict this (a copy of the parent's default
    /// ACL) by the requested `mode`, and restrict the mode by the ACL.
    /// Returns the new permission bits and whether the new file needs this
    /// ACL as its access ACL (false: the mode says it all).
    pub fn create_masq(&mut self, mode: u32) -> (u32, bool) {
        let mut mode = mode & 0o777;
        let mut extended = false;
        let has_mask = self.entries.iter().any(|e| e.tag == MASK);
        for e in self.entries.iter_mut() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((mode >> 6) & 7) as u16;
                    mode &= ((e.perm as u32) << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= (mode & 7) as u16;
                    mode &= (e.perm as u32) | !0o007;
                }
                USER | GROUP => extended = true,
                MASK => extended = true,
                _ => {}
            }
        }
        let g = self
            .find_mut(if has_mask { MASK } else { GROUP_OBJ })
            .expect("a valid ACL has a group entry");
        g.perm &= ((mode >> 3) & 7) as u16;
        mode &= ((g.perm as u32) << 3) | !0o070;
        (mode & 0o777, extended)
    }

    /// An ACL holding exactly what `mode` says.
    pub fn from_mode(mode: u32) -> Acl {
        let e = |tag, shift: u32| Entry {
            tag,
            perm: ((mode >> shift) & 7) as u16,
            id: UNDEFINED_ID,
        };
        Acl {
            entries: vec![e(USER_OBJ, 6), e(GROUP_OBJ, 3), e(OTHER, 0)],
        }
    }

    /// Does this access ACL grant `want` (rwx bits) to `who` on a file
    /// owned by `uid`:`gid`? (The POSIX 1003.1e algorithm, as the kernel
    /// evaluates it.)
    pub fn permits(&self, who: &Who, uid: u32, gid: u32, want: u16) -> bool {
        let mask = self
            .entries
            .iter()
            .find(|e| e.tag == MASK)
            .map_or(7, |e| e.perm);
        let ok = |p: u16| p & want == want;
        let mut group_found = false;
        for e in &self.entries {
            match e.tag {
                USER_OBJ if who.uid == uid => return ok(e.perm),
                USER if who.uid == e.id => return ok(e.perm & mask),
                GROUP_OBJ if who.in_group(gid) => {
                    group_found = true;
                    if ok(e.perm & mask) {
                        return true;
                    }
                }
                GROUP if who.in_group(e.id) => {
                    group_found = true;
                    if ok(e.perm & mask) {
                        return true;
                    }
                }
                OTHER => return !group_found && ok(e.perm),
                _ => {}
            }
        }
        false
    }
}

/// May `who` search (execute) a directory with this mode, owner and access
/// ACL? Used where the daemon itself must decide visibility (the owners
/// report); ordinary requests are checked by the kernel.
pub fn may_search(who: &Who, mode: u32, uid: u32, gid: u32, acl: Option<&Acl>) -> bool {
    may_access(who, mode, uid, gid, acl, 1)
}

/// May `who` read a file with this mode, owner and access ACL? (CAP_DAC_OVERRIDE
/// and CAP_DAC_READ_SEARCH both let a caller read any file.)
pub fn may_read(who: &Who, mode: u32, uid: u32, gid: u32, acl: Option<&Acl>) -> bool {
    may_access(who, mode, uid, gid, acl, 4)
}

fn may_access(who: &Who, mode: u32, uid: u32, gid: u32, acl: Option<&Acl>, want: u16) -> bool {
    if who.can_search_any {
        return true;
    }
    match acl {
        Some(a) => a.permits(who, uid, gid, want),
        None => {
            let bits = if who.uid == uid {
                mode >> 6
            } else if who.in_group(gid) {
                mode >> 3
            } else {
                mode
            };
            bits & want as u32 == want as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(es: &[(u16, u16, u32)]) -> Acl {
        Acl {
            entries: es
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect(),
        }
    }
    const U: u32 = UNDEFINED_ID;

    #[test]
    fn decode_validates_like_the_kernel() {
        let good = acl(&[
            (USER_OBJ, 7, U),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, U),
            (MASK, 7, U),
            (OTHER, 0, U),
        ]);
        assert_eq!(Acl::decode(&good.encode()), Ok(good.clone()));
        let minimal = Acl::from_mode(0o640);
        assert_eq!(Acl::decode(&minimal.encode()), Ok(minimal));
        // Named entry without a mask, missing other, wrong order, bad perm.
        for bad in [
            acl(&[
                (USER_OBJ, 7, U),
                (USER, 5, 1),
                (GROUP_OBJ, 5, U),
                (OTHER, 0, U),
            ]),
            acl(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U)]),
            acl(&[(GROUP_OBJ, 5, U), (USER_OBJ, 7, U), (OTHER, 0, U)]),
            acl(&[(USER_OBJ, 8, U), (GROUP_OBJ, 5, U), (OTHER, 0, U)]),
            acl(&[
                (USER_OBJ, 7, U),
                (0x40, 5, U),
                (GROUP_OBJ, 5, U),
                (OTHER, 0, U),
            ]),
            acl(&[]),
        ] {
            assert!(Acl::decode(&bad.encode()).is_err(), "{bad:?}");
        }
        let mut v = good.encode();
        v[0] = 1;
        assert_eq!(Acl::decode(&v), Err(AclError::Version(1)));
        assert!(Acl::decode(&good.encode()[..11]).is_err());
    }

    #[test]
    fn mode_chmod_and_create_follow_posix() {
        let mut a = acl(&[
            (USER_OBJ, 7, U),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, U),
            (MASK, 7, U),
            (OTHER, 4, U),
        ]);
        assert_eq!(a.mode_bits(), (0o774, true));
        a.chmod(0o750);
        // The mask, not the owning group, takes the group bits.
        assert_eq!(a.mode_bits(), (0o750, true));
        assert_eq!(a.entries[2].perm, 5);
        assert_eq!(a.entries[3].perm, 5);
        // Inheritance: a default ACL u::rwx,g::r-x,o::--- restricted by 0666.
        let mut d = acl(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U), (OTHER, 0, U)]);
        assert_eq!(d.create_masq(0o666), (0o640, false));
        let mut d = acl(&[
            (USER_OBJ, 7, U),
            (GROUP, 7, 50),
            (GROUP_OBJ, 5, U),
            (MASK, 7, U),
            (OTHER, 5, U),
        ]);
        assert_eq!(d.create_masq(0o777), (0o775, true));
    }

    #[test]
    fn permission_evaluation() {
        let a = acl(&[
            (USER_OBJ, 7, U),
            (USER, 1, 1000),
            (GROUP_OBJ, 0, U),
            (GROUP, 1, 60),
            (MASK, 1, U),
            (OTHER, 0, U),
        ]);
        let who = |uid, gid, groups: &[u32]| Who {
            uid,
            gid,
            groups: groups.to_vec(),
            ..Default::default()
        };
        assert!(a.permits(&who(1000, 1000, &[]), 0, 0, 1));
        assert!(!a.permits(&who(1000, 1000, &[]), 0, 0, 4));
        assert!(a.permits(&who(1001, 1001, &[60]), 0, 0, 1));
        assert!(!a.permits(&who(1001, 1001, &[]), 0, 0, 1));
        assert!(!a.permits(&who(1001, 0, &[]), 0, 0, 1)); // owning group: 0
        assert!(may_search(&who(5, 5, &[7]), 0o710, 0, 7, None));
        assert!(!may_search(&who(5, 5, &[]), 0o710, 0, 7, None));
    }
}
