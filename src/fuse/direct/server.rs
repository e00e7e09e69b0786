//! The direct server's thread: it beats the heartbeat, admits clients on
//! the abstract socket (Hello with the client's own image descriptor →
//! Welcome with the control page's descriptor and a slot range), and
//! forgets a client (clearing its slots) when its connection closes or its
//! process exits. Every read is non-blocking and bounded: a client that
//! sends nothing, too much, or descriptors of anything else is dropped
//! without holding the thread.

use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxlink_direct::control::BEAT_MS;
use daxlink_direct::wire::{Hello, Welcome, HELLO_MSG};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, MsgFlags, UnixAddr};

use super::{Client, Shared, SLOTS_PER_CLIENT};

/// Connections that have not said Hello yet, at most, and at most per
/// user (so that one user holding silent connections cannot keep another
/// user's clients out).
const MAX_PENDING: usize = 64;
const MAX_PENDING_PER_USER: usize = 8;
/// A connection must say Hello within this.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// Descriptors a Hello may carry before it is cut (one is expected).
const MAX_FDS: usize = 8;

/// Bind the abstract socket `name`.
pub(super) fn listen(name: &str) -> std::io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = UnixListener::bind_addr(&addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// CLOCK_MONOTONIC in ms: the heartbeat's clock, which clients read too.
pub(crate) fn now_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
    })
}

/// Own the descriptors an SCM_RIGHTS message installed (all of them, so
/// none leaks whatever else the message says). The buffer was zeroed before
/// `recvmsg`, so the first header with a zero length ends the list.
fn adopt(cmsg: &[u8]) -> Vec<OwnedFd> {
    const W: usize = std::mem::size_of::<usize>();
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let mut out = Vec::new();
    let mut off = 0;
    while off + hdr <= cmsg.len() {
        let word = |o: usize| -> [u8; 4] { cmsg[o..o + 4].try_into().unwrap() };
        let len = usize::from_ne_bytes(cmsg[off..off + W].try_into().unwrap());
        let level = i32::from_ne_bytes(word(off + W));
        let kind = i32::from_ne_bytes(word(off + W + 4));
        if len < hdr || off + len > cmsg.len() {
            break;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            let mut p = off + hdr;
            while p + 4 <= off + len {
                let fd = i32::from_ne_bytes(word(p));
                if fd >= 0 {
                    // SAFETY: the kernel installed this descriptor into our
                    // table for this message (SCM_RIGHTS, close-on-exec);
                    // nothing else in the process knows its number.
                    out.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                p += 4;
            }
        }
        off += len.div_ceil(W) * W;
    }
    out
}

enum Heard {
    /// Nothing yet.
    Wait,
    /// Answered: admitted into slot range `r`, or refused (drop it).
    Admitted(usize),
    Refused,
}

/// Is `fd` the image, opened read-write? 0 or the errno to answer.
fn check_image(sh: &Shared, fd: &OwnedFd) -> i32 {
    use nix::sys::stat::{fstat, SFlag};
    let Ok(st) = fstat(fd) else {
        return libc::EPERM;
    };
    let fmt = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
    let (dev, ino) = sh.cfg.image_id;
    let same = if dev == 0 {
        (fmt == SFlag::S_IFBLK || fmt == SFlag::S_IFCHR) && st.st_rdev == ino
    } else {
        fmt == SFlag::S_IFREG && st.st_dev == dev && st.st_ino == ino
    };
    if !same {
        return libc::EPERM;
    }
    let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    if fl & libc::O_PATH != 0 || fl & libc::O_ACCMODE != libc::O_RDWR {
        return libc::EACCES;
    }
    0
}

fn send_welcome(s: &UnixStream, w: Welcome, fd: Option<&OwnedFd>) -> bool {
    let b = w.encode();
    let iov = [IoSlice::new(&b)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cm: Vec<ControlMessage> = raw.iter().map(|r| ControlMessage::ScmRights(r)).collect();
    matches!(
        sendmsg::<UnixAddr>(
            s.as_raw_fd(),
            &iov,
            &cm,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ),
        Ok(n) if n == b.len()
    )
}

/// Read and answer a Hello, if one has come.
fn hear(sh: &Shared, s: &UnixStream, next_id: &mut u64) -> Heard {
    let mut buf = [0u8; HELLO_MSG];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let n = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<UnixAddr>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m.bytes,
            Err(Errno::EAGAIN) => return Heard::Wait,
            Err(_) => return Heard::Refused,
        }
    };
    let fds = adopt(&cmsg);
    let refuse = |status: i32| {
        send_welcome(
            s,
            Welcome {
                status,
                slot_first: 0,
                slot_count: 0,
                client: 0,
            },
            None,
        );
        Heard::Refused
    };
    if n == 0 {
        return Heard::Refused;
    }
    let hello = match Hello::decode(&buf[..n]) {
        Ok(h) => h,
        Err(daxlink_direct::wire::WireError::Version(_)) => return refuse(libc::EPROTONOSUPPORT),
        Err(_) => return refuse(libc::EPROTO),
    };
    if hello.nonce != sh.nonce {
        return refuse(libc::ESTALE);
    }
    if fds.len() != 1 {
        return refuse(libc::EPERM);
    }
    let st = check_image(sh, &fds[0]);
    if st != 0 {
        log::debug!("direct access: refused a client's descriptor ({st})");
        return refuse(st);
    }
    // The kernel's word for who is on the other end: for liveness and logs.
    let Ok(cred) = getsockopt(s, sockopt::PeerCredentials) else {
        return refuse(libc::EPERM);
    };
    let (pid, uid) = (cred.pid() as u32, cred.uid());
    let Some(pidfd) = crate::fuse::caller::process_pidfd(pid) else {
        return refuse(libc::EPERM);
    };
    let range = {
        let mut c = sh.clients.lock();
        let Some(r) = c.iter().position(Option::is_none) else {
            drop(c);
            return refuse(libc::EAGAIN);
        };
        *next_id += 1;
        c[r] = Some(Client {
            id: *next_id,
            pid,
            uid,
            pidfd,
        });
        r
    };
    let w = Welcome {
        status: 0,
        slot_first: (range * SLOTS_PER_CLIENT) as u32,
        slot_count: SLOTS_PER_CLIENT as u32,
        client: *next_id,
    };
    if !send_welcome(s, w, Some(&sh.page.memfd)) {
        sh.drop_client(range);
        return Heard::Refused;
    }
    log::debug!(
        "direct access: client {} (pid {pid}, uid {uid}) admitted",
        *next_id
    );
    Heard::Admitted(range)
}

