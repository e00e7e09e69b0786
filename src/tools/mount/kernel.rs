//! The kernel mount of the daemon's FUSE connection, made and ended by the
//! daemon itself, so that it never unmounts anything but its own mount.
//!
//! fuser mounts and, when its session ends, unmounts by path. After a plain
//! `umount` the kernel has already taken daxlink away, so an unmount by
//! path then takes whatever is mounted there now: the tmpfs daxlink was
//! mounted over, or a second daxlink mount below. So where it may (root),
//! the daemon opens /dev/fuse and calls mount(2) itself, with the options
//! fuser would give, and hands the descriptor to fuser
//! (`Session::from_fd`), which then never unmounts. To end its own mount
//! (SIGTERM), `unmount_own` names it by mount id: it unmounts the path only
//! while the topmost mount there is that one, and otherwise aborts the
//! connection (the fuse control filesystem), which ends the session and
//! leaves the mount to whoever covered it.

#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

/// What mount(2) needs beyond the mount point.
pub struct KernelOpts {
    /// The source shown in /proc/mounts (the image).
    pub source: String,
    /// `default_permissions`, `allow_other`, ... (comma-separated).
    pub data: String,
    pub flags: MsFlags,
}

/// Mount a new FUSE connection on `dir`. `Ok(None)`: not allowed to
/// (EPERM: not root), let fuser mount through fusermount3.
pub fn mount(dir: &Path, k: &KernelOpts) -> Result<Option<OwnedFd>, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mode = std::fs::metadata(dir)
        .map_err(|e| format!("mount point {}: {e}", dir.display()))?
        .mode();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    let fd = OwnedFd::from(dev);
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},subtype=daxlink{}{}",
        fd.as_raw_fd(),
        mode & libc::S_IFMT,
        nix::unistd::getuid(),
        nix::unistd::getgid(),
        if k.data.is_empty() { "" } else { "," },
        k.data
    );
    match nix::mount::mount(
        Some(k.source.as_str()),
        dir,
        Some("fuse"),
        k.flags,
        Some(data.as_str()),
    ) {
        Ok(()) => Ok(Some(fd)),
        Err(nix::errno::Errno::EPERM) => Ok(None),
        Err(e) => Err(format!("cannot mount on {}: {e}", dir.display())),
    }
}

/// End this daemon's own mount `id` on `dir` (device minor `minor`): unmount
/// it if it is the topmost mount on `dir` (lazily if busy), else abort the
/// connection. Never unmounts another mount.
pub fn unmount_own(dir: &Path, id: u64, minor: Option<u32>) {
    let point = dir.to_string_lossy();
    let top = crate::util::mountinfo::self_mounts()
        .into_iter()
        .rfind(|m| m.point == point);
    match top {
        Some(m) if m.id == id => {
            if let Err(e) = nix::mount::umount2(dir, MntFlags::empty()) {
                log::info!("unmount {}: {e}; detaching it", dir.display());
                if let Err(e) = nix::mount::umount2(dir, MntFlags::MNT_DETACH) {
                    log::error!("cannot detach {}: {e}", dir.display());
                }
            }
        }
        _ if !crate::util::mountinfo::self_mounts()
            .iter()
            .any(|m| m.id == id) =>
        {
            log::info!("{} is no longer mounted", dir.display())
        }
        _ => {
            log::warn!(
                "another mount covers {}: ending the connection instead of unmounting",
                dir.display()
            );
            abort(minor);
        }
    }
}

/// Abort the FUSE connection of device minor `minor` (its requests fail
/// with ENOTCONN, the session ends; the mount stays until unmounted). If
/// that cannot be done, the shutdown watchdog ends the daemon, which ends
/// the connection too.
pub fn abort(minor: Option<u32>) {
    let Some(minor) = minor else {
        log::error!("cannot abort the connection: its device is unknown");
        return;
    };
    let dir = "/sys/fs/fuse/connections";
    if !Path::new(&format!("{dir}/{minor}")).exists() {
        // The fuse control filesystem is not always mounted.
        if let Err(e) = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            MsFlags::empty(),
            None::<&str>,
        ) {
            log::debug!("mount fusectl on {dir}: {e}");
        }
    }
    let path = format!("{dir}/{minor}/abort");
    if let Err(e) = std::fs::write(&path, b"1") {
        log::error!("cannot abort the connection ({path}): {e}");
    }
}
