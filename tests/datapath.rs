//! The fast data paths, seen from outside: an overwrite in place keeps its
//! new times in DRAM until fsync, unmount or the file's next metadata change
//! (a crash may lose them, never the data); reads straight from the mapping
//! return the right bytes across holes and extent boundaries; pages the
//! kernel keeps cached between opens never hide a change the daemon made
//! (reflink, unshare) or one made through another open. Where a right
//! result alone cannot tell that a path ran (the direct read, pages kept
//! across opens, set-ID bits cleared by the daemon), the daemon's counters
//! (SNAPSHOT ioctl) say which one did.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn mtime_ns(p: &Path) -> i128 {
    let m = fs::metadata(p).unwrap();
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// Write `len` bytes of `pattern(seed)` over the start of `p`, in place.
fn overwrite(p: &Path, seed: u64, len: usize) -> fs::File {
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(&pattern(seed, len), 0).unwrap();
    f
}

#[test]
fn overwrite_in_place_keeps_times_lazily_and_data_durably() {
    let img = Image::new("lazy", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let f = m.path("f");
    fs::write(&f, pattern(1, 64 << 10)).unwrap();
    // A committed change: the file's times are on media now.
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .sync_all()
        .unwrap();
    let committed = mtime_ns(&f);
    std::thread::sleep(Duration::from_millis(20));

    // 1. Overwrite in place, then crash: the data is there, the new mtime
    //    (visible before the crash) is not.
    drop(overwrite(&f, 2, 8192));
    let lazy = mtime_ns(&f);
    assert!(lazy > committed, "the overwrite changed mtime in DRAM");
    let mut m = m;
    m.kill();
    let m = Mounted::new(&img.path, "");
    let mut want = pattern(2, 8192);
    want.extend_from_slice(&pattern(1, 64 << 10)[8192..]);
    assert_eq!(fs::read(m.path("f")).unwrap(), want, "data after the crash");
    assert_eq!(
        mtime_ns(&m.path("f")),
        committed,
        "a crash loses the lazy mtime of an overwrite in place (and only that)"
    );

    // 2. Overwrite, fsync, crash: the new mtime is durable.
    std::thread::sleep(Duration::from_millis(20));
    let h = overwrite(&m.path("f"), 3, 4096);
    h.sync_all().unwrap();
    let synced = mtime_ns(&m.path("f"));
    assert!(synced > committed);
    drop(h);
    let mut m = m;
    m.kill();
    let m = Mounted::new(&img.path, "");
    assert_eq!(
        mtime_ns(&m.path("f")),
        synced,
        "fsync makes the times durable"
    );

    // 3. Overwrite, clean unmount: unmount writes pending times.
    std::thread::sleep(Duration::from_millis(20));
    drop(overwrite(&m.path("f"), 4, 4096));
    let before_unmount = mtime_ns(&m.path("f"));
    let m = m.cycle("");
    assert_eq!(mtime_ns(&m.path("f")), before_unmount);

    // 4. Overwrite, then a metadata change of the file (chmod) commits the
    //    times with it.
    std::thread::sleep(Duration::from_millis(20));
    drop(overwrite(&m.path("f"), 5, 4096));
    let t = mtime_ns(&m.path("f"));
    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut m = m;
    m.kill();
    let m = Mounted::new(&img.path, "");
    assert_eq!(
        mtime_ns(&m.path("f")),
        t,
        "the chmod's transaction wrote it"
    );
    m.unmount();
    fsck_clean(&img.path);
}

/// (direct, buffered) reads the daemon has answered since mount: which
/// path each took (the SNAPSHOT ioctl's counters).
fn read_counts(m: &Mounted) -> (u64, u64) {
    let s = daxlink::tools::client::snapshot(m.root(), &[]).unwrap();
    let c = &s["counters"];
    (
        c["reads_direct"].as_u64().unwrap(),
        c["reads_buffered"].as_u64().unwrap(),
    )
}

#[test]
fn reads_cross_holes_and_extents() {
    let img = Image::new("reads", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = m.path("sparse");
    let f = fs::File::create(&p).unwrap();
    // Blocks 0-1 data, 2-3 hole, 4 data (separate extent), then a tail.
    f.write_all_at(&pattern(7, 8192), 0).unwrap();
    f.write_all_at(&pattern(8, 4096), 4 * 4096).unwrap();
    f.write_all_at(&pattern(9, 100), 5 * 4096 + 7).unwrap();
    drop(f);
    let mut want = pattern(7, 8192);
    want.resize(4 * 4096, 0);
    want.extend_from_slice(&pattern(8, 4096));
    want.resize(5 * 4096 + 7, 0);
    want.extend_from_slice(&pattern(9, 100));
    // O_DIRECT: each read below reaches the daemon as it is, one request,
    // and the counters say which path answered it. Inside one mapped run
    // the reply comes straight from the mapping; across a hole or an
    // extent boundary through a buffer.
    let g = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .unwrap();
    let (mut direct, mut buffered) = (0, 0);
    for (off, len, from_mapping) in [
        (0u64, 8192usize, true),
        (100, 5000, true),
        (4 * 4096 + 10, 100, true),
        (5 * 4096, 200, true),
        (want.len() as u64 - 5, 100, true),
        (0, want.len(), false),
        (8000, 9000, false),
        (4 * 4096 - 10, 30, false),
        (3 * 4096, 4096, false),
    ] {
        let before = read_counts(&m);
        let mut buf = vec![0xAAu8; len];
        let n = g.read_at(&mut buf, off).unwrap();
        let end = (off as usize + len).min(want.len());
        assert_eq!(n, end - off as usize, "read of {len} at {off}");
        assert_eq!(
            &buf[..n],
            &want[off as usize..end],
            "read of {len} at {off}"
        );
        let after = read_counts(&m);
        let took = if from_mapping {
            (before.0 + 1, before.1)
        } else {
            (before.0, before.1 + 1)
        };
        assert_eq!(after, took, "read of {len} at {off}: (direct, buffered)");
        direct += from_mapping as u32;
        buffered += !from_mapping as u32;
    }
    assert!(direct > 0 && buffered > 0);
    drop(g);
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn cached_pages_never_hide_a_reflink_or_another_open() {
    let img = Image::new("cache", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let reads = |m: &Mounted| {
        let (d, b) = read_counts(m);
        d + b
    };
    let (src, dst) = (m.path("src"), m.path("dst"));
    fs::write(&src, pattern(11, 3 * 4096)).unwrap();
    fs::write(&dst, pattern(12, 3 * 4096)).unwrap();
    // Cache dst's pages. (This first read updates the access time, so its
    // open drops the cache and the read reaches the daemon.)
    assert_eq!(fs::read(&dst).unwrap(), pattern(12, 3 * 4096));
    // cache=keep: the next open keeps them, and its read never reaches the
    // daemon (cache=open would drop them at the open).
    let before = reads(&m);
    assert_eq!(fs::read(&dst).unwrap(), pattern(12, 3 * 4096));
    assert_eq!(
        reads(&m),
        before,
        "the kernel kept dst's pages across opens"
    );
    // The daemon replaces dst's blocks behind the kernel: it must drop them.
    daxlink(&[&"reflink", &src, &dst]);
    let before = reads(&m);
    assert_eq!(
        fs::read(&dst).unwrap(),
        pattern(11, 3 * 4096),
        "after reflink"
    );
    assert!(
        reads(&m) > before,
        "the read after the reflink reached the daemon"
    );
    // A write through one open is seen by the next open's read.
    let w = fs::OpenOptions::new().write(true).open(&dst).unwrap();
    w.write_all_at(b"through another open", 100).unwrap();
    drop(w);
    let got = fs::read(&dst).unwrap();
    assert_eq!(&got[100..120], b"through another open");
    // The source is untouched by the copy-on-write.
    assert_eq!(fs::read(&src).unwrap(), pattern(11, 3 * 4096));
    m.unmount();
    fsck_clean(&img.path);
}

/// Set-ID bits after writes, truncates and chowns by the owner and by root,
/// on one filesystem: `name mode` lines. Under FUSE_HANDLE_KILLPRIV_V2 the
/// daemon decides these (the kernel tells it only about writes).
fn setid_story(root: &Path) -> Vec<String> {
    let modes = ["4755", "2755", "2745", "6777", "4744", "0755"];
    let ops = [
        "w_owner",
        "w_root",
        "t_owner",
        "t_root",
        "chown_root",
        "chgrp_owner",
        "chgrp_root",
        "cfr_owner",
        "cfr_root",
    ];
    // The source of copy_file_range (its own mode stays, so it is not
    // counted as a change below).
    let src = root.join("src-0644");
    fs::write(&src, b"zz").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let src = src.display();
    for m in modes {
        for op in ops {
            let f = root.join(format!("{op}-{m}"));
            fs::write(&f, b"x\n").unwrap();
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!("chown 1000:1000 {0} && chmod {m} {0}", f.display()))
                .status()
                .unwrap();
            assert!(st.success());
            let f = f.display();
            let (rc, err) = match op {
                "w_owner" => run_as(1000, 1000, &format!("printf y >> {f}")),
                "t_owner" => run_as(1000, 1000, &format!("truncate -s 1 {f}")),
                "chgrp_owner" => run_as(1000, 1000, &format!("chgrp 1000 {f}")),
                "cfr_owner" => run_as(
                    1000,
                    1000,
                    &format!("xfs_io -c 'copy_range -s 0 -d 0 -l 2 {src}' {f}"),
                ),
                _ => {
                    let cmd = match op {
                        "w_root" => format!("printf y >> {f}"),
                        "cfr_root" => format!("xfs_io -c 'copy_range -s 0 -d 0 -l 2 {src}' {f}"),
                        "t_root" => format!("truncate -s 1 {f}"),
                        "chown_root" => format!("chown 1001 {f}"),
                        _ => format!("chgrp 1001 {f}"),
                    };
                    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
                    (
                        o.status.code().unwrap_or(-1),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                }
            };
            assert_eq!(rc, 0, "{op} on {f}: {err}");
        }
    }
    let mut out: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().mode() & 0o7777;
            format!("{} {mode:04o}", e.file_name().to_string_lossy())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn set_id_bits_are_cleared_as_on_tmpfs() {
    let img = Image::new("setid", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let t = Tmpfs::new();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let cleared = || {
        let s = daxlink::tools::client::snapshot(m.root(), &[]).unwrap();
        s["counters"]["setid_cleared"].as_u64().unwrap()
    };
    let c0 = cleared();
    let a = setid_story(m.root());
    let b = setid_story(t.root());
    assert_eq!(a, b, "daxlink, tmpfs");
    // The story clears something (it is not vacuous).
    assert!(b.iter().any(|l| l == "w_owner-4755 0755"), "{b:?}");
    // The kernel would clear these bits itself without
    // FUSE_HANDLE_KILLPRIV_V2 (a SETATTR of the mode before the write or
    // with the truncate or chown), to the same result. Under it, the
    // daemon clears every one: a write's in the write itself, no extra
    // request. Each file whose mode changed is one clearing by the daemon.
    let changed = a
        .iter()
        .filter(|l| {
            let (name, mode) = l.split_once(' ').unwrap();
            !name.ends_with(&format!("-{mode}"))
        })
        .count() as u64;
    assert!(changed > 0);
    assert_eq!(
        cleared() - c0,
        changed,
        "set-ID clearings done by the daemon"
    );
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn writeback_cache_is_durable_at_fsync() {
    use std::io::Write;
    let img = Image::new("wb", 64 << 20);
    let m = Mounted::new(&img.path, "writeback");
    // Appends land where O_APPEND says, though the kernel places them.
    let mut a = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path("log"))
        .unwrap();
    for i in 0..100u32 {
        writeln!(a, "line {i}").unwrap();
    }
    a.sync_all().unwrap();
    drop(a);
    let want: String = (0..100u32).map(|i| format!("line {i}\n")).collect();
    assert_eq!(fs::read_to_string(m.path("log")).unwrap(), want);
    // Partial-page overwrites of a file opened write-only (the kernel reads
    // the rest of the page first), then fsync: durable across a crash.
    fs::write(m.path("f"), pattern(21, 3 * 4096)).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap();
    f.write_all_at(b"hello", 4090).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut want_f = pattern(21, 3 * 4096);
    want_f[4090..4095].copy_from_slice(b"hello");
    let mut m = m;
    m.kill();
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("f")).unwrap(), want_f);
    assert_eq!(fs::read_to_string(m.path("log")).unwrap(), want);
    m.unmount();
    fsck_clean(&img.path);
}
