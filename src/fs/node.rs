//! Inode locks that cannot be taken twice by one thread.
//!
//! Every in-memory inode sits behind a [`Node`]. Its `read()` and `write()`
//! remember, per thread, which inodes the thread holds; asking again for an
//! inode the thread already holds (read or write) fails with
//! [`FsError::Reentrant`] (EDEADLK at the FUSE edge) instead of blocking
//! forever. So a handler that holds an inode and calls, by mistake, an
//! operation that locks the same inode by number fails that one request, and
//! the inode and the daemon stay usable. The rule the code follows is that
//! code holding a guard calls only functions that take the guard itself
//! (`*_locked`, or `&Inode` / `&mut Inode` parameters).
//!
//! In no-wait mode (`nowait.rs`) a busy inode fails with
//! [`FsError::WouldBlock`] instead of being waited for.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::{ArcRwLockReadGuard, ArcRwLockWriteGuard, RawRwLock, RwLock};

use super::{nowait, Inode};
use crate::error::{FsError, FsResult};

thread_local! {
    /// Inode numbers whose lock this thread holds (a few at most).
    static HELD: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Record `ino` as held by this thread, or refuse if it already is.
fn enter(ino: u64) -> FsResult<()> {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if h.contains(&ino) {
            log::error!("inode {ino}: lock requested again by the thread that holds it; refused");
            return Err(FsError::Reentrant);
        }
        h.push(ino);
        Ok(())
    })
}

fn leave(ino: u64) {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if let Some(i) = h.iter().rposition(|x| *x == ino) {
            h.swap_remove(i);
        }
    })
}

/// A shared handle to one in-memory inode.
#[derive(Clone)]
pub struct Node {
    ino: u64,
    lock: Arc<RwLock<Inode>>,
}

impl Node {
    pub fn new(inode: Inode) -> Node {
        Node {
            ino: inode.ino,
            lock: Arc::new(RwLock::new(inode)),
        }
    }

    pub fn read(&self) -> FsResult<RGuard> {
        enter(self.ino)?;
        let g = if nowait::trying() {
            self.lock.try_read_arc()
        } else {
            Some(self.lock.read_arc())
        };
        let Some(g) = g else {
            leave(self.ino);
            return Err(nowait::would_block());
        };
        Ok(RGuard {
            g,
            _held: Held(self.ino),
        })
    }

    pub fn write(&self) -> FsResult<WGuard> {
        enter(self.ino)?;
        let g = if nowait::trying() {
            self.lock.try_write_arc()
        } else {
            Some(self.lock.write_arc())
        };
        let Some(g) = g else {
            leave(self.ino);
            return Err(nowait::would_block());
        };
        Ok(WGuard {
            g,
            held: Held(self.ino),
        })
    }
}

/// This thread's record of holding an inode: forgotten when dropped.
struct Held(u64);

impl Drop for Held {
    fn drop(&mut self) {
        leave(self.0);
    }
}

pub struct RGuard {
    // Field order: the lock is released before the record is forgotten.
    g: ArcRwLockReadGuard<RawRwLock, Inode>,
    _held: Held,
}

impl Deref for RGuard {
    type Target = Inode;
    fn deref(&self) -> &Inode {
        &self.g
    }
}

pub struct WGuard {
    g: ArcRwLockWriteGuard<RawRwLock, Inode>,
    held: Held,
}

impl WGuard {
    /// The read lock, without letting a writer in between.
    pub fn downgrade(self) -> RGuard {
        let WGuard { g, held } = self;
        RGuard {
            g: ArcRwLockWriteGuard::downgrade(g),
            _held: held,
        }
    }
}

impl Deref for WGuard {
    type Target = Inode;
    fn deref(&self) -> &Inode {
        &self.g
    }
}

impl DerefMut for WGuard {
    fn deref_mut(&mut self) -> &mut Inode {
        &mut self.g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::InodeRec;

    #[test]
    fn second_lock_of_a_held_inode_is_refused_not_blocked() {
        let n = Node::new(Inode::new(7, InodeRec::default()));
        let w = n.write().unwrap();
        assert_eq!(n.read().err(), Some(FsError::Reentrant));
        assert_eq!(n.write().err(), Some(FsError::Reentrant));
        drop(w);
        let r = n.read().unwrap();
        assert_eq!(n.read().err(), Some(FsError::Reentrant));
        drop(r);
        // Another inode and, after release, the same one are fine.
        let m = Node::new(Inode::new(8, InodeRec::default()));
        let _a = n.write().unwrap();
        let _b = m.write().unwrap();
        // Another thread is not affected by this thread's holdings.
        let n2 = n.clone();
        let t = std::thread::spawn(move || n2.read().map(|g| g.ino));
        drop(_a);
        assert_eq!(t.join().unwrap(), Ok(7));
    }
}
