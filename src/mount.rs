//! Mounting: option parsing, daemonizing as mount(8) expects, clean shutdown.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::fs::{Fs, FsOptions};
use crate::fuse::DaxFuse;
use crate::media::{Media, PersistMode};

pub use crate::pages::PageModel;

#[derive(Clone, Debug)]
pub struct MountOpts {
    pub page_model: PageModel,
    /// upstream model: how long layout changes wait for pins before EBUSY.
    pub layout_timeout_ms: u64,
    pub threads: usize,
    pub persist: PersistMode,
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    pub atime: bool,
    pub sync: bool,
    pub dirsync: bool,
    pub fsname: Option<String>,
    pub debug: bool,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            page_model: PageModel::Proxy,
            layout_timeout_ms: 2000,
            threads: 2,
            persist: PersistMode::Cpu,
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            dev: false,
            suid: false,
            exec: true,
            atime: true,
            sync: false,
            dirsync: false,
            fsname: None,
            debug: false,
        }
    }
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
            "threads" => {
                let n: usize = need(v)?
                    .parse()
                    .map_err(|_| format!("threads={}: not a number", v.unwrap_or("")))?;
                if n == 0 || n > 64 {
                    return Err("threads must be between 1 and 64".into());
                }
                opts.threads = n;
            }
            "persist" => {
                opts.persist = match need(v)? {
                    "cpu" => PersistMode::Cpu,
                    "msync" => PersistMode::Msync,
                    x => return Err(format!("persist={x}: expected cpu or msync")),
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
            "atime" | "relatime" | "strictatime" => opts.atime = true,
            "noatime" | "nodiratime" => opts.atime = false,
            "sync" => opts.sync = true,
            "async" => opts.sync = false,
            "dirsync" => opts.dirsync = true,
            "fsname" => opts.fsname = Some(need(v)?.to_string()),
            "debug" => opts.debug = true,
            // Passed by mount(8) / fstab; meaningless for the daemon.
            "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "nofail" | "_netdev"
            | "subtype" => {}
            _ if k.starts_with("x-") || k.starts_with("comment=") => {}
            _ => return Err(format!("unknown mount option '{o}'")),
        }
    }
    Ok(())
}

fn fuser_config(image: &Path, o: &MountOpts) -> Config {
    let mut c = Config::default();
    let mut mo = vec![
        MountOption::FSName(
            o.fsname
                .clone()
                .unwrap_or_else(|| image.display().to_string()),
        ),
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
        if o.atime {
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

/// Open the image and mount the core filesystem (no FUSE yet).
pub fn open_fs(image: &Path, o: &MountOpts) -> Result<Fs, String> {
    let media = Media::open(image, o.persist, o.read_only)
        .map_err(|e| format!("cannot open {}: {e}", image.display()))?;
    Fs::mount(
        media,
        FsOptions {
            read_only: o.read_only,
            page_model: o.page_model,
            layout_timeout: std::time::Duration::from_millis(o.layout_timeout_ms),
        },
    )
    .map_err(|e| {
        format!(
            "cannot mount {}: {e}; run fsck.daxlink {}",
            image.display(),
            image.display()
        )
    })
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
    let fs = match open_fs(image, o) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            ready(Err(e));
            return 32;
        }
    };
    let set = block_signals();
    let cfg = fuser_config(image, o);
    let dax = DaxFuse::new(fs.clone());
    let notifier_slot = dax.notifier.clone();
    let dev_slot = dax.dev.clone();
    let mut session = match fuser::Session::new(dax, dir, &cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs.unmount();
            ready(Err(format!("cannot mount on {}: {e}", dir.display())));
            return 32;
        }
    };
    let _ = notifier_slot.set(session.notifier());
    match crate::caller::mount_dev(dir) {
        Some(d) => {
            let _ = dev_slot.set(d);
        }
        None => {
            log::warn!("cannot find this mount in /proc/self/mountinfo: clone and dedupe will fail")
        }
    }
    let mut unmounter = session.unmount_callable();
    std::thread::Builder::new()
        .name("daxlink-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                log::info!("{sig}: unmounting");
                if let Err(e) = unmounter.unmount() {
                    log::error!("unmount on signal failed: {e}");
                }
            }
        })
        .ok();
    log::info!("mounted {} on {}", image.display(), dir.display());
    ready(Ok(()));
    let r = session.run();
    // destroy() marks the filesystem clean; make sure even if it was not called.
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
            return 1;
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
            return 1;
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
