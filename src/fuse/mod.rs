//! The FUSE adapter: translation only. Arguments in, `fs::Fs` calls, errno out.
//!
//! Every handler runs inside `catch_unwind`: a panic fails that one request
//! (fuser answers EIO for a dropped reply) and is logged; the daemon goes on.

mod attr;
pub mod caller;
pub mod counters;
mod dir;
pub mod direct;
mod handles;
pub mod inflight;
pub mod ioctl;
mod ioctl_handlers;
mod long;
mod ops;
mod serve;
mod setid;
mod transport;
pub mod uring;
pub use attr::{file_attr, wire_mode};
use attr::{kind, timespec};
use dir::walk_dir;
pub use ioctl_handlers::{extents_json, owners_json};
pub use transport::Transport;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::error::FsError;
use crate::fs::{Attr, Cred, Fs, SetAttr, SetTime};
use crate::fuse::caller::{self as who, Caller, Origin};

/// How long the kernel may trust an entry (positive or negative) or
/// attributes it was given: a day, as libfuse's passthrough_hp. The daemon
/// is the only writer of its image, and every change to a name or an
/// attribute reaches it through this kernel, which invalidates what the
/// change touches (docs/INTERNALS.md, "Round trips"); what changes behind the
/// kernel's back (clone and dedupe destinations, pins, device writes,
/// poison, set-ID bits the daemon clears, inode flags, shutdown) is
/// invalidated with `invalidate` / `invalidate_attrs`.
pub(crate) const TTL: Duration = Duration::from_secs(86400);

/// Read-only virtual xattr: the file's extents as JSON (what `daxlink extents --json` prints).
pub const EXTENTS_XATTR: &[u8] = b"user.daxlink.extents";

pub struct DaxFuse {
    pub fs: Arc<Fs>,
    handles: Arc<Mutex<handles::Handles>>,
    unmounted: Arc<std::sync::atomic::AtomicBool>,
    /// A second `DaxFuse` over the same state (`twin`), serving requests
    /// that came through io_uring; its `destroy` does nothing.
    is_twin: bool,
    /// `transport=uring`: what FUSE_INIT decided and the running transport.
    pub transport: Arc<Transport>,
    /// Set once the session exists: used to drop the kernel's cached pages of
    /// a file whose blocks changed under it (clone / dedupe destination).
    pub notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Set once mounted: the device (major, minor) of this mount, to check
    /// that a descriptor a caller names is on this filesystem.
    pub dev: Arc<std::sync::OnceLock<(u32, u32)>>,
    /// Test hook (DAXLINK_FAULT_INJECT=panic-on-xattr): reading the xattr
    /// `user.daxlink.inject-panic` panics inside the handler.
    panic_hook: bool,
    /// Test hook (DAXLINK_FAULT_INJECT=hang-on-xattr): reading the xattr
    /// `user.daxlink.inject-hang` never returns (a wedged request).
    hang_hook: bool,
    /// Test hook (DAXLINK_FAULT_INJECT=slow-long, or slow-long:MS): every
    /// long operation first sleeps 10 s (or MS milliseconds), as a huge
    /// clone or punch would run.
    slow_long_hook: Option<Duration>,
    /// Test hook (DAXLINK_FAULT_INJECT=slow-step:MS): a long operation
    /// sleeps MS milliseconds at each step boundary (`fs::stop`), as a
    /// remap of many extents or a compare of a huge range would take.
    slow_step_hook: Option<Duration>,
    /// The daemon's mount options (what the OPTIONS ioctl answers; remount
    /// compares against them).
    pub options: String,
    /// Kernel caching chosen at mount (`cache=`, `writeback`).
    pub cache: CacheMode,
    /// Threads for long operations, so they never hold every worker.
    long: Arc<long::LongPool>,
    /// The direct-access server (`direct=on`, not under `writeback`).
    pub direct: Option<Arc<direct::Direct>>,
}

/// How the kernel may cache file data between opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheMode {
    /// FOPEN_KEEP_CACHE: an open keeps the pages cached by earlier opens
    /// (`cache=keep`, the default), unless a read now would update the
    /// access time (relatime: the file changed since it was last read, or
    /// a day passed; strictatime: always): the kernel serves cached pages
    /// without asking the daemon, so those opens drop them and their reads
    /// come here. Every change the kernel does not make itself (clone and
    /// dedupe destinations, pins that move blocks, device writes, poison,
    /// shutdown) invalidates the owners' pages. `cache=open` drops a file's
    /// pages at every open.
    pub keep: bool,
    /// FUSE_WRITEBACK_CACHE (`writeback`): writes land in the kernel's page
    /// cache and reach the daemon later; durable only at fsync, sync or
    /// unmount, as on a disk filesystem. Off by default.
    pub writeback: bool,
}

