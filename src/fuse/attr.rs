//! FUSE attribute conversions: times and the file kind between the
//! filesystem's inode attributes and fuser's `FileAttr`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::format::Timespec;
use crate::fs::Attr;

/// A stored time as the kernel gets it. Never panics on what a hostile
/// image may hold (any second, nanoseconds past 10^9 taken as 999,999,999).
pub(super) fn systime(t: Timespec) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    let base = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.sec.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    base.and_then(|b| b.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

/// The earliest and latest second a time set through FUSE may have: ext4's
/// range (1901-12-13 to 2446-05-10). As the kernel's `timestamp_truncate`
/// does for ext4, a time outside is clamped to the end it passed, with no
/// nanoseconds; the reply's attributes carry the stored time.
pub const TIME_MIN: i64 = i32::MIN as i64;
pub const TIME_MAX: i64 = (1 << 34) - 1 + i32::MIN as i64;

pub(super) fn timespec(t: SystemTime) -> Timespec {
    let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let sec = 0i64.saturating_sub_unsigned(d.as_secs());
            match d.subsec_nanos() {
                0 => (sec, 0),
                n => (sec.saturating_sub(1), 1_000_000_000 - n),
            }
        }
    };
    if sec < TIME_MIN {
        Timespec {
            sec: TIME_MIN,
            nsec: 0,
        }
    } else if sec > TIME_MAX {
        Timespec {
            sec: TIME_MAX,
            nsec: 0,
        }
    } else {
        Timespec { sec, nsec }
    }
}

pub(super) fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: systime(a.atime),
        mtime: systime(a.mtime),
        ctime: systime(a.ctime),
        crtime: systime(a.crtime),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// The mode fuser sends for `a`: the type as `kind` reads it (an unknown
/// type is a regular file) and the permission bits.
pub fn wire_mode(mode: u32) -> u32 {
    let t = match kind(mode) {
        FileType::Directory => libc::S_IFDIR,
        FileType::Symlink => libc::S_IFLNK,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::Socket => libc::S_IFSOCK,
        FileType::RegularFile => libc::S_IFREG,
    };
    t | (mode & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_the_extremes_are_clamped_not_panicking() {
        let far_past = UNIX_EPOCH - Duration::new(i64::MAX as u64 + 1, 0);
        assert_eq!(
            timespec(far_past),
            Timespec {
                sec: TIME_MIN,
                nsec: 0
            }
        );
        let far_future = UNIX_EPOCH + Duration::new(i64::MAX as u64, 999_999_999);
        assert_eq!(
            timespec(far_future),
            Timespec {
                sec: TIME_MAX,
                nsec: 0
            }
        );
        let before = UNIX_EPOCH - Duration::new(1, 200_000_000);
        assert_eq!(
            timespec(before),
            Timespec {
                sec: -2,
                nsec: 800_000_000
            }
        );
        assert_eq!(systime(timespec(before)), before);
        // A hostile image may hold any value: turning it back never panics.
        for sec in [i64::MIN, i64::MAX, 0, -1] {
            let _ = systime(Timespec {
                sec,
                nsec: u32::MAX,
            });
        }
    }
}
