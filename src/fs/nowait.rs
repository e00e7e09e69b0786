//! "Never wait" mode: a thread that must not block (an io_uring ring
//! thread, which serves every request of its CPU one after the other) runs
//! a request in [`no_wait`]. In that mode the locks a long operation can
//! hold for long (the namespace lock, inode locks, `meta`) are only tried:
//! one that is taken fails the request with [`FsError::WouldBlock`], and
//! the caller passes it to a thread that may wait. WouldBlock is returned
//! only before the request's first change: the paths call [`changing`]
//! before it, and from then on the thread waits like any other (a request
//! is never left half done). Which locks a no-wait request may still wait
//! for, and why they are short, is in ARCHITECTURE.md ("Locking").

use std::cell::Cell;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{FsError, FsResult};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Locks wait (every thread but a ring thread in a request).
    Wait,
    /// Locks are tried; nothing has changed yet.
    Try,
    /// A no-wait request that has begun to change something: it must
    /// finish, so its locks wait from here on.
    Changing,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Wait) };
    /// A lock was busy during the current `no_wait` call.
    static BLOCKED: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` in no-wait mode on this thread. Returns its result and whether a
/// busy lock made it fail with WouldBlock (then nothing was changed and the
/// request should be served again by a thread that may wait).
pub fn no_wait<R>(f: impl FnOnce() -> R) -> (R, bool) {
    struct Restore(Mode, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
            BLOCKED.with(|b| b.set(self.1));
        }
    }
    let _restore = Restore(
        MODE.with(|m| m.replace(Mode::Try)),
        BLOCKED.with(|b| b.replace(false)),
    );
    let r = f();
    (r, BLOCKED.with(Cell::get))
}

/// Whether locks are only tried on this thread now.
pub(super) fn trying() -> bool {
    MODE.with(|m| m.get() == Mode::Try)
}

/// The request is about to change something: from here on its locks wait.
pub(super) fn changing() {
    MODE.with(|m| {
        if m.get() == Mode::Try {
            m.set(Mode::Changing)
        }
    })
}

/// A busy lock in no-wait mode: recorded, and the error to return.
pub(super) fn would_block() -> FsError {
    BLOCKED.with(|b| b.set(true));
    FsError::WouldBlock
}

/// `m.lock()`, or WouldBlock if it is taken and this thread may not wait.
pub(super) fn lock<T>(m: &Mutex<T>) -> FsResult<MutexGuard<'_, T>> {
    if trying() {
        m.try_lock().ok_or_else(would_block)
    } else {
        Ok(m.lock())
    }
}

/// `l.read()`, or WouldBlock as `lock`.
pub(super) fn read<T>(l: &RwLock<T>) -> FsResult<RwLockReadGuard<'_, T>> {
    if trying() {
        l.try_read().ok_or_else(would_block)
    } else {
        Ok(l.read())
    }
}

/// `l.write()`, or WouldBlock as `lock`.
pub(super) fn write<T>(l: &RwLock<T>) -> FsResult<RwLockWriteGuard<'_, T>> {
    if trying() {
        l.try_write().ok_or_else(would_block)
    } else {
        Ok(l.write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_lock_fails_only_until_the_first_change() {
        let m = Mutex::new(0);
        let held = m.lock();
        let ((), blocked) = no_wait(|| {
            assert_eq!(lock(&m).err(), Some(FsError::WouldBlock));
        });
        assert!(blocked);
        // After `changing`, a lock is waited for (here: released by another
        // thread a little later).
        let m2 = std::sync::Arc::new(Mutex::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let m2 = m2.clone();
            std::thread::spawn(move || {
                let g = m2.lock();
                tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(g);
            })
        };
        rx.recv().unwrap();
        let (r, blocked) = no_wait(|| {
            changing();
            lock(&m2).map(|g| *g)
        });
        t.join().unwrap();
        assert_eq!((r, blocked), (Ok(0), false));
        // Outside `no_wait` the thread waits again, and the flag is clear.
        assert!(!trying());
        drop(held);
        assert!(lock(&m).is_ok());
    }
}
