//! The daemon's half of direct access: the control page, the
//! socket that admits clients, the recall hook the core calls, and the
//! HELLO / MAP / TOUCH ioctls. The protocol (the control page's words and
//! their rule, the payloads) is the `daxlink_direct` crate; ARCHITECTURE.md,
//! "Direct access", says who writes which word in which order.
//!
//! Trust: the kernel decides it. A client opens the image itself,
//! read-write, and passes that descriptor over the socket; the daemon
//! checks that it is the image (fstat) and open for writing (F_GETFL)
//! before it hands out the control page. A process that may not write the
//! image gets EACCES from open(2) and keeps the kernel path.

mod server;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use daxlink_direct::control::{self, Control, Stuck};
use daxlink_direct::persist::FlushInsn;
use daxlink_direct::wire;
use memmap2::MmapRaw;
use parking_lot::Mutex;

use super::*;
use crate::media::PersistMode;

/// Slots one client process gets (one per thread that accesses at once).
pub const SLOTS_PER_CLIENT: usize = 16;
const RANGES: usize = control::SLOTS / SLOTS_PER_CLIENT;

/// What the direct server needs to know about the mount.
#[derive(Clone, Debug)]
pub struct DirectConfig {
    /// The image's absolute path, as the daemon opened it.
    pub image_path: PathBuf,
    /// `(st_dev, st_ino)` of an image file, `(0, st_rdev)` of a device.
    pub image_id: (u64, u64),
    pub image_len: u64,
    pub flush: FlushInsn,
    /// Stores are made durable by cache flushes (`persist=cpu`, or memory
    /// that needs nothing): clients may store. msync images: reads only.
    pub stores_ok: bool,
    /// A recall waits this long for a client inside an access.
    pub recall_timeout: Duration,
}

impl DirectConfig {
    pub fn new(
        image: &std::path::Path,
        media: &crate::media::Media,
        recall_ms: u64,
    ) -> Option<Self> {
        Some(DirectConfig {
            image_path: image.canonicalize().ok()?,
            image_id: media.identity()?,
            image_len: media.len(),
            flush: media.flush_insn(),
            stores_ok: matches!(media.persist_mode(), PersistMode::Cpu | PersistMode::None),
            recall_timeout: Duration::from_millis(recall_ms),
        })
    }
}

/// An admitted client process.
struct Client {
    id: u64,
    pid: u32,
    uid: u32,
    pidfd: OwnedFd,
}

/// The control page: a sealed memfd mapped shared.
struct Page {
    memfd: OwnedFd,
    _map: MmapRaw,
    control: Control,
}

/// State shared by the server thread, the recall hook and the ioctls.
pub(crate) struct Shared {
    page: Page,
    nonce: u64,
    socket: String,
    cfg: DirectConfig,
    /// Client per slot range (`SLOTS_PER_CLIENT` slots each).
    clients: Mutex<Vec<Option<Client>>>,
    stop: AtomicBool,
}

/// The direct server of a mount (`direct=on`).
pub struct Direct {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn random_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Not secret: it only tells mounts apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(b)
}

impl Page {
    fn new(nonce: u64) -> std::io::Result<Page> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let memfd = memfd_create(
            c"daxlink-control",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&memfd, control::LEN as libc::off_t)?;
        // Clients map it read-write; none may shrink it under the daemon's
        // mapping (a SIGBUS here) or grow it.
        fcntl(
            &memfd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let map = MmapRaw::map_raw(&memfd)?;
        // SAFETY: `map` is a shared, readable and writable mapping of the
        // whole memfd (control::LEN bytes, sealed against shrinking), page
        // aligned; it lives in `Page` as long as the `Control` (which owns
        // nothing and is only used through `Page`), and every access
        // through `Control` is atomic (other processes write the same words).
        let control = unsafe { Control::from_raw(map.as_mut_ptr(), map.len()) }
            .map_err(|e| std::io::Error::other(format!("control page: {e:?}")))?;
        control.init(nonce);
        Ok(Page {
            memfd,
            _map: map,
            control,
        })
    }
}

impl Shared {
    pub(crate) fn control(&self) -> &Control {
        &self.page.control
    }

    /// Does the owner of `slot` still run?
    fn alive(&self, slot: usize) -> bool {
        let c = self.clients.lock();
        match c.get(slot / SLOTS_PER_CLIENT) {
            Some(Some(cl)) => crate::fuse::caller::pidfd_alive(&cl.pidfd),
            _ => false,
        }
    }

