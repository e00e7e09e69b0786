//! The page model through real mounts: the demo, poison with three owners,
//! a pinned then truncated block, pin argument errors, and the kernel's page
//! cache after a device write.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::*;
use daxlink::tools::client;

const BS: u64 = 4096;

fn errno<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn demo_shows_legacy_breaking_upstream_blocking_proxy_safe() {
    let out = daxlink(&[&"demo", &"--page-model", &"all", &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 27);
    let count = |model: &str, outcome: &str| {
        res.iter()
            .filter(|r| r["model"] == model && r["outcome"] == outcome)
            .count()
    };
    assert!(count("legacy", "corrupted") >= 6);
    assert_eq!(count("upstream", "corrupted"), 0);
    assert_eq!(count("proxy", "safe"), 9);
    // Upstream blocks where Linux waits (break_layouts) and refuses long-term pins.
    let get = |s: &str, m: &str| {
        res.iter()
            .find(|r| r["scenario"] == s && r["model"] == m)
            .unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(get("S1", "upstream"), "blocked");
    assert_eq!(get("S9", "upstream"), "refused");
    // The table form a reader sees.
    let out = daxlink(&[&"demo", &"--page-model", &"proxy"]);
    let t = out.stdout;
    assert!(
        t.contains("S9") && t.contains("safe in all nine: yes"),
        "{t}"
    );
}

#[test]
fn poison_of_a_block_with_three_owners() {
    for (model, expect_eio) in [("proxy", 3), ("upstream", 3), ("legacy", 1)] {
        let img = Image::new(&format!("poison-{model}"), 32 << 20);
        let m = Mounted::new(&img.path, &format!("page_model={model}"));
        fs::write(m.path("a"), vec![b'a'; 8192]).unwrap();
        client::reflink(&m.path("a"), &m.path("b"), 0, 0, 0).unwrap();
        client::reflink(&m.path("a"), &m.path("c"), 0, 0, 0).unwrap();
        // Cache b's pages in the kernel first: poison must drop them.
        assert_eq!(fs::read(m.path("b")).unwrap(), vec![b'a'; 8192]);
        daxlink(&[&"poison", &"--offset", &"4096", &m.path("b")]);
        let eio = ["a", "b", "c"]
            .iter()
            .filter(|n| errno(fs::read(m.path(n))) == libc::EIO)
            .count();
        assert_eq!(eio, expect_eio, "{model}");
        // The other block of each file is fine.
        let mut buf = vec![0u8; 4096];
        File::open(m.path("c"))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert_eq!(buf, vec![b'a'; 4096]);
        // owners lists all three (legacy: only page->mapping).
        let o = client::owners(&m.path("a"), 4096).unwrap();
        let n = o["owners"].as_array().unwrap().len();
        assert_eq!(n, if model == "legacy" { 1 } else { 3 }, "{o}");
        assert_eq!(o["poisoned"], true);
    }
}

#[test]
fn pinned_truncated_block_is_not_reused_and_is_reclaimed_after_remount() {
    let img = Image::new("pintrunc", 32 << 20);
    let mut m = Mounted::new(&img.path, "page_model=proxy");
    fs::write(m.path("a"), vec![b'a'; BS as usize]).unwrap();
    let p = client::extents(&m.path("a")).unwrap()[0].physical;
    let s0 = client::stat(m.root()).unwrap();
    let free0 = s0.free_bytes + s0.metadata_bytes;
    {
        let fa = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path("a"))
            .unwrap();
        let h = client::pin(&fa, 0, BS, true, false).unwrap();
        let o = client::owners(&m.path("a"), 0).unwrap();
        assert_eq!(o["pins"][0]["id"], h);
        fa.set_len(0).unwrap();
        // The block stays allocated while pinned: no space comes back ...
        let s1 = client::stat(m.root()).unwrap();
        assert_eq!(s1.free_bytes + s1.metadata_bytes, free0);
        // ... and new files never get it.
        for i in 0..20 {
            fs::write(m.path(&format!("c{i}")), vec![b'c'; BS as usize]).unwrap();
            let e = client::extents(&m.path(&format!("c{i}"))).unwrap();
            assert!(
                e.iter().all(|x| x.physical != p),
                "block {p} reused while pinned"
            );
        }
        client::dma_write(&fa, h, 0, b"DEVICE").unwrap();
        for i in 0..20 {
            assert_eq!(
                fs::read(m.path(&format!("c{i}"))).unwrap(),
                vec![b'c'; BS as usize]
            );
        }
        // Crash with the pin held: kill the daemon, then mount again.
        m.kill();
    }
    let m = Mounted::new(&img.path, "page_model=proxy");
    for i in 0..20 {
        fs::remove_file(m.path(&format!("c{i}"))).unwrap();
    }
    // Everything came back: the deferred block was reclaimed at mount.
    let s = client::stat(m.root()).unwrap();
    assert_eq!(s.free_bytes + s.metadata_bytes, free0 + BS);
    m.cycle("");
}

#[test]
fn pin_errors_and_release() {
    let img = Image::new("pinerr", 32 << 20);
    let m = Mounted::new(&img.path, "page_model=upstream,layout_timeout_ms=100");
    fs::write(m.path("a"), vec![1u8; 3 * BS as usize]).unwrap();
    let ro = File::open(m.path("a")).unwrap();
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("a"))
        .unwrap();
    // Beyond EOF, zero length: EINVAL. A write pin on a read-only fd: EBADF.
    assert_eq!(
        errno(client::pin(&rw, 2 * BS, 2 * BS, false, false)),
        libc::EINVAL
    );
    assert_eq!(errno(client::pin(&rw, 0, 0, false, false)), libc::EINVAL);
    assert_eq!(errno(client::pin(&ro, 0, BS, true, false)), libc::EBADF);
    // Too many pages at once: ENOMEM (checked before the size).
    assert_eq!(
        errno(client::pin(&rw, 0, 1 << 30, false, false)),
        libc::ENOMEM
    );
    // upstream refuses long-term pins, and pins through a descriptor not
    // open for writing (they would be long-term pins of a mere reader).
    assert_eq!(errno(client::pin(&rw, 0, BS, true, true)), libc::EOPNOTSUPP);
    assert_eq!(
        errno(client::pin(&ro, 0, BS, false, false)),
        libc::EOPNOTSUPP
    );
    let pinner = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("a"))
        .unwrap();
    let h = client::pin(&pinner, 0, BS, false, false).unwrap();
    // Device writes through a read pin are refused.
    assert_eq!(errno(client::dma_write(&pinner, h, 0, b"x")), libc::EPERM);
    // Beyond the pinned range.
    assert_eq!(errno(client::dma_read(&pinner, h, BS, 1)), libc::EINVAL);
    // Unknown pin; a pin of another open file.
    assert_eq!(errno(client::unpin(&ro, 9999)), libc::EINVAL);
    assert_eq!(errno(client::unpin(&rw, h)), libc::EPERM);
    // Truncate waits for the pin, then EBUSY.
    let t0 = Instant::now();
    assert_eq!(errno(rw.set_len(0)), libc::EBUSY);
    assert!(t0.elapsed() >= Duration::from_millis(90));
    // Closing the pinning file ends the pin: the truncate goes through.
    drop(pinner);
    drop(ro);
    let t0 = Instant::now();
    loop {
        match rw.set_len(0) {
            Ok(()) => break,
            Err(_) if t0.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("pin not released at close: {e}"),
        }
    }
    drop(rw);
    m.cycle("");
}

#[test]
fn device_writes_are_not_hidden_by_the_page_cache() {
    let img = Image::new("pcache", 32 << 20);
    let m = Mounted::new(&img.path, "");
    fs::write(m.path("a"), vec![b'a'; BS as usize]).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("a"))
        .unwrap();
    let mut buf = vec![0u8; 16];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"aaaaaaaaaaaaaaaa");
    let h = client::pin(&f, 0, BS, true, false).unwrap();
    client::dma_write(&f, h, 0, b"0123456789abcdef").unwrap();
    // The same open file, its pages cached before: the device's bytes show.
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"0123456789abcdef");
    assert_eq!(
        &client::dma_read(&f, h, 0, 16).unwrap(),
        b"0123456789abcdef"
    );
    // fsync makes them durable; after a remount they are there.
    f.sync_all().unwrap();
    client::unpin(&f, h).unwrap();
    drop(f);
    let m = m.cycle("");
    assert_eq!(&fs::read(m.path("a")).unwrap()[..16], b"0123456789abcdef");
}
