//! `transport=uring`: FUSE requests over io_uring instead of read(2) and
//! write(2) on /dev/fuse (the kernel's FUSE_OVER_IO_URING, Linux 6.14+, on
//! when root has set /sys/module/fuse/parameters/enable_uring to Y).
//!
//! fuser still mounts, answers FUSE_INIT (asking for FUSE_OVER_IO_URING)
//! and reads /dev/fuse, which after that carries only FORGET and
//! INTERRUPT. Every other request comes through the ring of the CPU its
//! caller ran on (`queue.rs`): one thread per CPU, pinned there, so a
//! request and its answer need no wake-up of another CPU, and one command
//! both answers a request and waits for the next. The ring threads answer
//! eleven opcodes themselves (`queue.rs`'s `NATIVE`: LOOKUP, GETATTR, UNLINK,
//! OPEN, READ, WRITE, RELEASE, GETXATTR, FLUSH, CREATE, and IOCTL for commands the
//! daemon does not serve) through the code fuser's handlers call too. The
//! rest is passed to a second fuser session over a socket pair
//! (`bridge.rs`), and so is a native request from a user the mount turns
//! away, or one that meets a lock a long operation holds (the rings serve
//! in the core's no-wait mode, `fs::no_wait`: such a request fails before
//! changing anything and the bridge serves it again; a READ or WRITE too
//! big for the socket is served on the ring, waiting), so no CPU's queue
//! waits behind a long operation. Each opcode
//! has one implementation whatever the transport; `daxlink counters` shows
//! which requests the rings served.
//!
//! Falling back: when io_uring cannot be set up, or the kernel does not
//! offer FUSE_OVER_IO_URING, the mount logs one line and runs as
//! `transport=dev`.

pub mod abi;
mod bridge;
mod queue;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fuser::{Config, SessionACL};

use crate::fuse::DaxFuse;
use bridge::Bridge;

/// The queues the kernel expects: one per possible CPU (it counts
/// `num_possible_cpus()` and routes a request to the queue of the CPU the
/// caller runs on).
pub fn possible_cpus() -> usize {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let n = list
        .trim()
        .split(',')
        .filter_map(|r| {
            let mut it = r.split('-');
            let a: usize = it.next()?.parse().ok()?;
            let b: usize = it.next().map_or(Some(a), |b| b.parse().ok())?;
            Some(b.checked_sub(a)? + 1)
        })
        .sum::<usize>();
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The largest payload a request or reply carries: the kernel refuses
/// entries smaller than max(8 KiB, max_write, max_pages pages), which
/// `DaxFuse::init` sets to 1 MiB.
const PAYLOAD: usize = 1 << 20;

/// Rings made before mounting.
pub struct Prepared {
    rings: Vec<queue::Ring>,
}

/// Make one ring per queue; an error means this machine cannot use the
/// transport (io_uring disabled, no SQE128, memory limits).
pub fn prepare() -> io::Result<Prepared> {
    let rings = (0..possible_cpus())
        .map(|_| queue::Ring::new())
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Prepared { rings })
}

/// The running transport: the queue threads, the router and the second
/// session.
pub struct Running {
    stopped: mpsc::Receiver<()>,
    queues: usize,
    threads: usize,
    bridge: Arc<Bridge>,
    session: fuser::BackgroundSession,
}

impl Prepared {
    /// Register the rings on the mounted connection `dev` (after FUSE_INIT
    /// granted FUSE_OVER_IO_URING) and start serving. `offer` is the
    /// kernel's INIT offer (capabilities, ABI major and minor).
    pub fn start(
        self,
        dev: BorrowedFd<'_>,
        main: &DaxFuse,
        offer: (u64, u32, u32),
        acl: SessionACL,
        threads: usize,
        stop: Stop,
    ) -> io::Result<Running> {
        let queues = self.rings.len();
        let (bridge, theirs) = Bridge::new(queues)?;
        let over_uring = fuser::InitFlags::FUSE_OVER_IO_URING.bits();
        bridge.send_init(offer.0 & !over_uring, offer.1, offer.2, 128 << 10)?;
        let mut cfg = Config::default();
        cfg.acl = acl;
        cfg.n_threads = Some(threads);
        cfg.clone_fd = false;
        let session = fuser::Session::from_fd(main.twin(), theirs, acl, cfg)?.spawn()?;
        let b = bridge.clone();
        std::thread::Builder::new()
            .name("daxlink-bridge".into())
            .spawn(move || b.route())?;
        let (tx, stopped) = mpsc::channel();
        for (qid, ring) in self.rings.into_iter().enumerate() {
            let (dev, fuse, bridge) = (
                dev.try_clone_to_owned()?,
                Arc::new(main.twin()),
                bridge.clone(),
            );
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("daxlink-ring-{qid}"))
                .spawn(move || {
                    queue::Queue::new(qid, ring, dev, PAYLOAD, fuse, bridge, acl).run(&*stop);
                    let _ = tx.send(());
                })?;
        }
        Ok(Running {
            stopped,
            queues,
            threads,
            bridge,
            session,
        })
    }
}

/// What a queue thread that fails calls: it stops the mount (the mount
/// code aborts the connection), since no other thread serves the requests
/// the kernel routes to that CPU's queue.
pub type Stop = Arc<dyn Fn() + Send + Sync>;

/// After FUSE_INIT: start the transport if the kernel granted it, or log
/// why not. A failure after the grant makes the kernel give io_uring up for
/// this connection (`Ring::decline`), so requests go on over /dev/fuse. A
/// queue that fails later calls `stop`.
pub fn begin(
    p: Prepared,
    dev: &impl AsFd,
    main: &DaxFuse,
    acl: SessionACL,
    threads: usize,
    stop: Stop,
) {
    let t = &main.transport;
    if !t.granted.load(Ordering::SeqCst) {
        log::warn!(
            "transport=uring: the kernel does not offer FUSE over io_uring \
             (is /sys/module/fuse/parameters/enable_uring Y?); using /dev/fuse"
        );
        return;
    }
    let Some(&offer) = t.offer.get() else {
        return;
    };
    match p.start(dev.as_fd(), main, offer, acl, threads, stop) {
        Ok(r) => {
            *t.running.lock() = Some(r);
            log::info!("transport=uring: serving over io_uring");
        }
        Err(e) => {
            log::warn!("transport=uring: cannot start ({e}); using /dev/fuse");
            match queue::Ring::new() {
                Ok(r) => r.decline(dev.as_fd()),
                Err(e) => log::error!("transport=uring: no ring to decline with: {e}"),
            }
        }
    }
}

impl Running {
    /// After the connection ended: wait for the queue threads (each sees
    /// its entries end), then stop the second session.
    pub fn stop(self) {
        for _ in 0..self.queues {
            if self.stopped.recv_timeout(Duration::from_secs(10)).is_err() {
                log::error!("uring: a queue thread did not stop within 10 s");
                break;
            }
        }
        self.bridge.send_destroy(self.threads);
        if let Err(e) = self.session.join() {
            log::debug!("uring bridge session: {e}");
        }
        self.bridge.close();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_possible_cpus() {
        assert!(super::possible_cpus() >= 1);
    }
}
