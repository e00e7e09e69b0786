//! The single-writer lock of an image (docs/INTERNALS.md, "One writer per image").
//!
//! Not root: an exclusive (writer) or shared (reader) `flock` on the image
//! itself, as any user who can open the image can take.
//!
//! Root: the lock that counts is a `flock` on a lock file in [`LOCK_DIR`]
//! (0700, root's), named by the image's device and inode number (a device by
//! its device number), which no other user can open, so no other user can
//! take it or hold it. Root also tries the image's own `flock`, so that it and
//! a mount by the image's (non-root) owner keep each other out; a conflict
//! there counts only if a holder could write the image (root, or a user the
//! mode lets write), so a user who can merely read it blocks nothing.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::MediaError;

/// Root's lock files: one per image, created as needed and never removed
/// (on tmpfs: gone at the next boot).
pub const LOCK_DIR: &str = "/run/daxlink";

/// An open image and the lock on it; the lock lasts as long as this value,
/// its clones and any mapping made from it.
pub struct Locked {
    file: File,
    /// Root's lock file (None when not root).
    lock: Option<File>,
}

impl Locked {
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A second handle holding the same lock.
    pub fn try_clone(&self) -> std::io::Result<Locked> {
        Ok(Locked {
            file: self.file.try_clone()?,
            lock: self.lock.as_ref().map(File::try_clone).transpose()?,
        })
    }

    pub(super) fn into_parts(self) -> (File, Option<File>) {
        (self.file, self.lock)
    }
}

