//! Long operations on threads of their own.
//!
//! A clone of many extents, a dedupe, an unshare, a write pin, a
//! fallocate, a punch, a truncate or a copy_file_range can run for a long
//! time on a big file. Served on a FUSE worker, two of them would take
//! every worker of a two-CPU machine and every other user's `stat` would
//! wait. So the FUSE handler of such a request only reads its arguments
//! and the caller's identity (`Origin`, plain data) and hands the rest,
//! with its reply, to this pool: the worker is free at once. fuser's
//! replies may be sent from any thread.
//!
//! The pool has as many threads as the mount has workers; a long request
//! waits when all are busy, short requests never do. Waiting requests are
//! queued per user (the request header's uid) and the users are served in
//! turn, one request each, so a user who queues a hundred long operations
//! delays another user's one by at most one operation per thread, not by
//! a hundred.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Has thread `tid` (a request header's pid) a fatal signal (SIGKILL)
/// pending? Read from `/proc/<tid>/status` (SigPnd: the thread's own
/// pending set, ShdPnd: the process's), at most every 50 ms per thread
/// of this pool.
///
/// Why reading /proc here grants nothing: the answer can only end the
/// request of that very thread early, with EINTR, at a step boundary
/// where everything before is committed, which the caller could get by
/// asking for less. And the thread cannot have been replaced by another
/// with the same id: the kernel keeps the requesting thread waiting for
/// our answer (uninterruptibly once killed, as fuser refuses
/// FUSE_INTERRUPT), so its id stays its own until we answer. A header pid
/// of 0 (a caller outside the mount's pid namespace) or an unreadable
/// status is "not killed": the operation runs to its end, as before.
pub fn caller_killed(tid: u32) -> bool {
    thread_local! {
        static LAST: std::cell::Cell<Option<(u32, Instant, bool)>> = const { std::cell::Cell::new(None) };
    }
    if tid == 0 {
        return false;
    }
    let now = Instant::now();
    if let Some((t, at, _)) = LAST.with(|l| l.get()) {
        if t == tid && now.duration_since(at) < Duration::from_millis(50) {
            return false;
        }
    }
    let k = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .map(|s| sigkill_pending(&s))
        .unwrap_or(false);
    // Only "alive" is remembered: a killed caller's request ends now.
    if !k {
        LAST.with(|l| l.set(Some((tid, now, false))));
    }
    k
}

/// Does a /proc status text show SIGKILL in SigPnd or ShdPnd?
fn sigkill_pending(status: &str) -> bool {
    let bit = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        let v = l
            .strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"));
        v.and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    })
}

/// Waiting jobs, per user, and the order in which users take turns.
#[derive(Default)]
struct Queues {
    by_user: HashMap<u32, VecDeque<Job>>,
    /// Users with waiting jobs, each once, in the order they are served.
    turn: VecDeque<u32>,
    closed: bool,
}

impl Queues {
    fn push(&mut self, uid: u32, job: Job) {
        let q = self.by_user.entry(uid).or_default();
        if q.is_empty() {
            self.turn.push_back(uid);
        }
        q.push_back(job);
    }

    /// The next job: the first waiting job of the user whose turn it is;
    /// that user goes to the back of the line if more of theirs wait.
    fn pop(&mut self) -> Option<Job> {
        let uid = self.turn.pop_front()?;
        let q = self.by_user.get_mut(&uid)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.by_user.remove(&uid);
        } else {
            self.turn.push_back(uid);
        }
        job
    }
}

type Shared = Arc<(Mutex<Queues>, Condvar)>;

