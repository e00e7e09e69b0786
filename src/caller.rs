//! Who sent a FUSE request, beyond what the request header says.
//!
//! The header carries the caller's fs uid, fs gid and thread id. The kernel
//! applies the permission rules itself (`default_permissions`), so the
//! daemon needs more only where it must decide: set-group-ID clearing when
//! an access ACL is set, root-only ioctls (CAP_SYS_ADMIN), which paths the
//! owners report may show, and which open file a clone source names. It reads
//! these from `/proc/TID/status` (Groups, CapEff), `/proc/TID/fdinfo/FD`
//! and `/proc/TID/mountinfo`. This is sound because the calling thread is
//! blocked in its system call until the daemon replies (the daemon does not
//! accept interrupts), so that thread id cannot be reused and the thread
//! cannot change its own credentials meanwhile; ARCHITECTURE.md lists the
//! races that remain. Whatever cannot be read counts as no groups, no
//! capabilities, no such file: the least privilege.

use std::path::Path;

use crate::acl::Who;

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_FSETID: u32 = 4;
pub const CAP_SYS_ADMIN: u32 = 21;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: u64,
}

impl Caller {
    /// The caller of a request from `pid` with fs ids `uid`:`gid`.
    pub fn new(pid: u32, uid: u32, gid: u32) -> Caller {
        let status = if pid == 0 {
            String::new()
        } else {
            std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
        };
        Caller::from_status(pid, uid, gid, &status)
    }

    /// Parse the `Groups:` and `CapEff:` lines of a /proc status file.
    pub fn from_status(pid: u32, uid: u32, gid: u32, status: &str) -> Caller {
        let mut c = Caller {
            pid,
            uid,
            gid,
            ..Default::default()
        };
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Groups:") {
                c.groups = v
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect();
            } else if let Some(v) = line.strip_prefix("CapEff:") {
                c.cap_eff = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
            }
        }
        c
    }

    pub fn has_cap(&self, cap: u32) -> bool {
        cap < 64 && self.cap_eff & (1u64 << cap) != 0
    }

    /// The caller as the ACL module's permission checks see it.
    pub fn who(&self) -> Who {
        Who {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
            can_search_any: self.has_cap(CAP_DAC_OVERRIDE) || self.has_cap(CAP_DAC_READ_SEARCH),
            cap_fsetid: self.has_cap(CAP_FSETID),
        }
    }
}

/// A file a process holds open, as /proc describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFile {
    /// Device (major, minor) of the filesystem it is on.
    pub dev: (u32, u32),
    pub ino: u64,
    /// open(2) flags (O_ACCMODE, O_PATH, ...).
    pub flags: i32,
}

impl OpenFile {
    /// Open for reading (and not an O_PATH descriptor, which allows no I/O).
    pub fn readable(&self) -> bool {
        self.flags & libc::O_PATH == 0 && self.flags & libc::O_ACCMODE != libc::O_WRONLY
    }
}

/// The open file behind descriptor `fd` of thread `pid`.
pub fn open_file(pid: u32, fd: i32) -> Option<OpenFile> {
    if pid == 0 || fd < 0 {
        return None;
    }
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let (flags, mnt_id, ino) = parse_fdinfo(&info)?;
    let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let dev = mountinfo_lines(&mi).find(|m| m.id == mnt_id)?.dev;
    Some(OpenFile { dev, ino, flags })
}

/// (flags, mnt_id, ino) of an fdinfo file.
pub fn parse_fdinfo(s: &str) -> Option<(i32, u64, u64)> {
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let flags = i32::from_str_radix(&field("flags:")?, 8).ok()?;
    let mnt_id = field("mnt_id:")?.parse().ok()?;
    let ino = field("ino:")?.parse().ok()?;
    Some((flags, mnt_id, ino))
}

