//! Core tests of the page model (no FUSE): random interleavings keep
//! invariants 1-7 in the proxy model, and the legacy model breaks what the
//! proxy model keeps.

use super::tests::{fresh_model, C};
use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum POp {
    Write(usize, u64, u16, u8),
    Pin(usize, u64, u64, bool),
    Unpin(usize),
    Dma(usize, u8),
    Clone(usize, usize),
    Truncate(usize, u64),
    Punch(usize, u64, u64),
    Fsync(usize),
    Remount,
}

fn pop() -> impl Strategy<Value = POp> {
    let f = 0usize..3;
    prop_oneof![
        3 => (f.clone(), 0u64..20_000, 1u16..9000, any::<u8>()).prop_map(|(i, o, l, b)| POp::Write(i, o, l, b)),
        3 => (f.clone(), 0u64..5, 1u64..3, any::<bool>()).prop_map(|(i, o, l, w)| POp::Pin(i, o, l, w)),
        2 => (0usize..8).prop_map(POp::Unpin),
        3 => (0usize..8, any::<u8>()).prop_map(|(i, b)| POp::Dma(i, b)),
        2 => (f.clone(), f.clone()).prop_map(|(a, b)| POp::Clone(a, b)),
        2 => (f.clone(), 0u64..20_000).prop_map(|(i, s)| POp::Truncate(i, s)),
        1 => (f.clone(), 0u64..20_000, 1u64..10_000).prop_map(|(i, o, l)| POp::Punch(i, o, l)),
        1 => f.clone().prop_map(POp::Fsync),
        1 => Just(POp::Remount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn proxy_model_keeps_invariants(ops in prop::collection::vec(pop(), 1..40)) {
        let model = crate::pages::PageModel::Proxy;
        let mut fs = fresh_model(2048, model);
        let free0 = fs.free_blocks();
        let names = [b"f0".as_slice(), b"f1", b"f2"];
        let inos: Vec<u64> = names
            .iter()
            .map(|n| fs.mknod(ROOT_INO, n, libc::S_IFREG | 0o644, 0, C).unwrap().ino)
            .collect();
        // Live pins: (pin id, file index, write).
        let mut pins: Vec<(u64, usize, bool)> = Vec::new();
        let mut holder = 1000u64;
        for op in ops {
            match op {
                POp::Write(i, off, len, b) => {
                    fs.write(inos[i], off, &vec![b; len as usize], false).unwrap();
                }
                POp::Pin(i, pg, n, w) => {
                    holder += 1;
                    match fs.pin(inos[i], holder, pg * BS, n * BS, w, true) {
                        Ok(id) => pins.push((id, i, w)),
                        Err(e) => prop_assert_eq!(e, FsError::Invalid, "pin beyond EOF only"),
                    }
                }
                POp::Unpin(k) => {
                    if !pins.is_empty() {
                        let (id, _, _) = pins.remove(k % pins.len());
                        fs.unpin(id).unwrap();
                    }
                }
                POp::Dma(k, b) => {
                    if !pins.is_empty() {
                        let (id, _, w) = pins[k % pins.len()];
                        let r = fs.dma_write(id, 0, &[b; 64]);
                        prop_assert_eq!(r.is_ok(), w, "{:?}", r);
                    }
                }
                POp::Clone(a, b) => {
                    let _ = fs.clone_range(inos[a], 0, inos[b], 0, 0);
                }
                POp::Truncate(i, s) => fs.truncate(inos[i], s).map(|_| ()).unwrap(),
                POp::Punch(i, o, l) => fs
                    .fallocate(inos[i], o, l, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .unwrap(),
                POp::Fsync(i) => fs.fsync(inos[i]).unwrap(),
                POp::Remount => {
                    // Pins vanish with the daemon; deferred blocks come back at mount.
                    pins.clear();
                    fs.unmount().unwrap();
                    let Fs { media, .. } = fs;
                    let media = Arc::try_unwrap(media).ok().unwrap();
                    fs = Fs::mount(media, FsOptions { page_model: model, ..FsOptions::default() }).unwrap();
                }
            }
            let v = fs.check_invariants();
            prop_assert!(v.is_empty(), "invariants {:?} broken after {:?}", v, pins);
            // Invariant 1 directly: no pinned block is free or mapped by a file
            // other than the pinned one (or those sharing it at pin time).
            for p in fs.pages.pins() {
                for b in p.blocks() {
                    prop_assert!(fs.meta.lock().space.is_used(b));
                }
            }
        }
        for (id, _, _) in pins.drain(..) {
            fs.unpin(id).unwrap();
        }
        for n in names { fs.unlink(ROOT_INO, n).unwrap(); }
        prop_assert!(fs.free_blocks() + 8 >= free0, "{} of {}", fs.free_blocks(), free0);
    }
}

#[test]
fn legacy_model_breaks_what_proxy_keeps() {
    use crate::pages::PageModel;
    for model in [PageModel::Legacy, PageModel::Upstream, PageModel::Proxy] {
        let fs = fresh_model(1024, model);
        let a = fs
            .mknod(ROOT_INO, b"a", libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(a, 0, &[b'a'; 4096], false).unwrap();
        let id = fs.pin(a, 7, 0, 4096, true, false).unwrap();
        let r = fs.truncate(a, 0);
        let c = fs
            .mknod(ROOT_INO, b"c", libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(c, 0, &[b'c'; 4096], false).unwrap();
        fs.dma_write(id, 0, b"XXXX").unwrap();
        let v = fs.check_invariants();
        match model {
            PageModel::Legacy => {
                assert!(r.is_ok());
                assert_eq!(&fs.read(c, 0, 4).unwrap(), b"XXXX");
                assert!(v.contains(&1) && v.contains(&2), "{v:?}");
            }
            PageModel::Upstream => {
                assert_eq!(r.unwrap_err(), FsError::Busy);
                assert_eq!(&fs.read(c, 0, 4).unwrap(), b"cccc");
                assert!(v.is_empty(), "{v:?}");
            }
            PageModel::Proxy => {
                assert!(r.is_ok());
                assert_eq!(&fs.read(c, 0, 4).unwrap(), b"cccc");
                assert!(v.is_empty(), "{v:?}");
                let free = fs.free_blocks();
                fs.unpin(id).unwrap();
                // The deferred block, and the block of its orphan record,
                // which that record was the last one in.
                assert_eq!(fs.free_blocks(), free + 2, "deferred block freed at unpin");
            }
        }
    }
}
