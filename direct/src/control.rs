//! The control page: the words the daemon and its direct clients share.
//!
//! The daemon creates it (a memfd), maps it, and hands its descriptor to
//! each client it admits; clients map it too. Layout (little-endian u64
//! words, each group on its own 64-byte lines):
//!
//! | offset | word | written by |
//! |---|---|---|
//! | 0 | magic, version, bucket and slot counts, nonce | daemon, once |
//! | 64 | state: `OPEN`, `WRITABLE` | daemon |
//! | 128 | heartbeat: the daemon's CLOCK_MONOTONIC in ms | daemon, every [`BEAT_MS`] |
//! | 4096 | generation of each bucket of inodes | daemon (recall) |
//! | slots | one in-access word per client thread, 64 bytes apart | the client thread owning it; the daemon clears a dead client's |
//!
//! **The rule** (why a recall cannot miss an access). A client thread that
//! reads or writes inode I's blocks through a map it got at generation G
//! (under the inode's lock, in the MAP ioctl) first publishes `(bucket(I),
//! G)` in its slot, then reads the bucket's generation again; only if it
//! is still G does it touch the blocks, and it clears its slot when done
//! (`enter`/`exit`). The daemon, before any change that takes a block
//! out of I's map, makes a block of I shared, or shrinks I (and while it
//! holds I's lock, so no new map of I can be handed out until the change is
//! made), bumps the bucket's generation and then waits until no slot holds
//! that bucket with an older generation (`recall`). Both sides use
//! sequentially consistent operations, so of "client stores slot, loads
//! generation" and "daemon stores generation, loads slots" at least one
//! sees the other's store: either the client sees the new generation and
//! backs off (and refreshes its map, which waits for I's lock and so for
//! the change), or the daemon sees the slot and waits until the access is
//! over. Several inodes share a bucket; a bump only makes their clients
//! refresh. An access is one copy, so the wait is short; a slot of a
//! client that died is cleared by the daemon (it knows each client's
//! process and slot range).

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// "DXLCTL" and the layout version in the low bytes.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DXLCTL\x00\x01");
pub const VERSION: u64 = 1;
/// Buckets of inodes, each with one generation word.
pub const BUCKETS: usize = 4096;
/// In-access slots, one per client thread.
pub const SLOTS: usize = 1024;
/// The daemon updates the heartbeat this often.
pub const BEAT_MS: u64 = 50;
/// A client stops direct access when the heartbeat is older than this: the
/// daemon is gone (or stopped), and no one would recall its leases.
pub const STALE_MS: u64 = 1000;

/// State bits.
pub const OPEN: u64 = 1;
pub const WRITABLE: u64 = 2;

const OFF_MAGIC: usize = 0;
const OFF_COUNTS: usize = 8;
const OFF_NONCE: usize = 16;
const OFF_STATE: usize = 64;
const OFF_BEAT: usize = 128;
const OFF_GENS: usize = 4096;
const OFF_SLOTS: usize = OFF_GENS + BUCKETS * 8;
const SLOT_STRIDE: usize = 64;
/// Bytes of the control page.
pub const LEN: usize = OFF_SLOTS + SLOTS * SLOT_STRIDE;

const BUSY: u64 = 1 << 63;
const GEN_BITS: u32 = 48;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

/// The bucket of an inode's generation.
pub fn bucket_of(ino: u64) -> u32 {
    (ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKETS.trailing_zeros())) as u32
}

fn slot_word(bucket: u32, gen: u64) -> u64 {
    BUSY | ((bucket as u64) << GEN_BITS) | (gen & GEN_MASK)
}

#[derive(Debug, PartialEq, Eq)]
pub enum ControlError {
    /// The mapping is shorter than [`LEN`] or not 8-byte aligned.
    Size,
    /// Not a control page of this version.
    Magic,
}

