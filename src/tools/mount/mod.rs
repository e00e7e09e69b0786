//! Mounting: daemonizing as mount(8) expects, serving, clean shutdown. The
//! `-o` options are parsed in [`opts`], the kernel mount (for root) is in
//! [`kernel`], a live mount is changed by [`remount`].

#![forbid(unsafe_code)]

pub mod kernel;
pub mod opts;
pub mod remount;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};

use crate::error::FsError;
use crate::fs::{Fs, FsOptions};
use crate::fuse::DaxFuse;
use crate::media::Media;
use opts::{daemon_options, MountOpts};

/// The mount's source as /proc/mounts shows it: `fsname=`, or the image's
/// absolute path, so that the image lock can tell whether a daemon holding
/// the image still has it mounted (`media::lock`).
fn source_name(image: &Path, o: &MountOpts) -> String {
    o.fsname.clone().unwrap_or_else(|| {
        image
            .canonicalize()
            .unwrap_or_else(|_| image.to_path_buf())
            .display()
            .to_string()
    })
}

fn fuser_config(image: &Path, o: &MountOpts) -> Config {
    let mut c = Config::default();
    let mut mo = vec![
        MountOption::FSName(source_name(image, o)),
        MountOption::CUSTOM("subtype=daxlink".into()),
        MountOption::DefaultPermissions,
        if o.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
        if o.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
        if o.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        if o.exec {
            MountOption::Exec
        } else {
            MountOption::NoExec
        },
        if o.atime_mode != crate::fs::AtimeMode::Never {
            MountOption::Atime
        } else {
            MountOption::NoAtime
        },
    ];
    if o.sync {
        mo.push(MountOption::Sync);
    }
    if o.dirsync {
        mo.push(MountOption::DirSync);
    }
    if o.auto_unmount {
        mo.push(MountOption::AutoUnmount);
    }
    c.mount_options = mo;
    c.acl = if o.allow_other {
        SessionACL::All
    } else if o.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(o.threads);
    c.clone_fd = true;
    c
}

/// What mount(2) gets when the daemon mounts itself: the same options
/// fuser would pass (nosuid and nodev unless `suid` / `dev`, as fuser and
/// fusermount3 default).
fn kernel_opts(image: &Path, o: &MountOpts) -> crate::tools::mount::kernel::KernelOpts {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    for (on, f) in [
        (!o.suid, MsFlags::MS_NOSUID),
        (!o.dev, MsFlags::MS_NODEV),
        (!o.exec, MsFlags::MS_NOEXEC),
        (o.read_only, MsFlags::MS_RDONLY),
        (
            o.atime_mode == crate::fs::AtimeMode::Never,
            MsFlags::MS_NOATIME,
        ),
        (o.sync, MsFlags::MS_SYNCHRONOUS),
        (o.dirsync, MsFlags::MS_DIRSYNC),
    ] {
        if on {
            flags |= f;
        }
    }
    let mut data = vec!["default_permissions"];
    if o.allow_other || o.allow_root {
        // allow_root: the kernel lets everyone in; fuser turns away
        // everyone but root and the owner (its SessionACL).
        data.push("allow_other");
    }
    crate::tools::mount::kernel::KernelOpts {
        source: source_name(image, o),
        data: data.join(","),
        flags,
    }
}

