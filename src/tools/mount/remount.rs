//! `mount -o remount,ro|rw DIR`: mount(8) runs mount.fuse3, which runs
//! `daxlink SOURCE DIR -o rw,relatime,remount,ro,user_id=0,...` (the mount's
//! current options from mountinfo, then the ones given). Also
//! `daxlink remount DIR -o ro|rw`.
//!
//! Two parties must switch. The kernel: mount(2) with MS_REMOUNT, so that the
//! VFS itself answers EROFS (FUSE's `fuse_reconfigure` only syncs and accepts
//! the change; a remount read-only fails with EBUSY while a file is open for
//! writing). The daemon: the REMOUNT ioctl on the mount's root (CAP_SYS_ADMIN),
//! which marks the image clean when going read-only and not clean when going
//! back (`Fs::set_read_only`). Going read-only the kernel goes first, so no
//! write is in flight when the daemon marks the image clean; going read-write
//! the daemon goes first, and is switched back if the kernel refuses.
//!
//! Options only the daemon knows (page_model, threads, persist, ...) cannot
//! change in a remount: a remount naming a different value is refused.

#![forbid(unsafe_code)]

use std::path::Path;

use nix::mount::MsFlags;

use super::opts::{parse_opts, MountOpts};
use crate::fuse::ioctl as io;

/// Run a remount of the daxlink mount on `dir` with the options `raw`; exit
/// status as mount(8) expects: 0, or one line and 32.
pub fn remount_main(dir: &Path, raw: &str) -> i32 {
    match remount(dir, raw) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("daxlink: remount {}: {e}", dir.display());
            32
        }
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The kernel's view of the mount's flags: per-mount options and the
/// superblock's ro / sync / dirsync (from mountinfo).
fn kernel_flags(o: &mut MountOpts, per_mount: &str, super_opts: &str) {
    o.read_only = false;
    o.dev = true;
    o.suid = true;
    o.exec = true;
    o.sync = false;
    o.dirsync = false;
    for f in per_mount.split(',') {
        match f {
            "ro" => o.read_only = true,
            "nosuid" => o.suid = false,
            "nodev" => o.dev = false,
            "noexec" => o.exec = false,
            _ => {}
        }
    }
    for f in super_opts.split(',') {
        match f {
            "ro" => o.read_only = true,
            "sync" => o.sync = true,
            "dirsync" => o.dirsync = true,
            _ => {}
        }
    }
}

/// Refuse a change of anything only the daemon knows.
fn unchangeable(daemon: &MountOpts, want: &MountOpts) -> Result<(), String> {
    let mut diffs = Vec::new();
    if want.page_model != daemon.page_model {
        diffs.push(format!(
            "page_model ({} -> {})",
            daemon.page_model.name(),
            want.page_model.name()
        ));
    }
    if want.layout_timeout_ms != daemon.layout_timeout_ms {
        diffs.push("layout_timeout_ms".to_string());
    }
    if want.pin_limits != daemon.pin_limits {
        diffs.push("max_pins/max_pinned".to_string());
    }
    if want.threads != daemon.threads {
        diffs.push("threads".to_string());
    }
    if want.persist != daemon.persist {
        diffs.push("persist".to_string());
    }
    if want.direct != daemon.direct || want.recall_timeout_ms != daemon.recall_timeout_ms {
        diffs.push("direct/recall_timeout_ms".to_string());
    }
    // The kernel lists allow_other for allow_root mounts too.
    if (want.allow_other && !(daemon.allow_other || daemon.allow_root))
        || (want.allow_root && !daemon.allow_root)
    {
        diffs.push("allow_other/allow_root".to_string());
    }
    if want.auto_unmount != daemon.auto_unmount {
        diffs.push("auto_unmount".to_string());
    }
    if want.fsname.is_some() && want.fsname != daemon.fsname {
        diffs.push("fsname".to_string());
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cannot change {} of a mounted filesystem (only ro/rw and the mount flags); unmount and mount again",
            diffs.join(", ")
        ))
    }
}

fn set_daemon_ro(root: &std::fs::File, ro: bool) -> std::io::Result<()> {
    let mut b = [0u8; 8];
    io::put_u32(&mut b, 0, ro as u32);
    io::call(root, io::Cmd::REMOUNT, &mut b).map(|_| ())
}

