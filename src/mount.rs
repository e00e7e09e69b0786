//! Mounting: option parsing, daemonizing as mount(8) expects, clean shutdown.

#![forbid(unsafe_code)]

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
use crate::media::{Media, PersistMode};

pub use crate::pages::PageModel;

#[derive(Clone, Debug)]
pub struct MountOpts {
    pub page_model: PageModel,
    /// upstream model: how long layout changes wait for pins before EBUSY.
    pub layout_timeout_ms: u64,
    /// Caps on pins (`max_pins`, `max_pinned`, `max_pins_per_user`,
    /// `max_pinned_per_user`; the byte caps are kept in pages).
    pub pin_limits: crate::pages::PinLimits,
    pub threads: usize,
    /// `cache=keep` (the default) or `cache=open` (see `fuse::CacheMode`).
    pub cache_keep: bool,
    /// `writeback`: the kernel's writeback cache (durable at fsync).
    pub writeback: bool,
    /// `transport=uring`: requests over io_uring (`fuse::uring`), falling
    /// back to /dev/fuse (`transport=dev`, the default) where refused.
    pub uring: bool,
    /// persist=cpu|msync; None (the default, shown as "auto") lets the
    /// media layer choose what makes stores durable on this media.
    pub persist: Option<PersistMode>,
    pub read_only: bool,
    /// `direct=on` (the default): direct access for trusted clients
    /// (`fuse::direct`); `off`: HELLO answers EOPNOTSUPP, no socket.
    pub direct: bool,
    /// How long a recall waits for a direct client inside one access.
    pub recall_timeout_ms: u64,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    /// relatime (default), strictatime or noatime.
    pub atime_mode: crate::fs::AtimeMode,
    pub nodiratime: bool,
    pub sync: bool,
    pub dirsync: bool,
    pub fsname: Option<String>,
    pub debug: bool,
    /// `remount`: change a live mount (see `crate::remount`).
    pub remount: bool,
    /// Options the kernel reports for a FUSE mount (user_id=, group_id=,
    /// max_read=, blksize=, rootmode=): mount(8) passes them back in a remount.
    pub kernel_opts: Vec<String>,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            page_model: PageModel::Proxy,
            layout_timeout_ms: 2000,
            pin_limits: crate::pages::PinLimits::default(),
            threads: default_threads(),
            cache_keep: true,
            writeback: false,
            uring: false,
            persist: None,
            read_only: false,
            direct: true,
            recall_timeout_ms: 5000,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            dev: false,
            suid: false,
            exec: true,
            atime_mode: crate::fs::AtimeMode::Relative,
            nodiratime: false,
            sync: false,
            dirsync: false,
            fsname: None,
            debug: false,
            remount: false,
            kernel_opts: Vec::new(),
        }
    }
}

/// FUSE worker threads when `threads=` is not given: one per CPU, at least
/// two (one can wait on a pin or a lock while the other serves), at most 16.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

/// Parse a comma-separated option string (may be given several times).
pub fn parse_opts<'a>(opts: &mut MountOpts, s: &'a str) -> Result<(), String> {
    for o in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        let need =
            |v: Option<&'a str>| v.ok_or_else(|| format!("mount option '{k}' needs a value"));
        match k {
            "page_model" => {
                let v = need(v)?;
                opts.page_model = PageModel::parse(v)
                    .ok_or_else(|| format!("page_model={v}: expected legacy, upstream or proxy"))?;
            }
            "layout_timeout_ms" => {
                opts.layout_timeout_ms = need(v)?
                    .parse()
                    .map_err(|_| format!("layout_timeout_ms={}: not a number", v.unwrap_or("")))?;
            }
            "max_pins" | "max_pins_per_user" => {
                let n: u64 = need(v)?
                    .parse()
                    .map_err(|_| format!("{k}={}: not a number", v.unwrap_or("")))?;
                match k {
                    "max_pins" => opts.pin_limits.pins = n,
                    _ => opts.pin_limits.user_pins = n,
                }
            }
            "max_pinned" | "max_pinned_per_user" => {
                let v = need(v)?;
                let pages = parse_bytes(v)
                    .ok_or_else(|| format!("{k}={v}: expected bytes (a number, K, M or G)"))?
                    / crate::format::BLOCK_SIZE;
                match k {
                    "max_pinned" => opts.pin_limits.pages = pages,
                    _ => opts.pin_limits.user_pages = pages,
                }
            }
            "threads" => {
                let n: usize = need(v)?
                    .parse()
                    .map_err(|_| format!("threads={}: not a number", v.unwrap_or("")))?;
                if n == 0 || n > 64 {
                    return Err(format!(
                        "threads={n}: must be between 1 and 64 (default: one per CPU, 2 to 16)"
                    ));
                }
                opts.threads = n;
            }
            "cache" => {
                opts.cache_keep = match need(v)? {
                    "keep" => true,
                    "open" => false,
                    x => return Err(format!("cache={x}: expected keep or open")),
                }
            }
            "transport" => {
                opts.uring = match need(v)? {
                    "dev" => false,
                    "uring" => true,
                    x => return Err(format!("transport={x}: expected dev or uring")),
                }
            }
            "direct" => {
                opts.direct = match need(v)? {
                    "on" => true,
                    "off" => false,
                    x => return Err(format!("direct={x}: expected on or off")),
                }
            }
            "recall_timeout_ms" => {
                opts.recall_timeout_ms = need(v)?
                    .parse()
                    .map_err(|_| format!("recall_timeout_ms={}: not a number", v.unwrap_or("")))?;
            }
            "writeback" => opts.writeback = true,
            "nowriteback" => opts.writeback = false,
            "persist" => {
                opts.persist = match need(v)? {
                    "cpu" => Some(PersistMode::Cpu),
                    "msync" => Some(PersistMode::Msync),
                    "auto" => None,
                    x => return Err(format!("persist={x}: expected cpu, msync or auto")),
                }
            }
            "ro" => opts.read_only = true,
            "rw" => opts.read_only = false,
            "allow_other" => opts.allow_other = true,
            "allow_root" => opts.allow_root = true,
            "auto_unmount" => opts.auto_unmount = true,
            "default_permissions" => {}
            "dev" => opts.dev = true,
            "nodev" => opts.dev = false,
            "suid" => opts.suid = true,
            "nosuid" => opts.suid = false,
            "exec" => opts.exec = true,
            "noexec" => opts.exec = false,
            "atime" | "relatime" => opts.atime_mode = crate::fs::AtimeMode::Relative,
            "strictatime" => opts.atime_mode = crate::fs::AtimeMode::Strict,
            "noatime" => opts.atime_mode = crate::fs::AtimeMode::Never,
            "nodiratime" => opts.nodiratime = true,
            "diratime" => opts.nodiratime = false,
            // Access times are always written lazily (fs/atime.rs).
            "lazytime" | "nolazytime" => {}
            "sync" => opts.sync = true,
            "async" => opts.sync = false,
            "dirsync" => opts.dirsync = true,
            "fsname" => opts.fsname = Some(need(v)?.to_string()),
            "debug" => opts.debug = true,
            "remount" => opts.remount = true,
            "user_id" | "group_id" | "max_read" | "blksize" | "rootmode" => {
                opts.kernel_opts.push(o.to_string())
            }
            // Passed by mount(8) / fstab; meaningless for the daemon.
            "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "nofail" | "_netdev"
            | "subtype" => {}
            _ if k.starts_with("x-") || k.starts_with("comment=") => {}
            _ => return Err(format!("unknown mount option '{o}'")),
        }
    }
    Ok(())
}

