//! No-wait mode (`nowait.rs`): with a lock held by another thread, every
//! operation the io_uring ring threads serve fails with WouldBlock and
//! changes nothing; the same operations on free locks succeed.

use super::tests::{fresh, C};
use super::*;
use std::sync::mpsc;

/// Run `f` while another thread holds what `hold` takes (until `f` ends).
fn while_held<'a, G>(hold: impl FnOnce() -> G + Send + 'a, f: impl FnOnce()) {
    let (held_tx, held_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let g = hold();
            held_tx.send(()).unwrap();
            let _ = done_rx.recv();
            drop(g);
        });
        // Owned here: a panic in `f` drops it, which releases the holder.
        let done_tx = done_tx;
        held_rx.recv().unwrap();
        f();
        done_tx.send(()).unwrap();
    });
}

fn blocked<T: std::fmt::Debug>(r: (FsResult<T>, bool)) {
    assert!(
        matches!(r, (Err(FsError::WouldBlock), true)),
        "expected WouldBlock: {r:?}"
    );
}

#[test]
fn busy_locks_fail_no_wait_requests_before_any_change() {
    let fs = fresh(4096);
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let b = fs
        .mknod(ROOT_INO, b"b", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(a.ino, 0, &[1; 8192], false).unwrap();
    fs.write(b.ino, 0, &[2; 8192], false).unwrap();
    let fh = fs.open(a.ino).unwrap();
    let open_of = |ino| fs.get(ino).unwrap().read().unwrap().open;
    let before = fs.getattr(a.ino).unwrap();
    let free = fs.free_blocks();
    // Inode a held (as a long punch or clone holds it).
    let node = fs.get(a.ino).unwrap();
    while_held(
        || node.write().unwrap(),
        || {
            blocked(no_wait(|| fs.read(a.ino, 0, 4096)));
            blocked(no_wait(|| fs.write(a.ino, 0, &[9; 4096], false)));
            blocked(no_wait(|| fs.write(a.ino, 8192, &[9; 4096], false)));
            blocked(no_wait(|| fs.getattr(a.ino)));
            blocked(no_wait(|| fs.lookup(ROOT_INO, b"a")));
            blocked(no_wait(|| fs.open(a.ino)));
            blocked(no_wait(|| fs.close(a.ino)));
            blocked(no_wait(|| fs.unlink(ROOT_INO, b"a")));
            // Another inode is served at once.
            assert_eq!(no_wait(|| fs.read(b.ino, 0, 2)), (Ok(vec![2, 2]), false));
            assert_eq!(
                no_wait(|| fs.write(b.ino, 8192, &[3; 10], false)),
                (Ok(10), false)
            );
        },
    );
    // Nothing of a changed: data, size, times, open count, name, space
    // (b's append took one block).
    assert_eq!(fs.read(a.ino, 0, 20000).unwrap(), vec![1; 8192]);
    assert_eq!(fs.getattr(a.ino).unwrap(), before);
    assert_eq!(open_of(a.ino), 1);
    assert_eq!(fs.lookup(ROOT_INO, b"a").unwrap().ino, a.ino);
    assert_eq!(fs.free_blocks(), free - 1);
    assert_eq!(fs.getattr(b.ino).unwrap().size, 8202);
    // The namespace held (as a rename holds it): names wait, data does not.
    while_held(
        || fs.ns.write(),
        || {
            blocked(no_wait(|| fs.lookup(ROOT_INO, b"b")));
            blocked(no_wait(|| fs.mknod(ROOT_INO, b"c", libc::S_IFREG, 0, C)));
            blocked(no_wait(|| fs.unlink(ROOT_INO, b"b")));
            assert_eq!(
                no_wait(|| fs.getattr(b.ino).map(|a| a.ino)),
                (Ok(b.ino), false)
            );
            assert_eq!(no_wait(|| fs.read(b.ino, 0, 1)), (Ok(vec![2]), false));
        },
    );
    assert_eq!(fs.lookup(ROOT_INO, b"c").err(), Some(FsError::NotFound));
    assert_eq!(fs.lookup(ROOT_INO, b"b").unwrap().ino, b.ino);
    // `meta` held (a transaction): a write that allocates fails before
    // reserving, an overwrite of private blocks too (it classifies them
    // under `meta`); reads and attributes go on.
    let free = fs.free_blocks();
    while_held(
        || fs.meta.lock(),
        || {
            blocked(no_wait(|| fs.write(b.ino, 1 << 20, &[4; 10], false)));
            blocked(no_wait(|| fs.write(b.ino, 0, &[4; 10], false)));
            assert_eq!(no_wait(|| fs.read(b.ino, 0, 1)), (Ok(vec![2]), false));
            assert_eq!(
                no_wait(|| fs.getattr(b.ino).map(|a| a.ino)),
                (Ok(b.ino), false)
            );
        },
    );
    assert_eq!(fs.free_blocks(), free);
    assert_eq!(fs.getattr(b.ino).unwrap().size, 8202);
    assert_eq!(fs.read(b.ino, 0, 1).unwrap(), vec![2]);
    // Free again: the same requests succeed in no-wait mode.
    assert_eq!(
        no_wait(|| fs.write(a.ino, 0, &[5; 2], false)),
        (Ok(2), false)
    );
    assert_eq!(no_wait(|| fs.close(a.ino)), (Ok(()), false));
    assert_eq!(no_wait(|| fs.unlink(ROOT_INO, b"a")), (Ok(()), false));
    let _ = fh;
}

/// A read that updates the access time (strictatime) takes the write lock
/// for it: with another reader in, a no-wait read fails and leaves the
/// time alone (it used to skip the update and read on); free, it updates
/// the time and reads under the downgraded lock.
#[test]
fn a_no_wait_read_that_must_set_the_atime_fails_while_another_reader_is_in() {
    let m = Media::anonymous(4096 * BS).unwrap();
    crate::fs::make::mkfs(&m, &crate::fs::make::MkfsOptions::default()).unwrap();
    let opts = FsOptions {
        atime: AtimeMode::Strict,
        ..FsOptions::default()
    };
    let fs = Fs::mount(m, opts).unwrap();
    let a = fs
        .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(a.ino, 0, &[1; 100], false).unwrap();
    let before = fs.getattr(a.ino).unwrap().atime;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let node = fs.get(a.ino).unwrap();
    while_held(
        || node.read().unwrap(),
        || {
            blocked(no_wait(|| fs.read(a.ino, 0, 10)));
            // A getattr shares the lock.
            assert_eq!(
                no_wait(|| fs.getattr(a.ino).map(|x| x.atime)),
                (Ok(before), false)
            );
        },
    );
    assert_eq!(fs.getattr(a.ino).unwrap().atime, before);
    assert_eq!(no_wait(|| fs.read(a.ino, 0, 2)), (Ok(vec![1, 1]), false));
    assert!(fs.getattr(a.ino).unwrap().atime > before);
}