fn remount(dir: &Path, raw: &str) -> Result<(), String> {
    let canon = dir.canonicalize().map_err(|e| e.to_string())?;
    let point = canon.to_string_lossy().into_owned();
    let m = crate::util::mountinfo::self_mounts()
        .into_iter()
        .rfind(|m| m.point == point)
        .filter(|m| m.fstype == "fuse.daxlink")
        .ok_or("not a daxlink mount point")?;
    let root = std::fs::File::open(&canon).map_err(|e| e.to_string())?;

    let mut buf = vec![0u8; io::OPTIONS_SIZE];
    io::call(&root, io::Cmd::OPTIONS, &mut buf)
        .map_err(|e| format!("cannot ask the daemon for its options: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let mut daemon = MountOpts::default();
    parse_opts(&mut daemon, text.trim_end_matches('\0'))?;

    let mut now = daemon.clone();
    kernel_flags(&mut now, &m.opts, &m.super_opts);
    let mut want = now.clone();
    parse_opts(&mut want, raw)?;
    // Access times are the daemon's (the kernel never updates them on FUSE,
    // and mount(8) repeats the kernel's "relatime" whatever the daemon does):
    // a remount keeps the daemon's mode.
    want.atime_mode = daemon.atime_mode;
    want.nodiratime = daemon.nodiratime;
    unchangeable(&daemon, &want)?;

    let mut flags = MsFlags::MS_REMOUNT;
    for (on, f) in [
        (want.read_only, MsFlags::MS_RDONLY),
        (!want.suid, MsFlags::MS_NOSUID),
        (!want.dev, MsFlags::MS_NODEV),
        (!want.exec, MsFlags::MS_NOEXEC),
        (want.sync, MsFlags::MS_SYNCHRONOUS),
        (want.dirsync, MsFlags::MS_DIRSYNC),
    ] {
        if on {
            flags |= f;
        }
    }
    flags |= if want.atime_mode == crate::fs::AtimeMode::Never {
        MsFlags::MS_NOATIME
    } else {
        MsFlags::MS_RELATIME
    };
    let kernel = || {
        nix::mount::mount(None::<&str>, &canon, None::<&str>, flags, None::<&str>).map_err(|e| {
            match e {
                nix::errno::Errno::EBUSY => {
                    "busy: a file is open for writing, or a deleted file is still open".to_string()
                }
                nix::errno::Errno::EPERM => "permission denied (needs CAP_SYS_ADMIN)".to_string(),
                e => format!("mount(2): {e}"),
            }
        })
    };
    let daemon_err = |e: std::io::Error| match errno_of(&e) {
        libc::EPERM => "permission denied (needs CAP_SYS_ADMIN)".to_string(),
        libc::EROFS => "the daemon has the image open read-only (it was mounted with -o ro \
                        or -o ro,norecovery, or the image has features this version \
                        can only read); \
                        unmount and mount it read-write"
            .to_string(),
        libc::EIO => "the filesystem had an I/O error or was shut down; unmount it".to_string(),
        _ => format!("the daemon refused: {e}"),
    };

    if want.read_only {
        // The kernel first: it refuses while a file is open for writing, and
        // afterwards no write can be in flight when the daemon marks the image clean.
        kernel()?;
        set_daemon_ro(&root, true).map_err(|e| {
            format!(
                "the mount is read-only, but the daemon did not mark the image clean: {}",
                daemon_err(e)
            )
        })?;
    } else {
        set_daemon_ro(&root, false).map_err(daemon_err)?;
        if let Err(e) = kernel() {
            if now.read_only {
                let _ = set_daemon_ro(&root, true);
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_mountinfo_and_changes_refused() {
        let mut o = MountOpts::default();
        kernel_flags(
            &mut o,
            "rw,nosuid,nodev,relatime",
            "ro,user_id=0,group_id=0,default_permissions,dirsync",
        );
        assert!(o.read_only && !o.suid && !o.dev && o.exec && o.dirsync);
        let daemon = MountOpts::default();
        let mut want = daemon.clone();
        parse_opts(
            &mut want,
            "rw,relatime,remount,ro,user_id=0,group_id=0,default_permissions,dev,suid",
        )
        .unwrap();
        assert!(want.remount && want.read_only);
        unchangeable(&daemon, &want).unwrap();
        parse_opts(&mut want, "page_model=legacy").unwrap();
        let e = unchangeable(&daemon, &want).unwrap_err();
        assert!(e.contains("page_model (proxy -> legacy)"), "{e}");
        let mut rt = daemon.clone();
        rt.allow_root = true;
        let mut want = rt.clone();
        parse_opts(&mut want, "allow_other").unwrap();
        unchangeable(&rt, &want).unwrap();
    }

    #[test]
    fn daemon_options_parse_back() {
        let mut o = MountOpts::default();
        parse_opts(
            &mut o,
            "page_model=upstream,threads=3,persist=msync,allow_root",
        )
        .unwrap();
        let mut back = MountOpts::default();
        parse_opts(&mut back, &crate::tools::mount::opts::daemon_options(&o)).unwrap();
        unchangeable(&o, &back).unwrap();
        assert_eq!(back.threads, 3);
    }
}