pub struct LongPool {
    threads: usize,
    /// The queues, once the threads are started (None: none could be).
    queues: OnceLock<Option<Shared>>,
    /// Jobs queued or running, for `wait_idle`.
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl LongPool {
    pub fn new(threads: usize) -> LongPool {
        LongPool {
            threads: threads.max(1),
            queues: OnceLock::new(),
            busy: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// Wait until no job is queued or running: FUSE destroy must not mark
    /// the image clean under an operation still writing (an aborted
    /// connection ends the session with its requests still running here).
    /// The shutdown watchdog bounds the wait.
    pub fn wait_idle(&self) {
        let (n, cv) = &*self.busy;
        let mut g = n.lock().unwrap_or_else(|e| e.into_inner());
        while *g > 0 {
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Run `job` for user `uid` on a pool thread (started at first use); on
    /// this thread if none can be started.
    pub fn run(&self, uid: u32, job: Job) {
        let busy = self.busy.clone();
        *busy.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let job: Job = Box::new(move || {
            // Counted down even if the job panics (`guarded` catches it
            // inside, this is the last resort).
            struct Done(Arc<(Mutex<usize>, Condvar)>);
            impl Drop for Done {
                fn drop(&mut self) {
                    let (n, cv) = &*self.0;
                    *n.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    cv.notify_all();
                }
            }
            let _done = Done(busy);
            job()
        });
        match self.queues.get_or_init(|| self.start()) {
            Some(shared) => {
                let (q, cv) = &**shared;
                q.lock().unwrap_or_else(|e| e.into_inner()).push(uid, job);
                cv.notify_one();
            }
            None => job(),
        }
    }

    fn start(&self) -> Option<Shared> {
        let shared: Shared = Arc::new((Mutex::new(Queues::default()), Condvar::new()));
        let mut started = 0;
        for i in 0..self.threads {
            let shared = shared.clone();
            let r = std::thread::Builder::new()
                .name(format!("daxlink-long-{i}"))
                .spawn(move || loop {
                    let job = {
                        let (q, cv) = &*shared;
                        let mut g = q.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(j) = g.pop() {
                                break Some(j);
                            }
                            if g.closed {
                                break None;
                            }
                            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                });
            match r {
                Ok(_) => started += 1,
                Err(e) => log::warn!("cannot start a thread for long operations: {e}"),
            }
        }
        (started > 0).then_some(shared)
    }
}

impl Drop for LongPool {
    /// The threads end once the queues are empty.
    fn drop(&mut self) {
        if let Some(Some(shared)) = self.queues.get() {
            let (q, cv) = &**shared;
            q.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_shows_in_either_pending_set() {
        let st = |p: &str, s: &str| format!("Name:\tx\nSigPnd:\t{p}\nShdPnd:\t{s}\nSigBlk:\t0\n");
        assert!(!sigkill_pending(&st(
            "0000000000000000",
            "0000000000000000"
        )));
        assert!(sigkill_pending(&st("0000000000000100", "0000000000000000")));
        assert!(sigkill_pending(&st("0000000000000000", "0000000000000100")));
        // SIGTERM (bit 15) and SIGINT (bit 2) are not fatal here.
        assert!(!sigkill_pending(&st(
            "0000000000004002",
            "0000000000004002"
        )));
        // This thread has nothing pending; no thread has id 0.
        assert!(!caller_killed(std::process::id()));
        assert!(!caller_killed(0));
    }

    #[test]
    fn users_take_turns() {
        let mut q = Queues::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let job = |tag: &'static str| -> Job {
            let log = log.clone();
            Box::new(move || log.lock().unwrap().push(tag))
        };
        for _ in 0..3 {
            q.push(1000, job("a"));
        }
        q.push(0, job("root"));
        q.push(1001, job("b"));
        q.push(1000, job("a"));
        while let Some(j) = q.pop() {
            j();
        }
        assert_eq!(*log.lock().unwrap(), ["a", "root", "b", "a", "a", "a"]);
        assert!(q.by_user.is_empty() && q.turn.is_empty());
    }

    #[test]
    fn every_job_runs_on_the_pool() {
        let pool = LongPool::new(2);
        let n = Arc::new(Mutex::new(0));
        for uid in 0..50u32 {
            let n = n.clone();
            pool.run(uid % 3, Box::new(move || *n.lock().unwrap() += 1));
        }
        pool.wait_idle();
        assert_eq!(*n.lock().unwrap(), 50);
    }
}
