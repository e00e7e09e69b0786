//! Who sent a FUSE request, beyond what the request header says.
//!
//! The header carries the caller's fs uid and fs gid (mapped into the
//! mount's user namespace by the kernel) and its thread id. The kernel
//! applies the permission rules itself (`default_permissions`), so the
//! daemon needs more only where it must decide, and there it trusts only
//! what the kernel vouches for (ARCHITECTURE.md, "What the daemon trusts"):
//! - what the kernel would decide with a capability (CAP_SYS_ADMIN for the
//!   root-only ioctls, CAP_FSETID for set-ID clearing, CAP_DAC_* for what the
//!   owners report may show) the daemon grants to root of the mount's user
//!   namespace alone: the header's uid is 0 and the calling thread is in the
//!   daemon's user namespace, which is the mount's (the kernel's
//!   `ns_capable(fc->user_ns, ...)`). No capability set is read from /proc:
//!   the effective set there is relative to the caller's own namespace,
//!   where `unshare -Ur` gives any user a full set;
//! - supplementary groups come from /proc/TID/status, read while a pidfd
//!   holds the thread: if the thread is gone when the reads are done, the
//!   answer is thrown away (no groups, no capabilities: the least
//!   privilege). A thread changes its own credentials only itself, and it is
//!   blocked in its system call until the daemon replies;
//! - a clone or dedupe source is the caller's open file itself, taken from
//!   its descriptor table with `pidfd_getfd` and checked with fstat and
//!   F_GETFL on that one object: there is no second read for a racing thread
//!   to change. This is done on a long-operation thread, not a FUSE worker
//!   (closing that file sends FLUSH to this daemon).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::check::acl::Who;

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_FSETID: u32 = 4;
pub const CAP_SYS_ADMIN: u32 = 21;

/// What a request's header says of its sender: thread id, fs uid, fs gid.
/// Plain data, so a request can be finished on another thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Origin {
    /// The caller, with what /proc adds (read now).
    pub fn caller(&self) -> Caller {
        Caller::new(self.pid, self.uid, self.gid)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Root of the mount's user namespace: header uid 0, thread in the
    /// daemon's user namespace, thread alive when that was read.
    pub privileged: bool,
}

impl Caller {
    /// The caller of a request from thread `pid` with fs ids `uid`:`gid`.
    pub fn new(pid: u32, uid: u32, gid: u32) -> Caller {
        let least = Caller {
            pid,
            uid,
            gid,
            ..Default::default()
        };
        // Hold the thread while reading about it: if it exits meanwhile,
        // its id may name another thread by the time a read happens.
        let Some(pidfd) = Pidfd::open(pid) else {
            return least;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let same_ns = in_daemon_user_ns(pid);
        if !pidfd.alive() {
            return least;
        }
        let mut c = Caller::from_status(pid, uid, gid, &status);
        c.privileged = uid == 0 && same_ns;
        c
    }

    /// Parse the `Groups:` line of a /proc status file.
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
            }
        }
        c
    }

    /// Whether the kernel would grant `cap` here, as the daemon decides it:
    /// root of the mount's user namespace has every capability, no one else
    /// any (a root process that dropped capabilities still counts as root).
    pub fn has_cap(&self, _cap: u32) -> bool {
        self.privileged
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

/// The user namespace (nsfs device and inode) of `/proc/PATH/ns/user`.
fn user_ns(proc_dir: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{proc_dir}/ns/user")).ok()?;
    Some((m.dev(), m.ino()))
}

/// Whether thread `pid` is in the daemon's user namespace, which is the
/// mount's (the daemon opened /dev/fuse and mounted from it).
fn in_daemon_user_ns(pid: u32) -> bool {
    static OWN: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    let own = *OWN.get_or_init(|| user_ns("self"));
    own.is_some() && user_ns(&pid.to_string()) == own
}

/// A pidfd for one thread (PIDFD_THREAD), so that what is read about the
/// thread can be checked to be about that thread.
struct Pidfd(OwnedFd);

impl Pidfd {
    fn open(tid: u32) -> Option<Pidfd> {
        if tid == 0 {
            return None;
        }
        let tid = libc::pid_t::try_from(tid).ok()?;
        // PIDFD_THREAD (= O_EXCL, Linux 6.9): the thread itself, not its
        // thread group; then the group leader for older kernels.
        sys_fd(|| {
            // SAFETY: pidfd_open takes a pid and flags by value and touches
            // no memory of this process.
            unsafe { libc::syscall(libc::SYS_pidfd_open, tid, libc::O_EXCL) }
        })
        .or_else(|| {
            // SAFETY: as above.
            sys_fd(|| unsafe { libc::syscall(libc::SYS_pidfd_open, tid, 0) })
        })
        .map(Pidfd)
    }

    /// The thread has not exited (a pidfd polls readable once it has).
    fn alive(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut p = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut p, PollTimeout::ZERO), Ok(0))
    }

    /// A duplicate of the thread's descriptor `fd` (pidfd_getfd: needs the
    /// daemon to be allowed to ptrace the caller, as root is).
    fn getfd(&self, fd: i32) -> Option<OwnedFd> {
        let pidfd = self.0.as_raw_fd();
        // SAFETY: pidfd_getfd takes two descriptor numbers and flags by
        // value; the new descriptor (close-on-exec) is owned by the result.
        sys_fd(|| unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) })
    }
}