/// A slot a recall found still inside an access when its deadline passed.
#[derive(Debug, PartialEq, Eq)]
pub struct Stuck {
    pub slot: usize,
}

/// A view of a mapped control page. It does not own the mapping.
pub struct Control {
    base: *const u8,
}

// SAFETY: every access to the page goes through `AtomicU64`s, which may be
// shared between threads; the raw pointer is only a base address.
unsafe impl Send for Control {}
// SAFETY: as above.
unsafe impl Sync for Control {}

impl Control {
    /// View the page at `base`.
    ///
    /// # Safety
    /// `base..base+len` must be a shared mapping (readable and writable)
    /// that stays mapped for as long as the `Control` lives.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Result<Control, ControlError> {
        if len < LEN || !(base as usize).is_multiple_of(8) {
            return Err(ControlError::Size);
        }
        Ok(Control { base })
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= LEN && off.is_multiple_of(8));
        // SAFETY: `off` is one of this module's constant offsets (or a
        // bucket/slot index bounds-checked by the caller), inside the LEN
        // bytes `from_raw` was promised, 8-byte aligned; AtomicU64 has the
        // layout of u64 and every access to the page is atomic.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    /// Daemon: write the header of a fresh page (all other words zero).
    pub fn init(&self, nonce: u64) {
        self.word(OFF_COUNTS).store(
            VERSION | ((BUCKETS as u64) << 16) | ((SLOTS as u64) << 40),
            SeqCst,
        );
        self.word(OFF_NONCE).store(nonce, SeqCst);
        for b in 0..BUCKETS {
            self.word(OFF_GENS + b * 8).store(1, SeqCst);
        }
        self.word(OFF_MAGIC).store(MAGIC, SeqCst);
    }

    /// Client: is this a page of this layout, for this mount?
    pub fn check(&self, nonce: u64) -> Result<(), ControlError> {
        let counts = VERSION | ((BUCKETS as u64) << 16) | ((SLOTS as u64) << 40);
        if self.word(OFF_MAGIC).load(SeqCst) != MAGIC
            || self.word(OFF_COUNTS).load(SeqCst) != counts
            || self.word(OFF_NONCE).load(SeqCst) != nonce
        {
            return Err(ControlError::Magic);
        }
        Ok(())
    }

    pub fn state(&self) -> u64 {
        self.word(OFF_STATE).load(SeqCst)
    }

    /// Daemon: set the state bits. Clearing `WRITABLE` or `OPEN` must be
    /// followed by [`Control::recall_all`], so no access that saw the old
    /// state is still going on.
    pub fn set_state(&self, s: u64) {
        self.word(OFF_STATE).store(s, SeqCst);
    }

    pub fn heartbeat(&self) -> u64 {
        self.word(OFF_BEAT).load(SeqCst)
    }

    /// Daemon: publish that it is alive now.
    pub fn beat(&self, now_ms: u64) {
        self.word(OFF_BEAT).store(now_ms, SeqCst);
    }

    /// The current generation of a bucket.
    pub fn gen(&self, bucket: u32) -> u64 {
        self.word(OFF_GENS + (bucket as usize % BUCKETS) * 8)
            .load(SeqCst)
            & GEN_MASK
    }

    fn slot(&self, slot: usize) -> &AtomicU64 {
        self.word(OFF_SLOTS + (slot % SLOTS) * SLOT_STRIDE)
    }

    /// Client: begin an access to an inode of `bucket` through a map taken
    /// at `gen`, in the thread's own `slot`. False: the map is stale (or
    /// the daemon stopped granting), refresh it; the slot is idle again.
    pub fn enter(&self, slot: usize, bucket: u32, gen: u64) -> bool {
        let s = self.slot(slot);
        s.store(slot_word(bucket, gen), SeqCst);
        if self.gen(bucket) == gen & GEN_MASK && self.state() & OPEN != 0 {
            return true;
        }
        s.store(0, SeqCst);
        false
    }

    /// Client: the access that `enter` began is over.
    pub fn exit(&self, slot: usize) {
        self.slot(slot).store(0, SeqCst);
    }

    /// Is `slot` inside an access (any inode)?
    pub fn busy(&self, slot: usize) -> bool {
        self.slot(slot).load(SeqCst) & BUSY != 0
    }

    /// Daemon: clear a slot whose owner is gone.
    pub fn clear(&self, slot: usize) {
        self.slot(slot).store(0, SeqCst);
    }

    /// Daemon: recall every map of the inodes of `bucket`: bump its
    /// generation, then wait until no slot is inside an access that began
    /// under an older one. `alive(slot)` says whether the slot's owner
    /// still runs (a dead owner's slot is cleared, not waited for). Past
    /// `deadline` the first slot still busy is returned; the generation is
    /// bumped either way. Returns the new generation.
    pub fn recall(
        &self,
        bucket: u32,
        deadline: Instant,
        alive: &mut dyn FnMut(usize) -> bool,
    ) -> Result<u64, Stuck> {
        let b = bucket as usize % BUCKETS;
        let new = (self.word(OFF_GENS + b * 8).fetch_add(1, SeqCst) + 1) & GEN_MASK;
        self.wait(deadline, alive, &mut |w| {
            ((w >> GEN_BITS) & 0x7fff) as usize == b && w & GEN_MASK != new
        })?;
        Ok(new)
    }

    /// Daemon: recall every map of every inode (remount read-only,
    /// shutdown, unmount).
    pub fn recall_all(
        &self,
        deadline: Instant,
        alive: &mut dyn FnMut(usize) -> bool,
    ) -> Result<(), Stuck> {
        let mut now = [0u64; BUCKETS];
        for (b, g) in now.iter_mut().enumerate() {
            *g = (self.word(OFF_GENS + b * 8).fetch_add(1, SeqCst) + 1) & GEN_MASK;
        }
        self.wait(deadline, alive, &mut |w| {
            w & GEN_MASK != now[((w >> GEN_BITS) & 0x7fff) as usize % BUCKETS]
        })
    }

    fn wait(
        &self,
        deadline: Instant,
        alive: &mut dyn FnMut(usize) -> bool,
        old: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), Stuck> {
        for i in 0..SLOTS {
            let mut spins = 0u32;
            loop {
                let w = self.slot(i).load(SeqCst);
                if w & BUSY == 0 || !old(w) {
                    break;
                }
                if !alive(i) {
                    // Only if it still holds the word we judged: the owner
                    // is gone, nothing else writes its slot.
                    let _ = self.slot(i).compare_exchange(w, 0, SeqCst, SeqCst);
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Stuck { slot: i });
                }
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else if spins < 1024 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64 as A64, Ordering};
    use std::sync::Arc;

    struct Page(Vec<u64>);
    impl Page {
        fn new() -> Page {
            Page(vec![0u64; LEN / 8])
        }
        fn control(&mut self) -> Control {
            // SAFETY: the Vec outlives every Control made in these tests and
            // is only accessed through the Control's atomics.
            unsafe { Control::from_raw(self.0.as_mut_ptr() as *mut u8, LEN).unwrap() }
        }
    }

    #[test]
    fn enter_fails_after_a_bump_and_recall_returns_at_once_when_idle() {
        let mut p = Page::new();
        let c = p.control();
        c.init(7);
        c.check(7).unwrap();
        assert_eq!(c.check(8), Err(ControlError::Magic));
        c.set_state(OPEN | WRITABLE);
        let b = bucket_of(42);
        let g = c.gen(b);
        assert!(c.enter(3, b, g));
        assert!(c.busy(3));
        c.exit(3);
        let far = Instant::now() + Duration::from_secs(5);
        let g2 = c.recall(b, far, &mut |_| true).unwrap();
        assert_eq!(g2, g + 1);
        assert!(!c.enter(3, b, g), "a stale map must not enter");
        assert!(!c.busy(3));
        assert!(c.enter(3, b, g2));
        c.exit(3);
        c.set_state(0);
        assert!(!c.enter(3, b, g2), "a closed page admits nothing");
    }

    #[test]
    fn recall_waits_for_an_access_and_clears_a_dead_owner() {
        let mut p = Page::new();
        let c = p.control();
        c.init(1);
        c.set_state(OPEN);
        let b = bucket_of(5);
        let g = c.gen(b);
        assert!(c.enter(0, b, g));
        // Another bucket's access is not waited for.
        let other = (b + 1) % BUCKETS as u32;
        assert!(c.enter(1, other, c.gen(other)));
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(c.recall(b, soon, &mut |_| true), Err(Stuck { slot: 0 }));
        // The owner of slot 0 died: cleared, not waited for.
        let g3 = c.recall(b, Instant::now() + Duration::from_secs(5), &mut |s| s != 0);
        assert_eq!(g3, Ok(g + 2));
        assert!(!c.busy(0));
        assert!(c.busy(1));
        assert_eq!(
            c.recall_all(Instant::now() + Duration::from_millis(20), &mut |_| true),
            Err(Stuck { slot: 1 })
        );
    }

    /// Many rounds of a client that copies a "block" under the protocol and
    /// a daemon that recalls, then retires the block (poisons it): the client
    /// must never see a poisoned block in an access that entered.
    #[test]
    fn no_access_overlaps_a_change_after_its_recall() {
        let mut p = Page::new();
        let c = Arc::new(p.control());
        c.init(9);
        c.set_state(OPEN | WRITABLE);
        let b = bucket_of(77);
        // The "layout": which block the inode maps (a version number) and
        // whether the previous one has been retired.
        let block = Arc::new(A64::new(1));
        let retired = Arc::new(A64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(A64::new(0));
        let lock = Arc::new(std::sync::Mutex::new(()));
        let entries = Arc::new(A64::new(0));
        let mut clients = Vec::new();
        for slot in 0..2 {
            let entries = entries.clone();
            let (c2, block, retired, stop, bad, lock) = (
                c.clone(),
                block.clone(),
                retired.clone(),
                stop.clone(),
                bad.clone(),
                lock.clone(),
            );
            clients.push(std::thread::spawn(move || {
                let mut entered = 0u64;
                // MAP: taken under the inode lock.
                let mut map = {
                    let _g = lock.lock().unwrap();
                    (c2.gen(b), block.load(Ordering::SeqCst))
                };
                while !stop.load(Ordering::SeqCst) {
                    if !c2.enter(slot, b, map.0) {
                        let _g = lock.lock().unwrap();
                        map = (c2.gen(b), block.load(Ordering::SeqCst));
                        continue;
                    }
                    entered += 1;
                    entries.fetch_add(1, Ordering::SeqCst);
                    for _ in 0..50 {
                        if retired.load(Ordering::SeqCst) >= map.1 {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    c2.exit(slot);
                }
                entered
            }));
        }
        // At least 2000 changes, and on until the clients have entered
        // 2000 times (a loaded machine may not run them at first), for 30 s
        // at most.
        let t0 = Instant::now();
        let mut rounds = 0;
        while rounds < 2000
            || (entries.load(Ordering::SeqCst) < 2000 && t0.elapsed() < Duration::from_secs(30))
        {
            {
                let _g = lock.lock().unwrap();
                c.recall(b, Instant::now() + Duration::from_secs(10), &mut |_| true)
                    .unwrap();
                let old = block.fetch_add(1, Ordering::SeqCst);
                retired.store(old, Ordering::SeqCst);
            }
            rounds += 1;
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        let entered: u64 = clients.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(entered > 0);
        assert_eq!(
            bad.load(Ordering::SeqCst),
            0,
            "an access saw a retired block"
        );
    }
}