/// The `u32` that the third argument of the ioctl the thread `tid` is
/// blocked in points to: the pointer from /proc/TID/syscall ("nr arg0 arg1
/// arg2 ..."), the value from /proc/TID/mem. For an `_IOR` command, whose
/// payload the kernel does not send to FUSE (FS_IOC_SHUTDOWN). Needs the
/// daemon to be allowed to ptrace the caller (root); None otherwise.
pub fn ioctl_arg_u32(tid: u32) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let sc = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    let f: Vec<&str> = sc.split_whitespace().collect();
    if f.first()?.parse::<i64>().ok()? != libc::SYS_ioctl {
        return None;
    }
    let ptr = u64::from_str_radix(f.get(3)?.trim_start_matches("0x"), 16).ok()?;
    let mem = std::fs::File::open(format!("/proc/{tid}/mem")).ok()?;
    let mut b = [0u8; 4];
    mem.read_exact_at(&mut b, ptr).ok()?;
    Some(u32::from_ne_bytes(b))
}

/// One line of a mountinfo file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountLine {
    pub id: u64,
    pub dev: (u32, u32),
    pub point: String,
    pub fstype: String,
    /// Per-mount options ("rw,nosuid,relatime").
    pub opts: String,
    pub source: String,
    /// Superblock options ("rw,user_id=0,group_id=0,default_permissions").
    pub super_opts: String,
}

/// The lines of a mountinfo file that parse.
pub fn mountinfo_lines(s: &str) -> impl Iterator<Item = MountLine> + '_ {
    s.lines().filter_map(|l| {
        let (a, b) = l.split_once(" - ")?;
        let f: Vec<&str> = a.split(' ').collect();
        let (maj, min) = f.get(2)?.split_once(':')?;
        let t: Vec<&str> = b.split(' ').collect();
        Some(MountLine {
            id: f.first()?.parse().ok()?,
            dev: (maj.parse().ok()?, min.parse().ok()?),
            point: unescape(f.get(4)?),
            fstype: t.first()?.to_string(),
            opts: f.get(5).unwrap_or(&"").to_string(),
            source: unescape(t.get(1).unwrap_or(&"")),
            super_opts: t.get(2).unwrap_or(&"").to_string(),
        })
    })
}

/// This process's mounts.
pub fn self_mounts() -> Vec<MountLine> {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo_lines(&s).collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device of the daxlink mount on `dir` as this process sees it now
/// (the last one there: call right after mounting).
pub fn mount_dev(dir: &Path) -> Option<(u32, u32)> {
    let want = dir.canonicalize().ok()?;
    let want = want.to_str()?;
    self_mounts()
        .into_iter()
        .rfind(|m| m.point == want && m.fstype == "fuse.daxlink")
        .map(|m| m.dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_fdinfo_parse() {
        let st = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t24 65533 65534 \nCapEff:\t0000000000200000\n";
        let c = Caller::from_status(9, 1000, 1000, st);
        assert_eq!(c.groups, vec![24, 65533, 65534]);
        assert!(c.has_cap(CAP_SYS_ADMIN));
        assert!(!c.has_cap(CAP_FSETID));
        assert!(c.who().in_group(65533));
        let c = Caller::from_status(9, 1000, 1000, "");
        assert!(c.groups.is_empty() && c.cap_eff == 0);
        assert_eq!(
            parse_fdinfo("pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t611\n"),
            Some((0o100002, 27, 611))
        );
        assert_eq!(parse_fdinfo("pos:\t0\n"), None);
        let f = OpenFile {
            dev: (0, 50),
            ino: 1,
            flags: libc::O_WRONLY,
        };
        assert!(!f.readable());
        assert!(OpenFile {
            flags: libc::O_RDWR,
            ..f
        }
        .readable());
        assert!(!OpenFile {
            flags: libc::O_PATH,
            ..f
        }
        .readable());
        assert_eq!(unescape("/tmp/a\\040b"), "/tmp/a b");
        let mi = "27 1 0:50 / /tmp/a\\040b rw - fuse.daxlink img rw\n";
        let l: Vec<MountLine> = mountinfo_lines(mi).collect();
        assert_eq!(
            (l[0].id, l[0].dev, l[0].point.as_str()),
            (27, (0, 50), "/tmp/a b")
        );
        assert_eq!(l[0].fstype, "fuse.daxlink");
        assert_eq!((l[0].opts.as_str(), l[0].source.as_str()), ("rw", "img"));
        assert_eq!(l[0].super_opts, "rw");
    }
}