/// A pidfd for a whole process (direct access's liveness check of a
/// client, `fuse::direct`): readable once the process has exited.
pub(crate) fn process_pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)?;
    // SAFETY: pidfd_open takes a pid and flags by value and touches no
    // memory of this process.
    sys_fd(|| unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// Has the process behind `pidfd` not exited yet?
pub(crate) fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(0))
}

/// Own the descriptor a descriptor-returning system call gave, if any.
fn sys_fd(call: impl FnOnce() -> libc::c_long) -> Option<OwnedFd> {
    let r = call();
    let fd = i32::try_from(r).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: a successful pidfd_open / pidfd_getfd returns a new
    // descriptor that nothing else in this process owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A file a process holds open, as fstat and fcntl on it describe it.
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

/// The open file behind descriptor `fd` of thread `pid`: the file object
/// itself, taken from the thread's descriptor table, so a racing thread
/// can only change which file is looked at, never what is checked about it.
pub fn open_file(pid: u32, fd: i32) -> Option<OpenFile> {
    if fd < 0 {
        return None;
    }
    let file = Pidfd::open(pid)?.getfd(fd)?;
    let st = nix::sys::stat::fstat(&file).ok()?;
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let dev = st.st_dev as libc::dev_t;
    let f = OpenFile {
        dev: (libc::major(dev), libc::minor(dev)),
        ino: st.st_ino as u64,
        flags,
    };
    // close(2) of a file on this mount sends FLUSH and waits for a FUSE
    // worker to answer: callers run on the long-operation threads
    // (`fuse/long.rs`), never on a worker. Closed before the reply, so an
    // unmount right after the clone does not find the mount busy.
    drop(file);
    Some(f)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_fdinfo_parse() {
        let st = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t24 65533 65534 \n";
        let c = Caller::from_status(9, 1000, 1000, st);
        assert_eq!(c.groups, vec![24, 65533, 65534]);
        assert!(!c.has_cap(CAP_SYS_ADMIN));
        assert!(c.who().in_group(65533));
        let c = Caller::from_status(9, 1000, 1000, "");
        assert!(c.groups.is_empty() && !c.privileged);
        // This test process: root in its own namespace, alive.
        let me = Caller::new(std::process::id(), 0, 0);
        assert_eq!(me.privileged, nix::unistd::geteuid().is_root());
        assert!(!Caller::new(std::process::id(), 65534, 65534).privileged);
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
    }
}