/// Open the image and mount the core filesystem (no FUSE yet). Also returns
/// a warning to print once the mount is live (see `access::check_mount`).
///
/// A read-only mount of an image that was not cleanly unmounted recovers it
/// first, as ext4 and XFS do: write access is taken for the recovery (the
/// journal replayed, orphans reclaimed), then the filesystem is read-only
/// (the image marked clean, as a remount to read-only does). The mount then
/// holds the image as a writer does, and a remount to read-write works. If
/// the image cannot be opened for writing the mount is refused.
/// `-o ro,norecovery` skips that recovery: the image is opened read-only and
/// served as it is (`FsOptions::norecovery`).
pub fn open_fs(image: &Path, o: &MountOpts) -> Result<(Fs, Option<String>), String> {
    if o.norecovery {
        // As XFS: a mount that skips recovery must not write.
        if !o.read_only {
            return Err(
                "norecovery needs ro: a mount without recovery writes nothing (-o ro,norecovery)"
                    .into(),
            );
        }
        let (media, warning) = open_media(image, o, false)?;
        return Ok((mount_media(image, media, o, true)?, warning));
    }
    let (media, warning) = open_media(image, o, !o.read_only)?;
    if !o.read_only || !Fs::needs_recovery(&media).unwrap_or(false) {
        return Ok((mount_media(image, media, o, o.read_only)?, warning));
    }
    drop(media);
    log::info!(
        "{} needs recovery: write access is enabled during recovery",
        image.display()
    );
    let (media, _) = open_media(image, o, true).map_err(|e| {
        format!(
            "{e}; a read-only mount of an image that was not cleanly unmounted recovers it first, \
             which needs write access (or run fsck.daxlink -y {})",
            image.display()
        )
    })?;
    let fs = mount_media(image, media, o, false)?;
    fs.set_read_only(true)
        .map_err(|e| format!("cannot mount {}: {e}", image.display()))?;
    Ok((fs, warning))
}

/// Open, check, lock (exclusive if `write`) and map the image.
fn open_media(image: &Path, o: &MountOpts, write: bool) -> Result<(Media, Option<String>), String> {
    let cannot_open = |e: crate::media::MediaError| format!("cannot open {}: {e}", image.display());
    let file = crate::media::open_image(image, write, false).map_err(cannot_open)?;
    // Before the lock: an image others can write is refused whoever holds it.
    let md = file.metadata().map_err(|e| cannot_open(e.into()))?;
    let warning = crate::tools::access::check_mount(image, &md).map_err(|e| e.to_string())?;
    let locked = crate::media::lock_file(file, write, image).map_err(cannot_open)?;
    let media = Media::map_locked(locked, o.persist, !write).map_err(cannot_open)?;
    Ok((media, warning))
}

/// Mount the core filesystem on `media` (read-only if `read_only`).
fn mount_media(image: &Path, media: Media, o: &MountOpts, read_only: bool) -> Result<Fs, String> {
    let fo = FsOptions {
        read_only,
        page_model: o.page_model,
        layout_timeout: std::time::Duration::from_millis(o.layout_timeout_ms),
        atime: o.atime_mode,
        nodiratime: o.nodiratime,
        norecovery: o.norecovery,
    };
    // Every check of the image returns an error; this is the last resort
    // (an arithmetic overflow on a hostile value, a bug), so that mount still
    // says one line and exits 32. Meanwhile (no other thread runs yet) a
    // panic hook keeps Rust's default message off stderr: the panic goes to
    // the log at debug level. Test hook: DAXLINK_FAULT_INJECT=panic-in-mount.
    let inject = std::env::var("DAXLINK_FAULT_INJECT").as_deref() == Ok("panic-in-mount");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        log::debug!("panic while mounting the image: {info}");
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if inject {
            panic!("injected panic (DAXLINK_FAULT_INJECT=panic-in-mount)");
        }
        Fs::mount(media, fo)
    }));
    std::panic::set_hook(default_hook);
    if let Ok(Ok(fs)) = &r {
        fs.pages.set_limits(o.pin_limits);
    }
    let r = r.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(FsError::Corrupt(format!(
            "internal error reading the image ({msg})"
        )))
    });
    let fs = r.map_err(|e| match e {
        // fsck cannot help with an image of another version, nor with one
        // whose read-only-compatible features it does not know.
        FsError::Version(_) | FsError::RoCompat(_) | FsError::NotDaxlink => {
            format!("cannot mount {}: {e}", image.display())
        }
        e => format!(
            "cannot mount {}: {e}; run fsck.daxlink {}",
            image.display(),
            image.display()
        ),
    })?;
    Ok(fs)
}

fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    // Blocked here, so in every thread spawned later; one thread waits for them.
    if let Err(e) = set.thread_block() {
        log::warn!("cannot block signals: {e}");
    }
    set
}

