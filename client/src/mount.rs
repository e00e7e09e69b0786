//! The one daxlink mount a process reaches directly: HELLO on a file of it,
//! the image opened read-write by this process and mapped once, the socket
//! handshake (the image descriptor as the proof of trust), the control page.
//!
//! Everything here runs at the first use of a file of the mount, with raw
//! system calls and static buffers only (no allocation), under a flag that
//! lets one thread set the mount up; a thread (or a signal handler) that
//! finds the setup busy takes the kernel path for that call.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use daxlink_direct::control::{self, Control};
use daxlink_direct::persist::FlushInsn;
use daxlink_direct::wire;
use libc::c_int;

use crate::debug::debug;
use crate::sys;

/// The mount's state.
const NONE: u32 = 0;
const SETTING_UP: u32 = 1;
const READY: u32 = 2;

static STATE: AtomicU32 = AtomicU32::new(NONE);
/// st_dev of the FUSE mount reached directly.
static DEV: AtomicU64 = AtomicU64::new(0);
static IMAGE: AtomicUsize = AtomicUsize::new(0);
static IMAGE_LEN: AtomicUsize = AtomicUsize::new(0);
static CTL: AtomicUsize = AtomicUsize::new(0);
static BLOCK: AtomicU32 = AtomicU32::new(0);
static FLUSH: AtomicU32 = AtomicU32::new(0);
static HFLAGS: AtomicU32 = AtomicU32::new(0);
static SLOT_FIRST: AtomicU32 = AtomicU32::new(0);
static SLOT_COUNT: AtomicU32 = AtomicU32::new(0);
/// Slots of the range now inside an access (bit i: slot_first + i).
static SLOTS_BUSY: AtomicU32 = AtomicU32::new(0);
/// The socket to the daemon, kept open for the life of the registration.
static SOCK: AtomicI32 = AtomicI32::new(-1);

/// Mounts (st_dev) whose direct access was refused: not asked again.
const REFUSED_MAX: usize = 16;
static REFUSED: [AtomicU64; REFUSED_MAX] = [const { AtomicU64::new(0) }; REFUSED_MAX];

/// A usable mount: what an access needs.
#[derive(Clone, Copy)]
pub struct Mount {
    pub image: *mut u8,
    pub image_len: usize,
    pub block: u64,
    pub flush: FlushInsn,
    pub writable: bool,
    ctl: *mut u8,
}

impl Mount {
    pub fn control(&self) -> Control {
        // SAFETY: the control page stays mapped while the mount is READY
        // (only a fork child, single-threaded, unmaps it).
        unsafe { Control::from_raw(self.ctl, control::LEN).expect("checked at setup") }
    }
}

/// Another thread is setting the mount up right now.
pub fn busy() -> bool {
    STATE.load(Acquire) == SETTING_UP
}

/// The ready mount, if `dev` is it.
pub fn ready(dev: u64) -> Option<Mount> {
    if STATE.load(Acquire) != READY || DEV.load(Relaxed) != dev {
        return None;
    }
    current()
}

fn current() -> Option<Mount> {
    if STATE.load(Acquire) != READY {
        return None;
    }
    Some(Mount {
        image: IMAGE.load(Relaxed) as *mut u8,
        image_len: IMAGE_LEN.load(Relaxed),
        block: BLOCK.load(Relaxed) as u64,
        flush: FlushInsn::from_code(FLUSH.load(Relaxed)).unwrap_or(FlushInsn::Clflush),
        writable: HFLAGS.load(Relaxed) & wire::HELLO_WRITABLE != 0,
        ctl: CTL.load(Relaxed) as *mut u8,
    })
}

fn refused(dev: u64) -> bool {
    REFUSED
        .iter()
        .any(|r| r.load(Relaxed) == dev.wrapping_add(1))
}