    fn pid_of(&self, slot: usize) -> Option<u32> {
        let c = self.clients.lock();
        c.get(slot / SLOTS_PER_CLIENT)
            .and_then(|x| x.as_ref())
            .map(|cl| cl.pid)
    }

    /// A recall found `slot` still inside an access at its deadline.
    fn stuck(&self, Stuck { slot }: Stuck) {
        log::warn!(
            "direct access: pid {} stayed inside one access (slot {slot}) for more than {} ms; \
             treated as gone, its slot is cleared",
            self.pid_of(slot)
                .map_or_else(|| "?".to_string(), |p| p.to_string()),
            self.cfg.recall_timeout.as_millis()
        );
        self.page.control.clear(slot);
    }

    fn recall_bucket(&self, bucket: u32) {
        let deadline = Instant::now() + self.cfg.recall_timeout;
        // Said once per slot a recall has to wait for (at debug level: a
        // client inside one copy is the common, short case).
        let mut waited = usize::MAX;
        let mut alive = |s: usize| {
            if waited != s {
                waited = s;
                log::debug!(
                    "direct access: a recall of bucket {bucket} waits for slot {s} (pid {})",
                    self.pid_of(s)
                        .map_or_else(|| "?".to_string(), |p| p.to_string())
                );
            }
            self.alive(s)
        };
        loop {
            match self.page.control.recall(bucket, deadline, &mut alive) {
                Ok(_) => return,
                Err(s) => self.stuck(s),
            }
        }
    }

    fn recall_every(&self) {
        let deadline = Instant::now() + self.cfg.recall_timeout;
        while let Err(s) = self
            .page
            .control
            .recall_all(deadline, &mut |s| self.alive(s))
        {
            self.stuck(s);
        }
    }

    /// Forget the client of slot range `r`: clear its slots (its process
    /// is gone or its connection closed, so nothing else writes them).
    fn drop_client(&self, r: usize) {
        let gone = self.clients.lock().get_mut(r).and_then(Option::take);
        if let Some(c) = gone {
            for s in r * SLOTS_PER_CLIENT..(r + 1) * SLOTS_PER_CLIENT {
                self.page.control.clear(s);
            }
            log::debug!(
                "direct access: client {} (pid {}, uid {}) left",
                c.id,
                c.pid,
                c.uid
            );
        }
    }
}

impl crate::fs::Recall for Shared {
    fn recall(&self, ino: u64) {
        self.recall_bucket(control::bucket_of(ino));
    }

    fn recall_all(&self, open: bool, writable: bool) {
        let mut s = 0;
        if open {
            s |= control::OPEN;
            if writable && self.cfg.stores_ok {
                s |= control::WRITABLE;
            }
        }
        self.page.control.set_state(s);
        self.recall_every();
    }
}