/// Environment variable: how long (ms) shutdown waits for the FUSE session to end
/// once SIGTERM arrived or the mount went away, before the daemon gives up.
pub const SHUTDOWN_TIMEOUT_ENV: &str = "DAXLINK_SHUTDOWN_TIMEOUT_MS";

fn shutdown_timeout() -> Duration {
    std::env::var(SHUTDOWN_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

/// Shutdown state shared by the signal thread, the mount watcher, the watchdog
/// and `serve`: when and why shutdown began, and whether the session has ended.
#[derive(Default)]
struct Shutdown {
    state: Mutex<(Option<(Instant, String)>, bool)>,
    cv: Condvar,
}

impl Shutdown {
    fn begin(&self, why: String) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0.is_none() {
            st.0 = Some((Instant::now(), why));
            self.cv.notify_all();
        }
    }

    fn begun(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .is_some()
    }

    fn finish(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }
}

/// One line of /proc/self/mountinfo: (mount id, mount point, fs type).
fn mountinfo() -> Vec<(u64, String, String)> {
    crate::util::mountinfo::self_mounts()
        .into_iter()
        .map(|m| (m.id, m.point, m.fstype))
        .collect()
}

fn our_mount_id(mountpoint: &Path) -> Option<u64> {
    let mp = mountpoint.to_string_lossy();
    mountinfo()
        .into_iter()
        .rfind(|(_, p, t)| *p == mp && t == "fuse.daxlink")
        .map(|(id, _, _)| id)
}

/// Wait until mount `id` leaves this mount namespace (umount, umount -l), then
/// begin the shutdown. poll(2) on mountinfo wakes on every mount table change.
fn watch_mount(id: u64, sd: Arc<Shutdown>) {
    use std::os::fd::AsFd;
    let f = std::fs::File::open("/proc/self/mountinfo").ok();
    loop {
        if let Some(f) = &f {
            let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        if sd.begun() {
            return;
        }
        if !mountinfo().iter().any(|(i, _, _)| *i == id) {
            sd.begin("the mount went away".into());
            return;
        }
    }
}

/// Once shutdown has begun, give the session `limit` to end. If it has not,
/// log the requests still in flight, detach the mount if it is still there,
/// and exit without marking the image clean (as a crash: the journal makes the
/// next mount consistent). Joining a wedged worker, or `fs.unmount()` waiting
/// for locks it holds, would never return.
fn watchdog(
    sd: Arc<Shutdown>,
    limit: Duration,
    mount_id: Option<u64>,
    minor: Option<u32>,
    image: PathBuf,
) {
    let mut st = sd.state.lock().unwrap_or_else(|e| e.into_inner());
    while st.0.is_none() && !st.1 {
        st = sd.cv.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    let Some((t0, why)) = st.0.clone() else {
        return;
    };
    while !st.1 && t0.elapsed() < limit {
        let left = limit - t0.elapsed();
        st = sd
            .cv
            .wait_timeout(st, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    if st.1 {
        return;
    }
    let stuck = crate::fuse::inflight::snapshot();
    log::error!(
        "shutdown ({why}) did not finish within {:.1} s: {} request(s) in flight",
        limit.as_secs_f64(),
        stuck.len()
    );
    for (what, age) in &stuck {
        log::error!(
            "stuck request: {what}, running for {:.1} s",
            age.as_secs_f64()
        );
    }
    if let Some(id) = mount_id {
        if let Some((_, mp, _)) = mountinfo().into_iter().find(|(i, _, _)| *i == id) {
            log::error!("detaching {mp}");
            crate::tools::mount::kernel::unmount_own(Path::new(&mp), id, minor);
        }
    }
    log::error!(
        "exiting without marking {} clean; the next mount recovers it",
        image.display()
    );
    std::process::exit(1);
}

/// Mount and serve until unmounted. `ready` is told once the mount is live
/// (or why it failed).
pub fn serve(
    image: &Path,
    dir: &Path,
    o: &MountOpts,
    ready: impl FnOnce(Result<(), String>),
) -> i32 {
    let md = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            ready(Err(format!("mount point {}: {e}", dir.display())));
            return 32;
        }
    };
    if !md.is_dir() {
        ready(Err(format!(
            "mount point {} is not a directory",
            dir.display()
        )));
        return 32;
    }
    // Before mounting: afterwards resolving `dir` would ask this daemon itself.
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let (fs, warning) = match open_fs(image, o) {
        Ok((f, w)) => (Arc::new(f), w),
        Err(e) => {
            ready(Err(e));
            return 32;
        }
    };
    let set = block_signals();
    let cfg = fuser_config(image, o);
    let mut dax = DaxFuse::new(fs.clone());
    dax.options = daemon_options(o);
    dax.cache = crate::fuse::CacheMode {
        keep: o.cache_keep,
        writeback: o.writeback,
    };
    let prepared = if o.uring {
        match crate::fuse::uring::prepare() {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("transport=uring: cannot set up io_uring ({e}); using /dev/fuse");
                None
            }
        }
    } else {
        None
    };
    dax.transport = Arc::new(crate::fuse::Transport {
        want_uring: prepared.is_some(),
        ..Default::default()
    });
    if o.direct && !o.writeback {
        // Direct access; refused under the write-back cache,
        // which holds writes the image does not have yet.
        let started = crate::fuse::direct::DirectConfig::new(image, &fs.media, o.recall_timeout_ms)
            .ok_or_else(|| std::io::Error::other("the image has no path or identity"))
            .and_then(|c| crate::fuse::direct::Direct::start(c, !fs.read_only()));
        match started {
            Ok(d) => {
                fs.set_recall(d.recall_hook());
                dax.direct = Some(Arc::new(d));
            }
            Err(e) => log::warn!("direct access is off: {e}"),
        }
    }
    let main = dax.twin();
    let notifier_slot = dax.notifier.clone();
    let dev_slot = dax.dev.clone();
    // As root the daemon mounts itself (`kmount`), so that nothing ever
    // unmounts by path; fuser mounts through fusermount3 otherwise, and for
    // auto_unmount (which only fusermount3 provides).
    let own = if o.auto_unmount {
        Ok(None)
    } else {
        crate::tools::mount::kernel::mount(dir, &kernel_opts(image, o))
    };
    let own_mount = matches!(own, Ok(Some(_)));
    let made = match own {
        Err(e) => Err(e),
        Ok(Some(fd)) => fuser::Session::from_fd(dax, fd, cfg.acl, cfg.clone()).map_err(|e| {
            if let Some(id) = our_mount_id(&canon) {
                crate::tools::mount::kernel::unmount_own(&canon, id, None);
            }
            format!("cannot start serving {}: {e}", dir.display())
        }),
        Ok(None) => fuser::Session::new(dax, dir, &cfg)
            .map_err(|e| format!("cannot mount on {}: {e}", dir.display())),
    };
    let mut session = match made {
        Ok(s) => s,
        Err(e) => {
            let _ = fs.unmount();
            ready(Err(e));
            return 32;
        }
    };
    if let Some(p) = prepared {
        // A ring queue that dies leaves its CPU's requests without a
        // server: abort the connection (they fail, the session ends).
        let dev = dev_slot.clone();
        let stop: crate::fuse::uring::Stop =
            Arc::new(move || crate::tools::mount::kernel::abort(dev.get().map(|d| d.1)));
        crate::fuse::uring::begin(p, &session, &main, cfg.acl, o.threads, stop);
    }
    let _ = notifier_slot.set(session.notifier());
    match crate::util::mountinfo::mount_dev(dir) {
        Some(d) => {
            let _ = dev_slot.set(d);
        }
        None => {
            log::warn!("cannot find this mount in /proc/self/mountinfo: clone and dedupe will fail")
        }
    }
    let sd = Arc::new(Shutdown::default());
    let mount_id = our_mount_id(&canon);
    if mount_id.is_none() {
        log::warn!("{} is not in /proc/self/mountinfo", canon.display());
    }
    let mut unmounter = session.unmount_callable();
    let minor = dev_slot.get().map(|d| d.1);
    let sd2 = sd.clone();
    let canon2 = canon.clone();
    std::thread::Builder::new()
        .name("daxlink-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                log::info!("{sig}: unmounting");
                sd2.begin(format!("{sig}"));
                match mount_id {
                    Some(id) if own_mount => {
                        crate::tools::mount::kernel::unmount_own(&canon2, id, minor)
                    }
                    _ => {
                        if let Err(e) = unmounter.unmount() {
                            log::error!("unmount on signal failed: {e}");
                        }
                    }
                }
            }
        })
        .ok();
    if let Some(id) = mount_id {
        let sd2 = sd.clone();
        std::thread::Builder::new()
            .name("daxlink-mountwatch".into())
            .spawn(move || watch_mount(id, sd2))
            .ok();
    }
    let sd2 = sd.clone();
    let img = image.to_path_buf();
    let limit = shutdown_timeout();
    std::thread::Builder::new()
        .name("daxlink-watchdog".into())
        .spawn(move || watchdog(sd2, limit, mount_id, minor, img))
        .ok();
    log::info!("mounted {} on {}", image.display(), dir.display());
    // Only once mounted: a refused mount says one line, its reason.
    if let Some(w) = warning {
        eprintln!("daxlink: warning: {w}");
    }
    ready(Ok(()));
    let r = session.run();
    sd.finish();
    // Test hook (DAXLINK_FAULT_INJECT=slow-exit): a daemon slow to finish
    // after its mount is gone, as on a loaded machine (tests/unmount.rs).
    if std::env::var("DAXLINK_FAULT_INJECT").as_deref() == Ok("slow-exit") {
        std::thread::sleep(Duration::from_secs(3));
    }
    // DaxFuse::finish (FUSE destroy) marks the filesystem clean; make sure even if it was not called.
    let _ = fs.unmount();
    match r {
        Ok(()) => 0,
        Err(e) => {
            log::error!("session ended with an error: {e}");
            1
        }
    }
}

