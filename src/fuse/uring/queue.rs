//! One ring queue: a thread pinned to one CPU with its own io_uring and a
//! few entries registered with the kernel. The kernel puts a request made
//! on that CPU into a free entry of that CPU's queue and completes the
//! entry's command; the thread serves it and answers with one command that
//! commits the reply and waits for the next request (COMMIT_AND_FETCH).
//! The common requests (NATIVE: data, lookups, attributes, open, create,
//! release, unlink) are served right here through the code fuser's
//! handlers call too (`fuse/serve.rs`); everything else goes to the bridge
//! (`bridge.rs`) and is committed when its reply comes back. The thread
//! never waits for a lock a long operation may hold: it serves in the
//! core's no-wait mode (`fs/nowait.rs`), and a request that meets a busy
//! lock goes to the bridge before it changed anything.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use fuser::SessionACL;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::abi::{self, InHeader, Io, HEADERS_LEN, HEADER_AREA, IN_HEADER, OP_AREA};
use super::bridge::{Bridge, Done};
use crate::fs::Cred;
use crate::fuse::caller::Origin;
use crate::fuse::{wire_mode, DaxFuse};

/// Entries per queue: requests that one CPU's queue can hold at once (a
/// bridged request keeps its entry until its reply comes back).
pub const ENTRIES: usize = 8;
/// The opcodes the ring threads answer themselves (IOCTL only for commands
/// the daemon does not serve).
const NATIVE: &[u32] = &[
    abi::OP_LOOKUP,
    abi::OP_GETATTR,
    abi::OP_UNLINK,
    abi::OP_OPEN,
    abi::OP_READ,
    abi::OP_WRITE,
    abi::OP_RELEASE,
    abi::OP_GETXATTR,
    abi::OP_FLUSH,
    abi::OP_CREATE,
    abi::OP_IOCTL,
];
/// user_data of the eventfd read that says bridged replies have arrived.
const EVENT: u64 = u64::MAX;

/// A ring made before mounting (so that a machine without io_uring falls
/// back before the kernel is told to expect it).
pub struct Ring(IoUring<squeue::Entry128, cqueue::Entry>);

impl Ring {
    pub fn new() -> io::Result<Ring> {
        Ok(Ring(IoUring::builder().build((2 * ENTRIES + 2) as u32)?))
    }
}

impl Ring {
    /// Send a REGISTER the kernel must refuse (no iovecs): it then stops
    /// expecting io_uring on this connection and wakes the requests that
    /// wait for the ring, which go over /dev/fuse instead.
    pub fn decline(mut self, dev: BorrowedFd<'_>) {
        let e = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), abi::CMD_REGISTER)
            .cmd(abi::cmd_req(0, 0))
            .build()
            .user_data(0);
        // SAFETY: the entry names no memory.
        if unsafe { self.0.submission().push(&e) }.is_ok() {
            let _ = self.0.submit_and_wait(1);
        }
    }
}

/// Field order: Rust drops fields in declaration order, so `ring` (whose
/// descriptor's close makes the kernel cancel what is still submitted) and
/// `dev` go before the buffers the kernel writes into. That alone is not
/// enough (the kernel cancels asynchronously, after the close returns), so
/// `Drop` leaks those buffers whenever the kernel may still use them (see
/// there): they outlive the kernel's use on every exit path.
pub struct Queue {
    qid: usize,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev: OwnedFd,
    /// Entries registered with the kernel and not yet ended by it (counted
    /// from before the first REGISTER is pushed).
    live: usize,
    /// Per entry: the header buffer (u64s for alignment) and the payload;
    /// the kernel keeps their addresses from registration on and copies
    /// requests into them until the entry ends.
    headers: Vec<Vec<u64>>,
    payloads: Vec<Vec<u8>>,
    iovs: Vec<[libc::iovec; 2]>,
    fuse: Arc<DaxFuse>,
    bridge: Arc<Bridge>,
    /// Who may use the mount (allow_root / the owner only): requests from
    /// anyone else go to the bridge, where fuser applies its rule.
    acl: SessionACL,
    owner: u32,
    done: Arc<Done>,
    /// Where the armed eventfd read stores its count (always leaked).
    event: Box<u64>,
    /// Test hook (DAXLINK_FAULT_INJECT=uring-queue-exit): the queue fails
    /// on its first request, as if its ring had broken.
    exit_hook: bool,
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The eventfd read is armed for as long as the queue runs and is
        // only cancelled by the kernel after `ring` is closed: its 8 bytes
        // are leaked deliberately, whatever the exit path.
        std::mem::forget(std::mem::replace(&mut self.event, Box::new(0)));
        if self.live == 0 {
            // The kernel ended every entry (the connection is gone): it
            // copies nothing more into the header and payload buffers.
            return;
        }
        // An early exit (an error or a panic) with entries still
        // registered: the kernel may copy a request into any of them until
        // the connection ends, so they must never be freed or reused.
        log::warn!(
            "uring queue {}: leaking the buffers of {} registered entries",
            self.qid,
            self.live
        );
        std::mem::forget(std::mem::take(&mut self.headers));
        std::mem::forget(std::mem::take(&mut self.payloads));
        std::mem::forget(std::mem::take(&mut self.iovs));
    }
}