/// The server loop, until `stop`.
pub(super) fn run(sh: Arc<Shared>, l: UnixListener) {
    // (connection, since, peer uid)
    let mut pending: Vec<(UnixStream, Instant, u32)> = Vec::new();
    let mut admitted: Vec<(UnixStream, usize)> = Vec::new();
    let mut next_id = 0u64;
    while !sh.stop.load(Ordering::SeqCst) {
        sh.page.control.beat(now_ms());
        let ready: Vec<bool> = {
            let mut fds = Vec::with_capacity(1 + pending.len() + admitted.len());
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            for (s, _, _) in &pending {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            for (s, _) in &admitted {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, PollTimeout::from(BEAT_MS as u16));
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        // Answer Hellos (or drop the slow and the rude).
        let (p_ready, a_ready) = ready[1..].split_at(pending.len());
        let now = Instant::now();
        let mut keep = Vec::with_capacity(pending.len());
        // Added to `admitted` after its own loop below, which zips the
        // connections polled with their results.
        let mut new = Vec::new();
        for ((s, since, uid), r) in pending.drain(..).zip(p_ready) {
            if !r {
                if now.duration_since(since) < HELLO_WAIT {
                    keep.push((s, since, uid));
                }
                continue;
            }
            match hear(&sh, &s, &mut next_id) {
                Heard::Wait => keep.push((s, since, uid)),
                Heard::Admitted(range) => new.push((s, range)),
                Heard::Refused => {}
            }
        }
        pending = keep;
        // A client leaves when its connection closes or its process exits.
        let mut stay = Vec::with_capacity(admitted.len());
        for ((mut s, range), r) in admitted.drain(..).zip(a_ready.iter().copied()) {
            // Nothing more is said after Welcome: end of file, an error or
            // any bytes end the client.
            let gone = r && {
                let mut b = [0u8; 64];
                !matches!(s.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
            };
            let alive = {
                let c = sh.clients.lock();
                c[range]
                    .as_ref()
                    .is_some_and(|cl| crate::fuse::caller::pidfd_alive(&cl.pidfd))
            };
            if gone || !alive {
                sh.drop_client(range);
            } else {
                stay.push((s, range));
            }
        }
        stay.append(&mut new);
        admitted = stay;
        // New connections.
        while let Ok((s, _)) = l.accept() {
            let Ok(uid) = getsockopt(&s, sockopt::PeerCredentials).map(|c| c.uid()) else {
                continue;
            };
            let mine = pending.iter().filter(|p| p.2 == uid).count();
            if pending.len() < MAX_PENDING
                && mine < MAX_PENDING_PER_USER
                && s.set_nonblocking(true).is_ok()
            {
                pending.push((s, Instant::now(), uid));
            }
        }
    }
    for (_, range) in admitted {
        sh.drop_client(range);
    }
}
