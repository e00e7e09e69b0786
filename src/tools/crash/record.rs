//! The recording media backend: a [`MediaObserver`] that logs every store
//! (offset and bytes), flush (range) and fence, plus the operation boundaries
//! the harness marks. Recording never changes what the media does.

use parking_lot::Mutex;

use crate::media::MediaObserver;

/// One recorded event, in program order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `write_at` / `fill`: the bytes stored at `off`.
    Store { off: u64, data: Vec<u8> },
    /// `flush(off, len)`: write back the cache lines covering the range.
    Flush { off: u64, len: u64 },
    /// `fence()`: earlier flushes are durable once it completes.
    Fence,
    /// The harness starts operation `n` of the workload (0 = mount).
    Op(usize),
}

/// Logs every store, flush and fence of one media.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Mark the start of operation `n` (the end of operation `n - 1`).
    pub fn mark(&self, n: usize) {
        self.events.lock().push(Event::Op(n));
    }

    pub fn len(&self) -> usize {
        self.events.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take the log recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }

    /// Stores recorded since event index `from` (to check that reads store nothing).
    pub fn stores_since(&self, from: usize) -> usize {
        let ev = self.events.lock();
        ev.get(from..).map_or(0, |s| {
            s.iter()
                .filter(|e| matches!(e, Event::Store { .. }))
                .count()
        })
    }
}

impl MediaObserver for Recorder {
    fn store(&self, off: u64, data: &[u8]) {
        self.events.lock().push(Event::Store {
            off,
            data: data.to_vec(),
        });
    }

    fn flush(&self, off: u64, len: u64) {
        self.events.lock().push(Event::Flush { off, len });
    }

    fn fence(&self) {
        self.events.lock().push(Event::Fence);
    }
}
