//! Leases in `daxlink owners`, TOUCH, and the kernel page cache beside direct stores.

use super::*;

fn leases_of(p: &Path) -> Vec<serde_json::Value> {
    let o = daxlink(&[&"owners", &p, &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v["leases"].as_array().cloned().unwrap_or_default()
}

#[test]
fn leases_show_in_owners_and_go_at_close() {
    let img = Image::new("direct-leases", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", &pattern(4, BS));
    let f = rw(&p);
    assert!(leases_of(&p).is_empty());
    let r = map(&f, 0, true).unwrap();
    let l = leases_of(&p);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["pid"], std::process::id());
    assert_eq!(l[0]["id"], r.lease);
    assert_eq!(l[0]["write"], true);
    // The text form names the holder too.
    let o = daxlink(&[&"owners", &p]);
    assert!(
        o.stdout
            .contains(&format!("pid {} write", std::process::id())),
        "{}",
        o.stdout
    );
    // A second MAP through the same open file replaces its lease.
    let r2 = map(&f, 0, false).unwrap();
    let l = leases_of(&p);
    assert_eq!((l.len(), l[0]["id"].as_u64()), (1, Some(r2.lease)));
    drop(f);
    // RELEASE is asynchronous: wait for it.
    let t0 = Instant::now();
    while !leases_of(&p).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "lease outlived its open file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    m.unmount();
}

#[test]
fn touch_sets_mtime_at_once() {
    let img = Image::new("direct-touch", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", &pattern(5, BS));
    let before = std::fs::metadata(&p).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let f = rw(&p);
    touch(&f).unwrap();
    let after = std::fs::metadata(&p).unwrap();
    let t = |m: &std::fs::Metadata| (m.mtime(), m.mtime_nsec());
    assert!(t(&after) > t(&before), "stat shows the old mtime");
    assert!((after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()));
    // Kept across a remount (written lazily, at the latest at unmount).
    drop(f);
    let m = m.cycle("");
    let again = std::fs::metadata(m.path("f")).unwrap();
    assert_eq!(t(&again), t(&after));
    m.unmount();
}

#[test]
fn a_kernel_reader_sees_a_direct_store_at_once() {
    let img = Image::new("direct-coherent", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", &pattern(6, 2 * BS));
    let f = rw(&p);
    let c = Client::connect(&f);
    // A reader opened before the lease; the kernel caches its pages
    // (cache=keep). While it is open, no writable map is granted: a direct
    // store would leave its cached pages stale.
    let early = File::open(&p).unwrap();
    let mut b = vec![0u8; 2 * BS];
    early.read_exact_at(&mut b, 0).unwrap();
    let r = map(&f, 0, true).unwrap();
    assert!(
        r.flags & wire::MAP_WRITE == 0 && r.extents.iter().all(|e| e.flags & wire::EXT_WRITE == 0),
        "a writable map beside a cached open: {r:?}"
    );
    drop(early);
    // Once it is closed, the first writable lease drops what the kernel
    // cached, and a reader opened now sees a direct store at once. The
    // kernel sends RELEASE after close returns (asynchronously): the map
    // is writable once the daemon has it (under load that took longer
    // than the next MAP).
    let t0 = Instant::now();
    let r = loop {
        let r = map(&f, 0, true).unwrap();
        if r.extents[0].flags & wire::EXT_WRITE != 0 || t0.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let e = r.extents[0];
    assert!(e.flags & wire::EXT_WRITE != 0, "{r:?}");
    let store = |data: &[u8]| {
        assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
        c.store(e.pblock, data);
        c.ctl.exit(c.slot);
    };
    let one = pattern(7, BS);
    store(&one);
    let mut seen = vec![0u8; BS];
    let late = File::open(&p).unwrap();
    late.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(
        seen, one,
        "a reader opened after the lease read a stale page"
    );
    // Kernel-path opens now bypass the page cache (FOPEN_DIRECT_IO): what
    // they read is not served again from the cache after the next store.
    File::open(&p).unwrap().read_exact(&mut seen).unwrap();
    assert_eq!(seen, one);
    let two = pattern(8, BS);
    store(&two);
    File::open(&p).unwrap().read_exact(&mut seen).unwrap();
    assert_eq!(seen, two, "a kernel-path open read a stale page");
    drop((c, f, late));
    m.unmount();
    fsck_clean(&img.path);
}