fn refuse(dev: u64) {
    for r in &REFUSED {
        if r.compare_exchange(0, dev.wrapping_add(1), AcqRel, Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// Is the socket fd the mount's own (the shim does not let a program's
/// `close` of it go unnoticed)?
pub fn forget_socket(fd: c_int) {
    if fd >= 0 {
        let _ = SOCK.compare_exchange(fd, -1, AcqRel, Relaxed);
    }
}

/// close_range over fds above the table: the socket may be among them.
pub fn forget_socket_range(first: u32, last: u32) {
    let s = SOCK.load(Acquire);
    if s >= 0 && (first..=last).contains(&(s as u32)) {
        forget_socket(s);
    }
}

/// The mount of the file `fd` (on FUSE mount `dev`), set up if this process
/// has none yet. None: the kernel path (another mount is the process's, the
/// mount refused, or the setup is busy).
pub fn get(fd: c_int, dev: u64) -> Option<Mount> {
    if let Some(m) = ready(dev) {
        return Some(m);
    }
    if refused(dev) || STATE.load(Acquire) == READY {
        return None;
    }
    if STATE
        .compare_exchange(NONE, SETTING_UP, Acquire, Relaxed)
        .is_err()
    {
        return None;
    }
    match setup(fd, dev) {
        Ok(()) => {
            DEV.store(dev, Relaxed);
            STATE.store(READY, Release);
            ready(dev)
        }
        Err(why) => {
            debug!("fd {fd}: kernel path for the mount (dev {dev:#x}): {why}");
            refuse(dev);
            STATE.store(NONE, Release);
            None
        }
    }
}

/// Static buffers of the setup (used only by the thread holding SETTING_UP).
struct SetupBuf(UnsafeCell<[u8; wire::HELLO_SIZE + 8]>);
// SAFETY: only the thread that moved STATE to SETTING_UP touches it.
unsafe impl Sync for SetupBuf {}
static HELLO_BUF: SetupBuf = SetupBuf(UnsafeCell::new([0; wire::HELLO_SIZE + 8]));

struct Fd(c_int);
impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            let _ = sys::close(self.0);
        }
    }
}

fn setup(fd: c_int, dev: u64) -> Result<(), &'static str> {
    // SAFETY: this thread holds SETTING_UP, the only user of HELLO_BUF.
    let buf = unsafe { &mut *HELLO_BUF.0.get() };
    buf.fill(0);
    match sys::ioctl(fd, wire::HELLO, buf.as_mut_ptr().cast()) {
        Ok(_) => {}
        Err(libc::ENOTTY) | Err(libc::EINVAL) => return Err("HELLO not served"),
        Err(libc::EOPNOTSUPP) => return Err("HELLO refused (EOPNOTSUPP)"),
        Err(_) => return Err("HELLO failed"),
    }
    let h = wire::HelloView::decode(&buf[..]).map_err(|e| match e {
        wire::WireError::Version(_) => "HELLO: another protocol version",
        wire::WireError::Name => "HELLO: bad name lengths",
        _ => "HELLO reply too short",
    })?;
    if h.block_size == 0 || !h.block_size.is_power_of_two() || h.image_len == 0 {
        return Err("HELLO: bad block size or image length");
    }
    let flush = FlushInsn::from_code(h.flush).ok_or("HELLO: unknown flush instruction")?;
    // The daemon runs on this CPU; still, never execute an instruction it lacks.
    let rank = |f: FlushInsn| match f {
        FlushInsn::Clwb => 3,
        FlushInsn::Clflushopt => 2,
        FlushInsn::Clflush => 1,
        FlushInsn::Fence => 0,
    };
    let flush = if rank(flush) > rank(FlushInsn::detect()) {
        FlushInsn::detect()
    } else {
        flush
    };
    let writable = h.flags & wire::HELLO_WRITABLE != 0;
    let mut path = [0u8; wire::PATH_MAX];
    path[..h.path.len()].copy_from_slice(h.path);
    let img = match sys::openat(
        libc::AT_FDCWD,
        path.as_ptr().cast(),
        libc::O_RDWR | libc::O_CLOEXEC,
        0,
    ) {
        Ok(f) => Fd(f as c_int),
        Err(libc::EACCES) | Err(libc::EPERM) | Err(libc::EROFS) => {
            return Err("this user may not open the image read-write")
        }
        Err(_) => return Err("cannot open the image"),
    };
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys::fstat(img.0, &mut st).map_err(|_| "fstat of the image failed")?;
    let is_dev =
        st.st_mode & libc::S_IFMT == libc::S_IFBLK || st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    let id = if is_dev {
        (0, st.st_rdev)
    } else {
        (st.st_dev, st.st_ino)
    };
    if id != (h.image_dev, h.image_ino) {
        return Err("the image path names another file than the daemon's");
    }
    let len = usize::try_from(h.image_len).map_err(|_| "image too large")?;
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    let image = match sys::mmap(len, prot, libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC, img.0) {
        Ok(p) => p,
        Err(_) => {
            sys::mmap(len, prot, libc::MAP_SHARED, img.0).map_err(|_| "cannot map the image")?
        }
    };
    let unmap_image = Unmap(image, len);
    let (sock, ctl_fd, slot_first, slot_count) = handshake(h.socket, h.nonce, img.0)?;
    let ctl = sys::mmap(
        control::LEN,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        ctl_fd.0,
    )
    .map_err(|_| "cannot map the control page")?;
    let unmap_ctl = Unmap(ctl, control::LEN);
    // SAFETY: a shared mapping of LEN bytes, kept while the mount is READY.
    let c = unsafe { Control::from_raw(ctl, control::LEN) }.map_err(|_| "control page")?;
    c.check(h.nonce)
        .map_err(|_| "control page of another mount")?;
    if slot_count == 0
        || slot_count > 32
        || (slot_first as usize + slot_count as usize) > control::SLOTS
    {
        return Err("Welcome: bad slot range");
    }
    std::mem::forget(unmap_image);
    std::mem::forget(unmap_ctl);
    IMAGE.store(image as usize, Relaxed);
    IMAGE_LEN.store(len, Relaxed);
    CTL.store(ctl as usize, Relaxed);
    BLOCK.store(h.block_size, Relaxed);
    FLUSH.store(flush.code(), Relaxed);
    HFLAGS.store(h.flags, Relaxed);
    SLOT_FIRST.store(slot_first, Relaxed);
    SLOT_COUNT.store(slot_count, Relaxed);
    SLOTS_BUSY.store(0, Relaxed);
    SOCK.store(sock.0, Relaxed);
    std::mem::forget(sock);
    debug!(
        "fd {fd}: direct access to mount dev {dev:#x} ({} MiB image, block {}, {}, slots {}+{})",
        len >> 20,
        h.block_size,
        if writable { "read-write" } else { "read-only" },
        slot_first,
        slot_count
    );
    Ok(())
}

