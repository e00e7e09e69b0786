//! The requests the ring threads do not answer themselves (every opcode
//! outside `queue.rs`'s `NATIVE`, and a native one from a user the mount
//! turns away or that met a busy lock) go to a second fuser session that serves the same
//! `DaxFuse` state over a socket pair instead of /dev/fuse: one datagram per
//! request, one per reply, exactly what fuser reads from and writes to the
//! device. So every opcode keeps one implementation (fuser's decoding, the
//! handlers in `fuse/mod.rs`) whichever transport brought it. A router
//! thread reads the replies and hands each to the queue whose entry waits
//! for it; that queue's thread commits it to the kernel.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::abi::{in_header, IN_HEADER, OUT_HEADER};

/// Replies waiting for one queue's thread: (entry index, reply bytes).
pub struct Done {
    list: Mutex<Vec<(usize, Vec<u8>)>>,
    /// Written by the router when `list` gains a reply; the queue's ring
    /// has a read posted on it.
    pub efd: OwnedFd,
}

impl Done {
    fn new() -> io::Result<Done> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Done {
            list: Mutex::new(Vec::new()),
            // SAFETY: `fd` was just returned by eventfd and is owned by no one else.
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Take every reply that has arrived.
    pub fn take(&self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, idx: usize, reply: Vec<u8>) {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((idx, reply));
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our eventfd.
        let _ = unsafe { libc::write(self.efd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

pub struct Bridge {
    sock: OwnedFd,
    /// Request id -> (queue, entry) of every request sent and not answered.
    pending: Mutex<HashMap<u64, (usize, usize)>>,
    pub done: Vec<Arc<Done>>,
    /// The largest datagram both directions are sure to carry.
    pub max_msg: usize,
}

/// Room for the largest datagram either way (a 64 KiB xattr or directory
/// listing plus headers is the largest a bridged request carries; READ and
/// WRITE, up to 1 MiB, never come here).
const SOCK_BUF: usize = 4 << 20;

fn sndbuf(fd: &OwnedFd) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes pointers to a live c_int and its length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        v.max(0) as usize
    } else {
        0
    }
}

fn set_buf(fd: &OwnedFd, opt_force: i32, opt: i32) {
    let v: libc::c_int = SOCK_BUF as libc::c_int;
    for o in [opt_force, opt] {
        // SAFETY: passes a pointer to a live c_int and its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                o,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

impl Bridge {
    /// The bridge and the descriptor the second fuser session reads from.
    pub fn new(queues: usize) -> io::Result<(Arc<Bridge>, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the live array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here only.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&ours, &theirs] {
            set_buf(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
            set_buf(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
        }
        let done = (0..queues)
            .map(|_| Done::new().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        // The kernel reports twice what it lets a datagram use.
        let max_msg = sndbuf(&ours).min(sndbuf(&theirs)) / 2;
        let b = Bridge {
            max_msg,
            sock: ours,
            pending: Mutex::new(HashMap::new()),
            done,
        };
        Ok((Arc::new(b), theirs))
    }

    fn send_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        loop {
            // SAFETY: the iovecs point into `parts`, alive for the call.
            let r = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Pass request `unique` (its /dev/fuse bytes, in parts) to the second
    /// session; its reply goes to entry `idx` of queue `qid`.
    pub fn forward(&self, unique: u64, qid: usize, idx: usize, parts: &[&[u8]]) -> io::Result<()> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unique, (qid, idx));
        let r = self.send_parts(parts);
        if r.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&unique);
        }
        r
    }

    /// The FUSE_INIT the second session needs before it serves anything:
    /// the kernel's offer as the first session received it.
    pub fn send_init(
        &self,
        caps: u64,
        major: u32,
        minor: u32,
        max_readahead: u32,
    ) -> io::Result<()> {
        const INIT_IN: usize = 64;
        let mut b = vec![0u8; IN_HEADER + INIT_IN];
        // FUSE_INIT (26), with an id the kernel never uses.
        b[..IN_HEADER].copy_from_slice(&in_header((IN_HEADER + INIT_IN) as u32, 26, u64::MAX));
        let a = IN_HEADER;
        b[a..a + 4].copy_from_slice(&major.to_ne_bytes());
        b[a + 4..a + 8].copy_from_slice(&minor.to_ne_bytes());
        b[a + 8..a + 12].copy_from_slice(&max_readahead.to_ne_bytes());
        b[a + 12..a + 16].copy_from_slice(&(caps as u32).to_ne_bytes());
        b[a + 16..a + 20].copy_from_slice(&((caps >> 32) as u32).to_ne_bytes());
        self.send_parts(&[&b])
    }

    /// Stop the second session: one FUSE_DESTROY per thread (each thread
    /// answers one and ends), then `close`.
    pub fn send_destroy(&self, threads: usize) {
        for _ in 0..threads {
            // FUSE_DESTROY (38).
            let b = in_header(IN_HEADER as u32, 38, u64::MAX - 1);
            if self.send_parts(&[&b]).is_err() {
                return;
            }
        }
    }

    /// Stop the router: it reads end-of-file.
    pub fn close(&self) {
        // SAFETY: shutdown on our own socket; no memory is passed.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Router thread: hand every reply to the queue that waits for it.
    pub fn route(&self) {
        let mut buf = vec![0u8; SOCK_BUF];
        loop {
            // SAFETY: receives into our live buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.sock.as_fd().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            let n = n as usize;
            if n == 0 {
                return;
            }
            if n < OUT_HEADER || n > buf.len() {
                log::error!("uring bridge: reply of {n} bytes dropped");
                continue;
            }
            let unique = u64::from_ne_bytes(buf[8..16].try_into().unwrap_or_default());
            let who = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&unique);
            match who {
                Some((q, idx)) => self.done[q].push(idx, buf[..n].to_vec()),
                // The INIT handshake's reply, or a notification (the first
                // session sends those itself).
                None => log::debug!("uring bridge: reply {unique:#x} has no waiter"),
            }
        }
    }
}