impl Direct {
    /// Create the control page and the socket and start the server thread.
    pub fn start(cfg: DirectConfig, writable: bool) -> std::io::Result<Direct> {
        let nonce = random_u64();
        let page = Page::new(nonce)?;
        let socket = format!("daxlink-direct-{}-{nonce:016x}", std::process::id());
        let listener = server::listen(&socket)?;
        let shared = Arc::new(Shared {
            page,
            nonce,
            socket,
            cfg,
            clients: Mutex::new((0..RANGES).map(|_| None).collect()),
            stop: AtomicBool::new(false),
        });
        let mut st = control::OPEN;
        if writable && shared.cfg.stores_ok {
            st |= control::WRITABLE;
        }
        shared.page.control.beat(server::now_ms());
        shared.page.control.set_state(st);
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("daxlink-direct".into())
            .spawn(move || server::run(s2, listener))?;
        log::info!("direct access: socket @{}", shared.socket);
        Ok(Direct {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The hook the core calls at layout changes.
    pub fn recall_hook(&self) -> Arc<dyn crate::fs::Recall> {
        self.shared.clone()
    }

    /// Unmount: nothing may be granted or stored any more; every access is
    /// over; then the thread ends and the socket closes.
    pub fn stop(&self) {
        self.shared.page.control.set_state(0);
        self.shared.recall_every();
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    /// HELLO's reply.
    fn hello(&self, fs: &Fs) -> wire::HelloReply {
        let c = &self.shared.cfg;
        let writable = !fs.read_only() && c.stores_ok;
        wire::HelloReply {
            flags: if writable { wire::HELLO_WRITABLE } else { 0 },
            nonce: self.shared.nonce,
            block_size: crate::format::BLOCK_SIZE as u32,
            flush: c.flush.code(),
            image_len: c.image_len,
            image_dev: c.image_id.0,
            image_ino: c.image_id.1,
            socket: self.shared.socket.as_bytes().to_vec(),
            path: c.image_path.as_os_str().as_bytes().to_vec(),
        }
    }
}

/// The thread group of thread `tid` (the FUSE header names the calling
/// thread), for the lease's holder; the thread id itself if /proc has gone.
fn tgid(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

impl DaxFuse {
    fn direct_on(&self) -> Result<&Direct, FsError> {
        match &self.direct {
            Some(d) if !self.cache.writeback => Ok(d),
            _ => Err(FsError::NotSupported),
        }
    }

    /// Record the lease `fh` holds on `ino` (replacing its previous one)
    /// for the caller's process. From a file's first writable lease on,
    /// kernel-path opens bypass the page cache (`open_flags`); what it
    /// cached before goes now. With `exclusive`, a writable lease is
    /// granted only while no other open of the file uses the page cache
    /// (`handles.rs`), and the lease returned says whether it was.
    fn grant_lease(
        &self,
        fh: u64,
        o: &Origin,
        ino: u64,
        write: bool,
        exclusive: bool,
    ) -> (crate::pages::lease::Granted, bool, bool) {
        let leases = &self.fs.pages.leases;
        let (g, write, others) = {
            let h = self.handles.lock();
            let write = write && !(exclusive && h.cached_elsewhere(ino, fh, |f| leases.holds(f)));
            let g = leases.grant(fh, tgid(o.pid), o.uid, ino, write);
            (g, write, leases.other_writer(ino, fh))
        };
        if g.first_writer {
            self.invalidate(ino);
        }
        if g.new_writer && leases.others_on(ino, fh) {
            // Other direct clients of the file learn of this writer at
            // their next MAP (MAP_OTHERS): make their maps stale now.
            if let Some(d) = &self.direct {
                d.shared.recall_bucket(control::bucket_of(ino));
            }
        }
        (g, write, others)
    }

    /// HELLO: how to reach this mount directly (any open file of it).
    pub(super) fn direct_hello(&self) -> Result<Vec<u8>, FsError> {
        let d = self.direct_on()?;
        let mut b = vec![0u8; wire::HELLO_SIZE];
        let arr: &mut [u8; wire::HELLO_SIZE] =
            b.as_mut_slice().try_into().map_err(|_| FsError::Invalid)?;
        // An image path that does not fit HELLO (PATH_MAX with its NUL)
        // cannot be opened by a client: the kernel path serves it.
        d.hello(&self.fs)
            .encode(arr)
            .map_err(|_| FsError::NotSupported)?;
        Ok(b)
    }

    /// MAP: the file's map from a block on, and a lease held by this open
    /// file (replacing its previous one).
    pub(super) fn direct_map(
        &self,
        o: Origin,
        ino: u64,
        fh: u64,
        input: &[u8],
    ) -> Result<Vec<u8>, FsError> {
        let d = self.direct_on()?;
        // Its layout is its contents' whereabouts: a reader's, as EXTENTS.
        if !self.readable(fh) {
            return Err(FsError::BadFd);
        }
        let (from, flags) = wire::decode_map_request(input).map_err(|_| FsError::Invalid)?;
        if flags & !wire::MAP_WANT_WRITE != 0 {
            return Err(FsError::Invalid);
        }
        let want_write = flags & wire::MAP_WANT_WRITE != 0;
        if want_write && !self.writable(fh) {
            return Err(FsError::BadFd);
        }
        // Not while another open of the file reads through the page cache
        // (asked again under the handle table's lock at the grant).
        let write = want_write
            && d.shared.cfg.stores_ok
            && !self.fs.read_only()
            && !self
                .handles
                .lock()
                .cached_elsewhere(ino, fh, |f| self.fs.pages.leases.holds(f));
        let bucket = control::bucket_of(ino);
        let control = d.shared.control();
        let m = self
            .fs
            .lease_map(ino, from, wire::MAP_MAX, write, &mut || control.gen(bucket))?;
        let (g, write, others) = self.grant_lease(fh, &o, ino, write, true);
        let reply = wire::MapReply {
            flags: if write { wire::MAP_WRITE } else { 0 }
                | if others { wire::MAP_OTHERS } else { 0 },
            size: m.size,
            gen: m.gen,
            bucket,
            next: m.next.unwrap_or(u64::MAX),
            lease: g.id,
            extents: m
                .extents
                .iter()
                .map(|&(l, p, n, w)| wire::Extent {
                    lblock: l,
                    pblock: p,
                    count: n,
                    flags: if w && write { wire::EXT_WRITE } else { 0 },
                })
                .collect(),
        };
        let mut b = vec![0u8; wire::MAP_SIZE];
        let arr: &mut [u8; wire::MAP_SIZE] =
            b.as_mut_slice().try_into().map_err(|_| FsError::Invalid)?;
        reply.encode(arr).map_err(|_| FsError::Invalid)?;
        Ok(b)
    }

    /// TOUCH: the file was written directly through this open file
    /// (TOUCH_MTIME), and the kernel's cached pages of it must go before
    /// the caller reads it through the kernel (TOUCH_INVAL).
    pub(super) fn direct_touch(&self, ino: u64, fh: u64, input: &[u8]) -> Result<Vec<u8>, FsError> {
        self.direct_on()?;
        let flags = crate::fuse::ioctl::get_u64(input, 0).ok_or(FsError::Invalid)?;
        if flags & !(wire::TOUCH_MTIME | wire::TOUCH_INVAL) != 0 {
            return Err(FsError::Invalid);
        }
        if flags & wire::TOUCH_MTIME != 0 {
            if !self.writable(fh) {
                return Err(FsError::BadFd);
            }
            self.fs.touch_direct(ino)?;
            self.invalidate_attrs(ino);
        }
        if flags & wire::TOUCH_INVAL != 0 {
            // The caller's request holds no page of the file: waiting here
            // for pages other reads hold locked is safe.
            self.invalidate(ino);
        }
        Ok(Vec::new())
    }

    /// PINMAP: the physical blocks of pin `id` (made through this open file,
    /// on this file), fixed when it was made, in runs from its page `from`
    /// on; a lease held by this open file records the process, for
    /// `daxlink owners` and the report (a direct mmap holds the pin for the
    /// mapping's life). The blocks are the file's layout: a reader's, as MAP.
    pub(super) fn direct_pinmap(
        &self,
        o: Origin,
        ino: u64,
        fh: u64,
        input: &[u8],
    ) -> Result<Vec<u8>, FsError> {
        self.direct_on()?;
        if !self.readable(fh) {
            return Err(FsError::BadFd);
        }
        let (id, from) = wire::decode_pinmap_request(input).map_err(|_| FsError::Invalid)?;
        match self.fs.pages.pin_owner(id) {
            Some((holder, i)) if holder == fh && i == ino => {}
            Some(_) => return Err(FsError::Perm),
            None => return Err(FsError::Invalid),
        }
        let pin = self.fs.pages.get_pin(id).ok_or(FsError::Invalid)?;
        let pages = pin.pages;
        if from > pages {
            return Err(FsError::Invalid);
        }
        let mut runs: Vec<wire::PinRun> = Vec::new();
        let mut next = u64::MAX;
        for (i, b) in pin.blocks().enumerate().skip(from as usize) {
            let b = if b == crate::pages::ZERO_PAGE {
                wire::PIN_ZERO
            } else {
                b
            };
            let n = runs.len();
            match runs.last_mut() {
                Some(r) if r.pblock == wire::PIN_ZERO && b == wire::PIN_ZERO => r.count += 1,
                Some(r)
                    if r.pblock != wire::PIN_ZERO && r.pblock.checked_add(r.count) == Some(b) =>
                {
                    r.count += 1
                }
                _ if n == wire::PINMAP_MAX => {
                    next = i as u64;
                    break;
                }
                _ => runs.push(wire::PinRun {
                    pblock: b,
                    count: 1,
                }),
            }
        }
        let write = pin.write && self.writable(fh);
        // The mapping stores whatever the page cache holds: not exclusive
        // (ARCHITECTURE.md "Direct mmap").
        let (g, _, _) = self.grant_lease(fh, &o, ino, write, false);
        let reply = wire::PinMapReply {
            flags: if pin.write { wire::PINMAP_WRITE } else { 0 },
            index: pin.index,
            pages,
            next,
            lease: g.id,
            runs,
        };
        let mut b = vec![0u8; wire::PINMAP_SIZE];
        let arr: &mut [u8; wire::PINMAP_SIZE] =
            b.as_mut_slice().try_into().map_err(|_| FsError::Invalid)?;
        reply.encode(arr).map_err(|_| FsError::Invalid)?;
        Ok(b)
    }

    /// A new open of `ino` bypasses the page cache while a writable lease
    /// exists on it: direct stores do not pass through the kernel.
    pub(super) fn direct_io_now(&self, ino: u64) -> bool {
        self.direct.is_some() && self.fs.pages.leases.writable_on(ino)
    }
}