/// The delay of the slow-step test hook: `slow-step:MS`.
fn slow_step_hook(inject: Option<&str>) -> Option<Duration> {
    inject?
        .strip_prefix("slow-step:")?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// The delay of the slow-long test hook: `slow-long` (10 s) or `slow-long:MS`.
fn slow_long_hook(inject: Option<&str>) -> Option<Duration> {
    match inject?.strip_prefix("slow-long")? {
        "" => Some(Duration::from_secs(10)),
        ms => ms
            .strip_prefix(':')?
            .parse()
            .ok()
            .map(Duration::from_millis),
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// The creator of a new inode: fs uid and gid, and the umask the kernel
/// passed (FUSE_DONT_MASK: the filesystem applies it, or the default ACL).
fn cred(req: &Request, umask: u32) -> Cred {
    Cred {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

fn origin(req: &Request) -> Origin {
    Origin {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn caller(req: &Request) -> Caller {
    origin(req).caller()
}

/// Run a handler body, turning a panic into a logged failure of this request.
fn guarded(what: &'static str, f: impl FnOnce()) {
    counters::entered(what);
    if crate::fuse::inflight::refusing() {
        // Shut down: dropping `f` drops its reply, which fuser answers with EIO.
        return;
    }
    let _in_flight = crate::fuse::inflight::enter(what);
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!("request {what} panicked ({msg}); it fails with EIO");
    }
}

impl DaxFuse {
    pub fn new(fs: Arc<Fs>) -> DaxFuse {
        DaxFuse {
            fs,
            handles: Arc::new(Mutex::new(handles::Handles::default())),
            unmounted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            is_twin: false,
            transport: Arc::new(Transport::default()),
            notifier: Arc::new(std::sync::OnceLock::new()),
            dev: Arc::new(std::sync::OnceLock::new()),
            panic_hook: std::env::var("DAXLINK_FAULT_INJECT").as_deref() == Ok("panic-on-xattr"),
            hang_hook: std::env::var("DAXLINK_FAULT_INJECT").as_deref() == Ok("hang-on-xattr"),
            slow_long_hook: slow_long_hook(std::env::var("DAXLINK_FAULT_INJECT").ok().as_deref()),
            slow_step_hook: slow_step_hook(std::env::var("DAXLINK_FAULT_INJECT").ok().as_deref()),
            options: String::new(),
            cache: CacheMode {
                keep: true,
                writeback: false,
            },
            long: Arc::new(long::LongPool::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            )),
            direct: None,
        }
    }

    /// Finish a request on the long-operation threads (`long.rs`), in
    /// `guarded` there: `f` gets a twin of this `DaxFuse`.
    /// Requests wait their turn per user (`req`'s uid).
    /// Between its steps the operation stops (EINTR) once the requesting
    /// thread has a fatal signal pending (`long::caller_killed`).
    fn long(&self, req: &Request, what: &'static str, f: impl FnOnce(&DaxFuse) + Send + 'static) {
        let me = self.twin();
        let tid = req.pid();
        self.long.run(
            req.uid(),
            Box::new(move || {
                guarded(what, || {
                    if let Some(d) = me.slow_long_hook {
                        std::thread::sleep(d);
                    }
                    let step = me.slow_step_hook;
                    let stop = move || {
                        if let Some(d) = step {
                            std::thread::sleep(d);
                        }
                        long::caller_killed(tid)
                    };
                    crate::fs::stop::stopping_when(stop, || f(&me))
                })
            }),
        );
    }

    /// Mark the filesystem clean (idempotent).
    pub fn finish(&self) {
        if !self
            .unmounted
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            if let Err(e) = self.fs.unmount() {
                log::error!("unmount: {e}");
            }
        }
    }

    fn entry(&self, r: Result<Attr, FsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(a.generation as u64)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Drop the kernel's cached pages and attributes of `ino`.
    fn invalidate(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(INodeNo(ino), 0, 0) {
                log::debug!("inval_inode({ino}): {e}");
            }
        }
    }

    /// Drop the kernel's cached attributes of `ino` (not its pages: a page
    /// a writer holds locked while it waits for this request's reply must
    /// not be waited for here).
    fn invalidate_attrs(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                log::debug!("inval_inode({ino}, attributes): {e}");
            }
        }
    }

    /// What an open of `ino` tells the kernel about its cached pages.
    /// FOPEN_NOFLUSH always: the daemon has nothing to do at close (no
    /// POSIX locks of its own, every write already durable), so no FLUSH.
    /// While a writable direct-access lease exists on the file, no page
    /// cache (FOPEN_DIRECT_IO): direct stores bypass the kernel.
    fn open_flags(&self, ino: u64) -> Result<FopenFlags, FsError> {
        Ok(if self.direct_io_now(ino) {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
        } else if self.cache.keep && !self.fs.read_would_touch_atime(ino)? {
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
        } else {
            FopenFlags::FOPEN_NOFLUSH
        })
    }

    fn writable(&self, fh: u64) -> bool {
        self.handles
            .lock()
            .get(&fh)
            .is_some_and(|h| h.flags & libc::O_ACCMODE != libc::O_RDONLY)
    }

    fn readable(&self, fh: u64) -> bool {
        self.handles
            .lock()
            .get(&fh)
            .is_some_and(|h| h.flags & libc::O_ACCMODE != libc::O_WRONLY)
    }

    fn open_handle(&self, ino: u64, flags: i32) -> Result<u64, FsError> {
        self.fs.check_open(ino, flags)?;
        let fh = self.fs.open(ino)?;
        self.handles.lock().insert(fh, ino, flags);
        Ok(fh)
    }

    /// The cache flags open `fh` of `ino` is answered with: `keep` as
    /// decided before the open was counted, bypassing the page cache if a
    /// writable lease was granted meanwhile, and dropping what the kernel
    /// cached if a direct writer's open may have left stale pages
    /// (`handles.rs`).
    fn settle_open(&self, fh: u64, ino: u64, keep: FopenFlags) -> FopenFlags {
        let mut h = self.handles.lock();
        let mut keep = if !keep.contains(FopenFlags::FOPEN_DIRECT_IO) && self.direct_io_now(ino) {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
        } else {
            keep
        };
        if h.take_stale(ino) {
            keep.remove(FopenFlags::FOPEN_KEEP_CACHE);
        }
        h.settle(fh, !keep.contains(FopenFlags::FOPEN_DIRECT_IO));
        keep
    }
}

fn empty(r: Result<(), FsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn xattr_reply(data: Vec<u8>, size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(&data);
    }
}