/// Set the `len` field of a submission entry (the iovec count REGISTER
/// expects), which the io-uring crate's URING_CMD builder leaves at 0.
fn with_len(e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is repr(C), 128 bytes of plain data (the kernel's
    // struct io_uring_sqe followed by the command area); `len` is the u32
    // at byte 24 of that struct. Sizes are equal, so transmute is sound.
    let mut b: [u8; 128] = unsafe { std::mem::transmute(e) };
    b[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above; any byte pattern is a valid Entry128.
    unsafe { std::mem::transmute(b) }
}

impl Queue {
    pub fn new(
        qid: usize,
        ring: Ring,
        dev: OwnedFd,
        payload: usize,
        fuse: Arc<DaxFuse>,
        bridge: Arc<Bridge>,
        acl: SessionACL,
    ) -> Queue {
        let mut headers: Vec<Vec<u64>> =
            (0..ENTRIES).map(|_| vec![0u64; HEADERS_LEN / 8]).collect();
        let mut payloads: Vec<Vec<u8>> = (0..ENTRIES).map(|_| vec![0u8; payload]).collect();
        let iovs = (0..ENTRIES)
            .map(|i| {
                [
                    libc::iovec {
                        iov_base: headers[i].as_mut_ptr().cast(),
                        iov_len: HEADERS_LEN,
                    },
                    libc::iovec {
                        iov_base: payloads[i].as_mut_ptr().cast(),
                        iov_len: payload,
                    },
                ]
            })
            .collect();
        let done = bridge.done[qid].clone();
        Queue {
            qid,
            ring: ring.0,
            dev,
            live: 0,
            headers,
            payloads,
            iovs,
            fuse,
            bridge,
            acl,
            // SAFETY: geteuid has no preconditions.
            owner: unsafe { libc::geteuid() },
            done,
            event: Box::new(0),
            exit_hook: std::env::var("DAXLINK_FAULT_INJECT").as_deref() == Ok("uring-queue-exit"),
        }
    }

    fn push(&mut self, e: squeue::Entry128) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry names (iovecs, header and
            // payload buffers, the eventfd counter) lives in `self`, is never
            // moved (heap allocations owned by `self`), and outlives the
            // kernel's use of it: `Drop for Queue` leaks whatever the kernel
            // may still write into.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn register(&mut self, idx: usize) -> io::Result<()> {
        let e = opcode::UringCmd80::new(types::Fd(self.dev.as_raw_fd()), abi::CMD_REGISTER)
            .cmd(abi::cmd_req(0, self.qid as u16))
            .addr(Some(self.iovs[idx].as_ptr() as u64))
            .build()
            .user_data(idx as u64);
        self.push(with_len(e, 2))
    }

    fn commit(&mut self, idx: usize, unique: u64) -> io::Result<()> {
        let e = opcode::UringCmd80::new(types::Fd(self.dev.as_raw_fd()), abi::CMD_COMMIT_AND_FETCH)
            .cmd(abi::cmd_req(unique, self.qid as u16))
            .build()
            .user_data(idx as u64);
        self.push(e)
    }

    fn arm_event(&mut self) -> io::Result<()> {
        let ptr: *mut u64 = &mut *self.event;
        let e = opcode::Read::new(types::Fd(self.done.efd.as_raw_fd()), ptr.cast(), 8)
            .build()
            .user_data(EVENT);
        self.push(e.into())
    }

    fn headers(&mut self, idx: usize) -> &mut [u8] {
        let h = &mut self.headers[idx];
        // SAFETY: a Vec<u64> of HEADERS_LEN / 8 elements is HEADERS_LEN
        // initialized bytes; the borrow of `self` keeps it alive. The kernel
        // writes an entry's header only before it completes the entry to us,
        // and not again until we commit it, so nothing stores into it while
        // this borrow lives (entries are used one at a time, on this thread).
        unsafe { std::slice::from_raw_parts_mut(h.as_mut_ptr().cast(), HEADERS_LEN) }
    }

    /// Answer entry `idx` with `error` (negative errno) or `payload` bytes
    /// already in the payload buffer.
    fn answer(&mut self, idx: usize, unique: u64, error: i32, payload: usize) -> io::Result<()> {
        abi::set_reply(self.headers(idx), unique, error, payload as u32);
        self.commit(idx, unique)
    }

    /// Serve the request the kernel put in entry `idx`: here if the ring
    /// threads serve its opcode, else through the bridge.
    fn serve(&mut self, idx: usize) -> io::Result<()> {
        if self.exit_hook {
            return Err(io::Error::other(
                "injected failure (DAXLINK_FAULT_INJECT=uring-queue-exit)",
            ));
        }
        let h: [u8; HEADERS_LEN] = self.headers(idx).try_into().unwrap_or([0; HEADERS_LEN]);
        let (Some(hd), Some(ent)) = (InHeader::decode(&h), abi::EntInOut::decode(&h)) else {
            return Err(io::Error::other("short ring header"));
        };
        let payload_sz = (ent.payload_sz as usize).min(self.payloads[idx].len());
        let op = &h[HEADER_AREA..HEADER_AREA + OP_AREA];
        let io = Io::decode(op);
        // READ or WRITE larger than the socket carries: always here.
        let big = matches!(hd.opcode, abi::OP_READ | abi::OP_WRITE)
            && io.is_some_and(|io| io.size as usize + 4096 > self.bridge.max_msg);
        let here = match hd.opcode {
            abi::OP_IOCTL => {
                abi::op_u32(op, 12).is_some_and(|cmd| !crate::fuse::ioctl::SERVED.contains(&cmd))
            }
            o => NATIVE.contains(&o),
        };
        // A user the mount turns away (allow_root, or the owner-only
        // default): fuser applies its rule (which lets READ, WRITE and
        // RELEASE through: the kernel may send those without the user's id).
        let outsider = match self.acl {
            SessionACL::All => false,
            SessionACL::RootAndOwner => hd.uid != self.owner && hd.uid != 0,
            SessionACL::Owner => hd.uid != self.owner,
        } && !matches!(hd.opcode, abi::OP_READ | abi::OP_WRITE | abi::OP_RELEASE);
        if !here || outsider {
            return self.bridge_out(idx, hd, payload_sz);
        }
        // A request that would wait for a lock (a long clone, truncate or
        // punch holds its inode, another request the namespace or `meta`)
        // would hold up every later request of this CPU: it runs in no-wait
        // mode, fails with WouldBlock before changing anything, and the
        // bridge's threads serve it again, waiting. A READ or WRITE too big
        // for the socket can only be served here: it waits.
        let served = if big {
            self.serve_here(idx, hd, op, io, payload_sz)
        } else {
            let (served, blocked) =
                crate::fs::no_wait(|| self.serve_here(idx, hd, op, io, payload_sz));
            if blocked {
                return self.bridge_out(idx, hd, payload_sz);
            }
            served
        };
        if served.is_some() {
            crate::fuse::counters::bump(crate::fuse::counters::RING, hd.opcode);
        }
        match served {
            Some(Ok(n)) => self.answer(idx, hd.unique, 0, n),
            Some(Err(e)) => self.answer(idx, hd.unique, -e, 0),
            // A header too short to decode: fuser's decoding answers it.
            None => self.bridge_out(idx, hd, payload_sz),
        }
    }

    /// The opcodes of NATIVE: the reply's payload length or an errno.
    fn serve_here(
        &mut self,
        idx: usize,
        hd: InHeader,
        op: &[u8],
        io: Option<Io>,
        payload_sz: usize,
    ) -> Option<Result<usize, i32>> {
        let ttl = crate::fuse::TTL.as_secs();
        let fuse = &self.fuse;
        let buf = &mut self.payloads[idx];
        Some(match hd.opcode {
            abi::OP_READ => {
                let io = io?;
                let size = (io.size as usize).min(buf.len());
                let mut out = Err(libc::EIO);
                fuse.serve_read(hd.nodeid, io.offset, size, |r| {
                    out = r.map(|d| {
                        buf[..d.len()].copy_from_slice(d);
                        d.len()
                    })
                });
                out
            }
            abi::OP_WRITE => {
                let io = io?;
                let data = buf
                    .get(..io.size as usize)
                    .filter(|_| io.size as usize <= payload_sz)?;
                let o = Origin {
                    pid: hd.pid,
                    uid: hd.uid,
                    gid: hd.gid,
                };
                fuse.serve_write(
                    o,
                    hd.nodeid,
                    io.fh,
                    io.offset,
                    data,
                    io.io_flags,
                    io.open_flags as i32,
                )
                .map(|n| {
                    // struct fuse_write_out: size, padding.
                    buf[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
                    buf[4..8].fill(0);
                    8
                })
            }
            abi::OP_LOOKUP => {
                let name = abi::name(&buf[..payload_sz])?;
                fuse.serve_lookup(hd.nodeid, name)
                    .map(|a| abi::entry_out(buf, &a, wire_mode(a.mode), ttl))
            }
            abi::OP_GETATTR => fuse
                .serve_getattr(hd.nodeid)
                .map(|a| abi::attr_out(buf, &a, wire_mode(a.mode), ttl)),
            abi::OP_OPEN => {
                let flags = abi::op_u32(op, 0)?;
                fuse.serve_open(hd.nodeid, flags as i32)
                    .map(|(fh, f)| abi::open_out(buf, fh, f.bits()))
            }
            abi::OP_CREATE => {
                let (flags, mode, umask) = (
                    abi::op_u32(op, 0)?,
                    abi::op_u32(op, 4)?,
                    abi::op_u32(op, 8)?,
                );
                let name = abi::name(&buf[..payload_sz])?.to_vec();
                let who = Cred {
                    uid: hd.uid,
                    gid: hd.gid,
                    umask,
                };
                fuse.serve_create(who, hd.nodeid, &name, mode, flags as i32)
                    .map(|(a, fh, f)| {
                        let n = abi::entry_out(buf, &a, wire_mode(a.mode), ttl);
                        n + abi::open_out(&mut buf[n..], fh, f.bits())
                    })
            }
            abi::OP_GETXATTR => {
                // struct fuse_getxattr_in (size, padding); the name in the payload.
                let size = abi::op_u32(op, 0)? as usize;
                let name = abi::name(&buf[..payload_sz])?.to_vec();
                match fuse.serve_getxattr(hd.nodeid, &name) {
                    // A size query: struct fuse_getxattr_out (size, padding).
                    Ok(v) if size == 0 => {
                        buf[0..4].copy_from_slice(&(v.len() as u32).to_ne_bytes());
                        buf[4..8].fill(0);
                        Ok(8)
                    }
                    Ok(v) if v.len() > size => Err(libc::ERANGE),
                    // Bigger than this entry's buffer: the bridge answers
                    // (reading changes nothing).
                    Ok(v) if v.len() > buf.len() => return None,
                    Ok(v) => {
                        buf[..v.len()].copy_from_slice(&v);
                        Ok(v.len())
                    }
                    Err(e) => Err(e),
                }
            }
            // As `DaxFuse::flush`: nothing to do at close.
            abi::OP_FLUSH => Err(libc::ENOSYS),
            abi::OP_RELEASE => {
                let fh = abi::op_u64(op, 0)?;
                fuse.serve_release(hd.nodeid, fh).map(|_| 0)
            }
            abi::OP_UNLINK => {
                let name = abi::name(&buf[..payload_sz])?.to_vec();
                fuse.serve_unlink(hd.nodeid, &name).map(|_| 0)
            }
            // An ioctl the daemon does not serve (a tty's TCGETS, from
            // isatty): what `DaxFuse::ioctl` answers for any such command.
            abi::OP_IOCTL => Err(libc::ENOTTY),
            _ => return None,
        })
    }

    /// `serve`, but a panic in this transport's own code (the handlers
    /// have their own guard) fails that request with EIO instead of
    /// ending the thread and with it every later request of this CPU.
    fn serve_guarded(&mut self, idx: usize) -> io::Result<()> {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve(idx)));
        match r {
            Ok(r) => r,
            Err(_) => {
                log::error!(
                    "uring queue {}: serving entry {idx} panicked; EIO",
                    self.qid
                );
                let unique = InHeader::decode(self.headers(idx)).map_or(0, |h| h.unique);
                self.answer(idx, unique, -libc::EIO, 0)
            }
        }
    }

    /// Send entry `idx`'s request to the bridge as /dev/fuse would have
    /// delivered it: header, the opcode's header, payload.
    fn bridge_out(&mut self, idx: usize, hd: InHeader, payload_sz: usize) -> io::Result<()> {
        let op_len = (hd.len as usize).checked_sub(IN_HEADER + payload_sz);
        let Some(op_len) = op_len.filter(|&l| l <= OP_AREA) else {
            log::error!(
                "uring: request {} of length {} does not add up",
                hd.opcode,
                hd.len
            );
            return self.answer(idx, hd.unique, -libc::EIO, 0);
        };
        let (qid, unique) = (self.qid, hd.unique);
        let h = self.headers(idx).to_vec();
        let parts: [&[u8]; 3] = [
            &h[..IN_HEADER],
            &h[HEADER_AREA..HEADER_AREA + op_len],
            &self.payloads[idx][..payload_sz],
        ];
        if let Err(e) = self.bridge.forward(unique, qid, idx, &parts) {
            log::error!("uring: cannot pass request {} on: {e}", hd.opcode);
            return self.answer(idx, unique, -libc::EIO, 0);
        }
        Ok(())
    }

    /// Commit the replies the bridge has brought back.
    fn bridged_replies(&mut self) -> io::Result<()> {
        for (idx, reply) in self.done.take() {
            let unique = u64::from_ne_bytes(reply[8..16].try_into().unwrap_or_default());
            let error = i32::from_ne_bytes(reply[4..8].try_into().unwrap_or_default());
            let body = &reply[abi::OUT_HEADER..];
            if body.len() > self.payloads[idx].len() {
                self.answer(idx, unique, -libc::EIO, 0)?;
                continue;
            }
            self.payloads[idx][..body.len()].copy_from_slice(body);
            self.answer(idx, unique, error, body.len())?;
        }
        Ok(())
    }

    /// Register every entry, then serve until the connection ends. If the
    /// queue fails before that, `stop` is called (it stops the mount: no
    /// other thread serves this CPU's requests); the entries' buffers are
    /// leaked then (see `Drop`).
    pub fn run(mut self, stop: &dyn Fn()) {
        let cpu = self.qid;
        crate::fuse::counters::on_ring_thread();
        // SAFETY: cpu_set_t is plain data, zeroed is a valid (empty) set;
        // CPU_SET writes inside it; sched_setaffinity reads `size_of` bytes
        // of it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        match self.serve_all() {
            Ok(()) => log::debug!("uring queue {} stopped", self.qid),
            Err(e) => {
                log::error!(
                    "uring queue {}: {e}; stopping the mount (nothing else serves CPU {cpu})",
                    self.qid
                );
                stop();
            }
        }
    }

    /// Serve until every entry has ended because the connection ended.
    fn serve_all(&mut self) -> io::Result<()> {
        // From here on the kernel may hold any entry.
        self.live = ENTRIES;
        (0..ENTRIES)
            .try_for_each(|i| self.register(i))
            .and_then(|_| self.arm_event())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot register: {e}")))?;
        let mut conn_ended = false;
        while self.live > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (ud, res) in cqes {
                if ud == EVENT {
                    self.bridged_replies()?;
                    self.arm_event()?;
                } else if res < 0 {
                    // The connection ended (ENOTCONN) or the entry failed.
                    if res == -libc::ENOTCONN || res == -libc::ECANCELED {
                        conn_ended = true;
                    } else {
                        log::warn!("uring queue {}: entry {ud} ended: errno {}", self.qid, -res);
                    }
                    self.live -= 1;
                } else if (ud as usize) < ENTRIES {
                    // An error here means the ring itself failed.
                    self.serve_guarded(ud as usize)?;
                }
            }
        }
        if !conn_ended {
            return Err(io::Error::other("every entry failed"));
        }
        Ok(())
    }
}