/// A byte count with an optional K, M or G (powers of 1024) suffix.
fn parse_bytes(v: &str) -> Option<u64> {
    let (num, mul) = match v.char_indices().last()? {
        (i, 'k' | 'K') => (&v[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&v[..i], 1 << 20),
        (i, 'g' | 'G') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

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
fn kernel_opts(image: &Path, o: &MountOpts) -> crate::kmount::KernelOpts {
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
    crate::kmount::KernelOpts {
        source: source_name(image, o),
        data: data.join(","),
        flags,
    }
}

/// The options only the daemon knows (what the OPTIONS ioctl reports), in
/// `parse_opts` syntax.
pub fn daemon_options(o: &MountOpts) -> String {
    let mut v = vec![
        format!("page_model={}", o.page_model.name()),
        format!("layout_timeout_ms={}", o.layout_timeout_ms),
        format!("max_pins={}", o.pin_limits.pins),
        format!(
            "max_pinned={}",
            o.pin_limits.pages * crate::format::BLOCK_SIZE
        ),
        format!("max_pins_per_user={}", o.pin_limits.user_pins),
        format!(
            "max_pinned_per_user={}",
            o.pin_limits.user_pages * crate::format::BLOCK_SIZE
        ),
        format!("threads={}", o.threads),
        format!("cache={}", if o.cache_keep { "keep" } else { "open" }),
        format!(
            "persist={}",
            match o.persist {
                Some(PersistMode::Msync) => "msync",
                Some(_) => "cpu",
                None => "auto",
            }
        ),
        (if o.read_only { "ro" } else { "rw" }).to_string(),
        format!("direct={}", if o.direct { "on" } else { "off" }),
        format!("recall_timeout_ms={}", o.recall_timeout_ms),
    ];
    for (on, name) in [
        (o.allow_other, "allow_other"),
        (o.allow_root, "allow_root"),
        (o.auto_unmount, "auto_unmount"),
        (o.writeback, "writeback"),
    ] {
        if on {
            v.push(name.to_string());
        }
    }
    if let Some(f) = &o.fsname {
        v.push(format!("fsname={f}"));
    }
    v.join(",")
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
pub fn open_fs(image: &Path, o: &MountOpts) -> Result<(Fs, Option<String>), String> {
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
    let warning = crate::access::check_mount(image, &md).map_err(|e| e.to_string())?;
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
    crate::caller::self_mounts()
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
    let stuck = crate::inflight::snapshot();
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
            crate::kmount::unmount_own(Path::new(&mp), id, minor);
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
        // Direct access (issue 23); refused under the write-back cache,
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
        crate::kmount::mount(dir, &kernel_opts(image, o))
    };
    let own_mount = matches!(own, Ok(Some(_)));
    let made = match own {
        Err(e) => Err(e),
        Ok(Some(fd)) => fuser::Session::from_fd(dax, fd, cfg.acl, cfg.clone()).map_err(|e| {
            if let Some(id) = our_mount_id(&canon) {
                crate::kmount::unmount_own(&canon, id, None);
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
            Arc::new(move || crate::kmount::abort(dev.get().map(|d| d.1)));
        crate::fuse::uring::begin(p, &session, &main, cfg.acl, o.threads, stop);
    }
    let _ = notifier_slot.set(session.notifier());
    match crate::caller::mount_dev(dir) {
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
                    Some(id) if own_mount => crate::kmount::unmount_own(&canon2, id, minor),
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
        return crate::remount::remount_main(&dir, raw_opts);
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
