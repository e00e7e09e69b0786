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
//! waits in its queue when all are busy, short requests never do.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct LongPool {
    threads: usize,
    tx: OnceLock<Mutex<Option<Sender<Job>>>>,
    /// Jobs queued or running, for `wait_idle`.
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl LongPool {
    pub fn new(threads: usize) -> LongPool {
        LongPool {
            threads: threads.max(1),
            tx: OnceLock::new(),
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

    /// Run `job` on a pool thread (started at first use); on this thread if
    /// none can be started.
    pub fn run(&self, job: Job) {
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
        let slot = self.tx.get_or_init(|| Mutex::new(self.start()));
        let job = match slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        job()
    }

    fn start(&self) -> Option<Sender<Job>> {
        let (tx, rx) = channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..self.threads {
            let rx = rx.clone();
            let r = std::thread::Builder::new()
                .name(format!("daxlink-long-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            match r {
                Ok(_) => started += 1,
                Err(e) => log::warn!("cannot start a thread for long operations: {e}"),
            }
        }
        (started > 0).then_some(tx)
    }
}
