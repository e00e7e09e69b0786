//! Unit tests of the media layer.

use super::*;

#[test]
fn bounds_are_checked() {
    let m = Media::anonymous(8192).unwrap();
    assert!(m.write_at(8190, &[1, 2, 3]).is_err());
    assert!(m.read_vec(u64::MAX - 1, 4).is_err());
    m.write_persist(100, b"hello").unwrap();
    assert_eq!(m.read_vec(100, 5).unwrap(), b"hello");
}

#[test]
fn device_stores_wait_for_in_place_readers() {
    let m = Media::anonymous(8192).unwrap();
    m.write_at(4096, b"before").unwrap();
    assert!(m.device_write(8190, b"xyz").is_err());
    std::thread::scope(|s| {
        // SAFETY: nothing in this test stores into 4096..4102 except
        // through `device_write`, which the call excludes.
        let seen = unsafe {
            m.read_in_place(4096, 6, |b| {
                let first = b.to_vec();
                let dma = s.spawn(|| m.device_write(4096, b"device").unwrap());
                std::thread::sleep(std::time::Duration::from_millis(200));
                // The device store has not landed under the reference.
                (first, b.to_vec(), dma)
            })
        }
        .unwrap();
        assert_eq!(seen.0, b"before");
        assert_eq!(seen.1, b"before");
        seen.2.join().unwrap();
    });
    assert_eq!(m.read_vec(4096, 6).unwrap(), b"device");
    // SAFETY: as above.
    assert!(unsafe { m.read_in_place(8190, 3, |_| ()) }.is_err());
}

#[test]
fn nothing_reaches_shut_down_media() {
    let m = Media::anonymous(8192).unwrap();
    m.write_persist(0, b"before").unwrap();
    m.shut_down();
    assert!(matches!(
        m.write_at(0, b"after!"),
        Err(MediaError::ShutDown)
    ));
    assert!(matches!(m.fill(0, 6, 0), Err(MediaError::ShutDown)));
    assert!(matches!(m.flush(0, 6), Err(MediaError::ShutDown)));
    m.fence();
    assert_eq!(m.read_vec(0, 6).unwrap(), b"before");
    assert!(m.is_shut_down());
}

#[test]
fn cpu_flush_runs_on_this_cpu() {
    // An image in memory: CPU flushes are its persist mode.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let p = dir.path().join("img");
    std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
    let m = Media::open(&p, None, false).unwrap();
    assert_eq!(m.persist_mode(), PersistMode::Cpu);
    m.write_persist(4000, &[7u8; 300]).unwrap();
    assert_eq!(m.read_vec(4000, 300).unwrap(), vec![7u8; 300]);
}

#[test]
fn persist_mode_follows_the_media() {
    // A file on the disk filesystem of the build tree: without MAP_SYNC
    // only msync makes stores durable, and persist=cpu is refused.
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let p = dir.path().join("img");
    std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    assert!(
        !on_ram(&f),
        "the build tree is expected on a disk filesystem"
    );
    drop(f);
    let m = Media::open(&p, None, false).unwrap();
    assert_eq!(m.persist_mode(), PersistMode::Msync);
    drop(m);
    match Media::open(&p, Some(PersistMode::Cpu), false) {
        Err(MediaError::CannotPersist(e)) => assert!(e.contains("persist=msync"), "{e}"),
        other => panic!(
            "persist=cpu on a disk file: {:?}",
            other.map(|m| m.persist_mode())
        ),
    }
    // Read-only, any mode is fine (nothing is stored).
    Media::open(&p, Some(PersistMode::Cpu), true).unwrap();
}

#[test]
fn one_writer_or_many_readers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
    let w = Media::open(&p, Some(PersistMode::Msync), false).unwrap();
    // flock is per open file: a second open in this process conflicts too.
    for ro in [false, true] {
        match Media::open(&p, Some(PersistMode::Msync), ro) {
            Err(MediaError::Busy(m)) => {
                assert!(m.contains(&format!("pid {}", std::process::id())), "{m}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("second open (ro={ro}) of a writer-locked image succeeded"),
        }
    }
    drop(w);
    let r1 = Media::open(&p, Some(PersistMode::Msync), true).unwrap();
    let r2 = Media::open(&p, Some(PersistMode::Msync), true).unwrap();
    assert!(matches!(
        Media::open(&p, Some(PersistMode::Msync), false),
        Err(MediaError::Busy(_))
    ));
    drop((r1, r2));
    Media::open(&p, Some(PersistMode::Msync), false).unwrap();
}

#[test]
fn roots_lock_is_a_file_of_its_own() {
    if !nix::unistd::geteuid().is_root() {
        return; // the image's own flock, as above
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let p = dir.path().join("img");
    std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
    let md = std::fs::metadata(&p).unwrap();
    let w = Media::open(&p, None, false).unwrap();
    let lf = std::path::Path::new(LOCK_DIR).join(format!(
        "image-{}:{}-{}",
        libc::major(md.dev()),
        libc::minor(md.dev()),
        md.ino()
    ));
    let lmd = std::fs::symlink_metadata(&lf).unwrap();
    assert_eq!(lmd.mode() & 0o7777, 0o600);
    let dmd = std::fs::symlink_metadata(LOCK_DIR).unwrap();
    assert_eq!((dmd.uid(), dmd.mode() & 0o7777), (0, 0o700));
    // Held there: a flock of the lock file by anyone else fails.
    let other = std::fs::File::open(&lf).unwrap();
    assert!(other.try_lock_shared().is_err());
    drop(w);
    other.try_lock().unwrap();
    assert!(matches!(
        Media::open(&p, None, true),
        Err(MediaError::Busy(_))
    ));
}
