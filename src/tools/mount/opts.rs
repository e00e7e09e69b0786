//! Mount options: `-o` parsing into [`MountOpts`] (what mount(8), fstab and
//! a remount pass) and back ([`daemon_options`], what the OPTIONS ioctl
//! reports). Shared by the mount and the remount paths.

use crate::media::PersistMode;
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
    /// `norecovery` (ext4's `noload` too), with `ro` only: mount without
    /// replaying the journal or reclaiming orphans, so nothing of the image
    /// changes (to look at an image before a repair); what it shows may be
    /// inconsistent, as on ext4 and XFS.
    pub norecovery: bool,
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
    /// `remount`: change a live mount (see `crate::tools::mount::remount`).
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
            norecovery: false,
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
            "norecovery" | "noload" => opts.norecovery = true,
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
        (o.norecovery, "norecovery"),
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