/// The processes holding a `flock` on the file `md` describes, from /proc/locks.
fn holder_pids(md: &Metadata) -> Vec<u32> {
    let key = format!(
        "{:02x}:{:02x}:{}",
        libc::major(md.dev()),
        libc::minor(md.dev()),
        md.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut pids: Vec<u32> = Vec::new();
    for line in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; waiters have "->" after the id.
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && f[1] == "FLOCK" && f[5] == key {
            if let Ok(pid) = f[4].parse::<u32>() {
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

/// "pid 123 (daxlink), pid 456 (flock)"; None for no pids.
fn describe(pids: &[u32]) -> Option<String> {
    if pids.is_empty() {
        return None;
    }
    let named: Vec<String> = pids
        .iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match comm.trim() {
                "" => format!("pid {pid}"),
                c => format!("pid {pid} ({c})"),
            }
        })
        .collect();
    Some(named.join(", "))
}

/// Could process `pid` write the file `md` describes? Root can; otherwise any
/// of its user ids owning a user-writable file, any of its groups owning a
/// group-writable one, or a file others can write. A process that is gone
/// (or hidden from us) counts as not a writer.
fn could_write(pid: u32, md: &Metadata) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let ids = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uids = ids("Uid:");
    let mut gids = ids("Gid:");
    gids.extend(ids("Groups:"));
    let mode = md.mode();
    uids.contains(&0)
        || (mode & 0o200 != 0 && uids.contains(&md.uid()))
        || (mode & 0o020 != 0 && gids.contains(&md.gid()))
        || mode & 0o002 != 0
}

/// Open an image or device read-write if `write` (a block device then with
/// `O_EXCL`, the block layer's exclusive claim, which also fails while a
/// kernel filesystem has it mounted), not following a final symlink if
/// `nofollow`. Close-on-exec.
pub fn open_image(path: &Path, write: bool, nofollow: bool) -> Result<File, MediaError> {
    let is_block = std::fs::metadata(path)?.file_type().is_block_device();
    let mut oo = OpenOptions::new();
    oo.read(true).write(write);
    let mut flags = 0;
    if write && is_block {
        flags |= libc::O_EXCL;
    }
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    oo.custom_flags(flags);
    match oo.open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let who = std::fs::metadata(path)
                .ok()
                .and_then(|md| describe(&holder_pids(&md)))
                .unwrap_or_else(|| "another program (opened exclusively; mounted?)".into());
            Err(MediaError::Busy(format!("in use by {who}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// How long a tool waits for a daxlink daemon whose mount of the image is
/// gone to write its last blocks and exit (it holds the lock until then).
pub const FINISH_WAIT: Duration = Duration::from_secs(10);

/// How long any other conflict is retried: it can be transient (a process
/// that forks while it holds the image open keeps the lock in the child until
/// the child's exec closes the descriptor).
const TRANSIENT_WAIT: Duration = Duration::from_millis(500);

static NOTICE: OnceLock<fn(&str)> = OnceLock::new();

/// Where the one line "waiting for daxlink (pid N) to finish with IMAGE"
/// goes: a tool sets its stderr here (once, at start); otherwise the log.
pub fn on_wait(print: fn(&str)) {
    let _ = NOTICE.set(print);
}

fn notice(msg: &str) {
    match NOTICE.get() {
        Some(print) => print(msg),
        None => log::warn!("{msg}"),
    }
}

/// Is every holder a daxlink daemon that no longer has this image mounted
/// (after `umount`, the daemon still writes its last blocks and exits)? A
/// daemon's mount names the image's absolute path as its source (unless
/// `fsname=` said otherwise: then it counts as mounted). Only decides
/// whether to wait, bounded; it grants nothing.
fn all_finishing(pids: &[u32], md: &Metadata) -> bool {
    let same = |source: &str| {
        std::fs::metadata(source)
            .map(|s| s.dev() == md.dev() && s.ino() == md.ino())
            .unwrap_or(false)
    };
    !pids.is_empty()
        && pids.iter().all(|&pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "daxlink"
                && !crate::util::mountinfo::mounts_of(&pid.to_string())
                    .iter()
                    .any(|m| {
                        m.fstype == "fuse.daxlink"
                            && (!m.source.starts_with('/') || same(&m.source))
                    })
        })
}

/// Try `flock` (exclusive if `write`) on `f`, retrying a conflict for
/// [`TRANSIENT_WAIT`], or for [`FINISH_WAIT`] while every holder is a daxlink
/// daemon finishing with an unmounted image (one line says so). `counts`
/// says whether a conflict with these holders counts; one that does not is
/// given up at once. Ok(false): not locked, and no holder that counts.
/// `path` names the image in the waiting line.
fn try_flock(
    f: &File,
    write: bool,
    path: &Path,
    counts: impl Fn(&[u32]) -> bool,
) -> Result<bool, MediaError> {
    let try_once = || {
        if write {
            f.try_lock()
        } else {
            f.try_lock_shared()
        }
    };
    let md = f.metadata()?;
    // The image itself (for root, `f` is the lock file); stat once, not per retry.
    let image = std::fs::metadata(path).unwrap_or_else(|_| md.clone());
    let t0 = Instant::now();
    let mut told = false;
    let mut finishing = false;
    loop {
        match try_once() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let pids = holder_pids(&md);
                if !counts(&pids) {
                    return Ok(false);
                }
                // Sticky: the daemon may exit between the failed lock and
                // the read of /proc/locks (no holder is listed then).
                finishing = finishing || all_finishing(&pids, &image);
                let limit = if finishing {
                    if !told && t0.elapsed() >= Duration::from_millis(100) {
                        let who = describe(&pids).unwrap_or_default();
                        notice(&format!(
                            "waiting for {who} to finish with {}",
                            path.display()
                        ));
                        told = true;
                    }
                    FINISH_WAIT
                } else {
                    TRANSIENT_WAIT
                };
                if t0.elapsed() >= limit {
                    let who = describe(&pids).unwrap_or_else(|| "another process".into());
                    return Err(MediaError::Busy(format!("in use by {who}")));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Root's lock file for the image `md` describes, in [`LOCK_DIR`].
fn lock_file_for(md: &Metadata) -> Result<File, MediaError> {
    let dir = Path::new(LOCK_DIR);
    let bad = |err: String| MediaError::LockDir {
        path: dir.to_path_buf(),
        err,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    let dmd = std::fs::symlink_metadata(dir).map_err(|e| bad(e.to_string()))?;
    if !dmd.is_dir() || dmd.uid() != 0 {
        return Err(bad("not a directory owned by root; remove it".into()));
    }
    if dmd.mode() & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| bad(e.to_string()))?;
    }
    let ft = md.file_type();
    let name = if ft.is_block_device() || ft.is_char_device() {
        let kind = if ft.is_block_device() { "b" } else { "c" };
        let r = md.rdev();
        format!("dev-{kind}{}:{}", libc::major(r), libc::minor(r))
    } else {
        let d = md.dev();
        format!("image-{}:{}-{}", libc::major(d), libc::minor(d), md.ino())
    };
    let p: PathBuf = dir.join(name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .map_err(|e| bad(format!("{}: {e}", p.display())))
}

/// Lock an image opened by [`open_image`] (writable if `write`): exclusive
/// if `write`, else shared. Fails with [`MediaError::Busy`] naming the holder.
/// `path` is the image's name (in the line a wait prints).
pub fn lock_file(file: File, write: bool, path: &Path) -> Result<Locked, MediaError> {
    if !nix::unistd::geteuid().is_root() {
        try_flock(&file, write, path, |_| true)?;
        return Ok(Locked { file, lock: None });
    }
    let lock = lock_file_for(&file.metadata()?)?;
    try_flock(&lock, write, path, |_| true)?;
    // The image's own flock: only a holder that could write the image counts.
    let md = file.metadata()?;
    if !try_flock(&file, write, path, |pids| {
        pids.iter().any(|&p| could_write(p, &md))
    })? {
        log::info!("a flock on the image by a process that cannot write it is ignored");
    }
    Ok(Locked {
        file,
        lock: Some(lock),
    })
}

/// [`open_image`] (following symlinks) and [`lock_file`].
pub fn lock_path(path: &Path, write: bool) -> Result<Locked, MediaError> {
    lock_file(open_image(path, write, false)?, write, path)
}