struct Unmap(*mut u8, usize);
impl Drop for Unmap {
    fn drop(&mut self) {
        sys::munmap(self.0, self.1);
    }
}

/// Connect to the daemon's abstract socket, send Hello with the image
/// descriptor, receive Welcome with the control page's descriptor.
fn handshake(name: &[u8], nonce: u64, image: c_int) -> Result<(Fd, Fd, u32, u32), &'static str> {
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() + 1 > addr.sun_path.len() {
        return Err("socket name too long");
    }
    for (i, &b) in name.iter().enumerate() {
        addr.sun_path[i + 1] = b as libc::c_char;
    }
    let alen = (std::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as u32;
    let mut sock = Fd(-1);
    for ty in [libc::SOCK_STREAM, libc::SOCK_SEQPACKET] {
        let s =
            Fd(sys::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC).map_err(|_| "socket")? as c_int);
        match sys::connect(s.0, &addr, alen) {
            Ok(_) => {
                sock = s;
                break;
            }
            Err(libc::EPROTOTYPE) => continue,
            Err(_) => return Err("cannot connect to the daemon's socket"),
        }
    }
    if sock.0 < 0 {
        return Err("cannot connect to the daemon's socket");
    }
    sys::setsockopt_timeo(sock.0, libc::SO_RCVTIMEO, 5);
    sys::setsockopt_timeo(sock.0, libc::SO_SNDTIMEO, 5);
    let msg = wire::Hello { nonce }.encode();
    send_fd(sock.0, &msg, image).map_err(|_| "cannot send Hello")?;
    let mut reply = [0u8; wire::WELCOME_MSG];
    let ctl = recv_fd(sock.0, &mut reply).map_err(|_| "no Welcome from the daemon")?;
    let w = wire::Welcome::decode(&reply).map_err(|_| "bad Welcome")?;
    if w.status != 0 {
        if w.status == libc::EACCES || w.status == libc::EPERM {
            return Err("the daemon refused this process (EACCES)");
        }
        return Err("the daemon refused this process");
    }
    if ctl.0 < 0 {
        return Err("Welcome without the control page");
    }
    Ok((sock, ctl, w.slot_first, w.slot_count))
}