/// Environment variable telling a re-executed daemon to report readiness on stdout.
const READY_ENV: &str = "DAXLINK_READY_PIPE";

/// `daxlink mount`: without `foreground`, start the daemon as a new process
/// (this binary again, in the foreground, in its own session) and return once
/// it reports the mount live (exit 0) or failed (one line, exit 32).
pub fn mount_main(
    image: PathBuf,
    dir: PathBuf,
    raw_opts: &str,
    o: MountOpts,
    foreground: bool,
) -> i32 {
    if o.remount {
        // IMAGE is whatever mount(8) found as the source; DIR names the mount.
        return crate::tools::mount::remount::remount_main(&dir, raw_opts);
    }
    if let Some(k) = o.kernel_opts.first() {
        eprintln!("daxlink: mount option '{k}' is set by the kernel, not by the user");
        return 32;
    }
    if foreground {
        let notify = std::env::var_os(READY_ENV).is_some();
        let debug = o.debug;
        return serve(&image, &dir, &o, move |r| {
            if notify {
                let mut out = std::io::stdout();
                match r {
                    Ok(()) => {
                        let _ = out.write_all(&[0]);
                        let _ = out.flush();
                        if !debug {
                            detach_stdio();
                        }
                    }
                    Err(e) => {
                        let _ = out.write_all(&[1]);
                        let _ = out.write_all(e.as_bytes());
                        let _ = out.flush();
                    }
                }
            } else if let Err(e) = r {
                eprintln!("daxlink: {e}");
            }
        });
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("daxlink: cannot find my own executable: {e}");
            return 32;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount").arg(&image).arg(&dir).arg("-f");
    if !raw_opts.is_empty() {
        cmd.arg("-o").arg(raw_opts);
    }
    cmd.env(READY_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("daxlink: cannot start the daemon: {e}");
            return 32;
        }
    };
    let mut msg = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut msg);
    }
    match msg.first() {
        Some(0) => 0,
        Some(_) => {
            let _ = child.wait();
            eprintln!("daxlink: {}", String::from_utf8_lossy(&msg[1..]));
            32
        }
        None => {
            let _ = child.wait();
            eprintln!("daxlink: the mount daemon exited before mounting");
            32
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::setsid();
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}