#[repr(C)]
union Cmsg {
    hdr: libc::cmsghdr,
    buf: [u8; 64],
}

fn send_fd(sock: c_int, data: &[u8], fd: c_int) -> Result<(), c_int> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cm = Cmsg { buf: [0; 64] };
    // SAFETY: msghdr is plain data; CMSG_* compute inside `cm`, which is
    // large and aligned enough for one descriptor.
    unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = (&mut cm as *mut Cmsg).cast();
        m.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut c_int, fd);
        loop {
            match sys::sendmsg(sock, &m, libc::MSG_NOSIGNAL) {
                Ok(n) if n as usize == data.len() => return Ok(()),
                Ok(_) => return Err(libc::EIO),
                Err(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Receive exactly `out.len()` bytes and at most one descriptor (-1 if none).
fn recv_fd(sock: c_int, out: &mut [u8]) -> Result<Fd, c_int> {
    let mut got = 0;
    let mut fd = Fd(-1);
    while got < out.len() {
        let mut iov = libc::iovec {
            iov_base: out[got..].as_mut_ptr().cast(),
            iov_len: out.len() - got,
        };
        let mut cm = Cmsg { buf: [0; 64] };
        // SAFETY: as in send_fd; the kernel fills at most msg_controllen bytes.
        unsafe {
            let mut m: libc::msghdr = std::mem::zeroed();
            m.msg_iov = &mut iov;
            m.msg_iovlen = 1;
            m.msg_control = (&mut cm as *mut Cmsg).cast();
            m.msg_controllen = 64;
            let n = match sys::recvmsg(sock, &mut m, libc::MSG_CMSG_CLOEXEC) {
                Ok(0) => return Err(libc::ECONNRESET),
                Ok(n) => n as usize,
                Err(libc::EINTR) => continue,
                Err(e) => return Err(e),
            };
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    for i in 0..k {
                        let f =
                            std::ptr::read_unaligned((libc::CMSG_DATA(c) as *const c_int).add(i));
                        if fd.0 < 0 {
                            fd = Fd(f);
                        } else {
                            let _ = sys::close(f);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&m, c);
            }
            got += n;
        }
    }
    Ok(fd)
}

/// Claim one of the process's slots for one access (lock-free; a signal
/// handler interrupting an access claims another). None: all busy.
pub fn claim_slot() -> Option<(usize, u32)> {
    let count = SLOT_COUNT.load(Relaxed);
    let mut cur = SLOTS_BUSY.load(Relaxed);
    loop {
        let free = !cur
            & if count >= 32 {
                u32::MAX
            } else {
                (1u32 << count) - 1
            };
        if free == 0 {
            return None;
        }
        let bit = free.trailing_zeros();
        match SLOTS_BUSY.compare_exchange_weak(cur, cur | (1 << bit), Acquire, Relaxed) {
            Ok(_) => return Some((SLOT_FIRST.load(Relaxed) as usize + bit as usize, bit)),
            Err(c) => cur = c,
        }
    }
}

pub fn release_slot(bit: u32) {
    SLOTS_BUSY.fetch_and(!(1 << bit), Release);
}

/// In a forked child: the parent's registration (its slots, its socket)
/// is not the child's. Unmap and forget; the child says Hello again on its
/// first use. Runs single-threaded (pthread_atfork child handler).
pub fn drop_in_child() {
    if STATE.load(Acquire) == READY {
        sys::munmap(IMAGE.load(Relaxed) as *mut u8, IMAGE_LEN.load(Relaxed));
        sys::munmap(CTL.load(Relaxed) as *mut u8, control::LEN);
        let s = SOCK.swap(-1, Relaxed);
        if s >= 0 {
            let _ = sys::close(s);
        }
    }
    SLOTS_BUSY.store(0, Relaxed);
    STATE.store(NONE, Release);
}

/// The heartbeat is recent and the page open (and writable for writes).
pub fn live(c: &Control, write: bool) -> Result<(), &'static str> {
    let st = c.state();
    if st & control::OPEN == 0 {
        return Err("the daemon closed direct access");
    }
    if write && st & control::WRITABLE == 0 {
        return Err("the mount is not writable directly now");
    }
    if sys::now_ms().saturating_sub(c.heartbeat()) > control::STALE_MS {
        return Err("stale heartbeat");
    }
    Ok(())
}
