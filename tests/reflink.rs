//! Reflink through a real mount: cp, copy_file_range, the clone / dedupe /
//! unshare ioctls and their error cases (ioctl_ficlonerange(2),
//! ioctl_fideduperange(2), copy_file_range(2)), and sharing accounting.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;

use common::*;
use daxlink::fuse::ioctl::{self, RemapArgs};
use daxlink::tools::client;

const BS: u64 = 4096;

fn free_bytes(p: &Path) -> u64 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bfree * s.f_frsize
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

/// Raw clone ioctl on an already open destination (to test EBADF etc.);
/// the source is a descriptor number of this process.
fn clone_ioctl(dst: &File, src_fd: i32, soff: u64, doff: u64, len: u64) -> std::io::Result<u64> {
    let mut b = RemapArgs {
        src_fd: src_fd as u64,
        src_off: soff,
        dst_off: doff,
        len,
    }
    .encode(ioctl::CLONE_SIZE);
    ioctl::call(dst, ioctl::Cmd::CLONE, &mut b)?;
    Ok(ioctl::get_u64(&b, 32).unwrap())
}

#[test]
fn cp_of_256_mib_shares_blocks_and_writes_copy_on_write() {
    let img = Image::new("cp", 640 << 20);
    let m = Mounted::new(&img.path, "");
    let a = m.path("a");
    let st = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=256", "status=none"])
        .arg(format!("of={}", a.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let before = free_bytes(m.root());
    let t0 = std::time::Instant::now();
    let st = Command::new("cp")
        .arg(&a)
        .arg(m.path("b"))
        .status()
        .unwrap();
    assert!(st.success());
    let took = t0.elapsed();
    let used = before - free_bytes(m.root());
    assert!(used < 1 << 20, "cp used {used} bytes");
    eprintln!("cp of 256 MiB: {took:?}, {used} bytes of new space");
    assert!(same_content(&a, &m.path("b")));
    for f in ["a", "b"] {
        let e = client::extents(&m.path(f)).unwrap();
        assert!(!e.is_empty());
        assert!(e.iter().all(|x| x.refcount == 2), "{f}: {e:?}");
        assert_eq!(e.iter().map(|x| x.length).sum::<u64>(), 256 << 20);
    }
    let s = client::stat(m.root()).unwrap();
    assert_eq!(s.saved_bytes, 256 << 20);
    // Writing into b changes b only, and moves only the written block.
    let orig = {
        let mut v = vec![0u8; 100];
        File::open(&a)
            .unwrap()
            .read_exact_at(&mut v, 5_000_000)
            .unwrap();
        v
    };
    OpenOptions::new()
        .write(true)
        .open(m.path("b"))
        .unwrap()
        .write_all_at(&[0xEE; 100], 5_000_000)
        .unwrap();
    let mut v = vec![0u8; 100];
    File::open(&a)
        .unwrap()
        .read_exact_at(&mut v, 5_000_000)
        .unwrap();
    assert_eq!(v, orig);
    File::open(m.path("b"))
        .unwrap()
        .read_exact_at(&mut v, 5_000_000)
        .unwrap();
    assert_eq!(v, vec![0xEE; 100]);
    let eb = client::extents(&m.path("b")).unwrap();
    assert_eq!(
        eb.iter()
            .filter(|x| x.refcount == 1)
            .map(|x| x.length)
            .sum::<u64>(),
        BS
    );
    let m = m.cycle("");
    assert_eq!(client::extents(&m.path("b")).unwrap(), eb);
    // Deleting a frees nothing shared with b; deleting b frees everything.
    let f0 = free_bytes(m.root());
    fs::remove_file(m.path("a")).unwrap();
    assert!(free_bytes(m.root()) - f0 <= 2 * BS);
    assert!(client::extents(&m.path("b"))
        .unwrap()
        .iter()
        .all(|x| x.refcount == 1));
    fs::remove_file(m.path("b")).unwrap();
    // The kernel sends the RELEASE of the last open of b (by `client::extents`)
    // asynchronously: b's blocks are freed at that release if it comes late.
    let t0 = std::time::Instant::now();
    while free_bytes(m.root()) - f0 < (256 << 20) - BS && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(free_bytes(m.root()) - f0 >= (256 << 20) - BS);
    m.cycle("");
}

#[test]
fn reflink_command_and_clone_errors() {
    let img = Image::new("clone", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let src = m.path("src");
    fs::write(&src, pattern(1, 5 * BS as usize + 100)).unwrap();
    // Whole file (length 0), creating the destination.
    assert_eq!(
        client::reflink(&src, &m.path("dst"), 0, 0, 0).unwrap(),
        5 * BS + 100
    );
    assert!(same_content(&src, &m.path("dst")));
    assert_eq!(fs::metadata(m.path("dst")).unwrap().len(), 5 * BS + 100);
    // The command line form.
    let out = Command::new(DAXLINK)
        .args([
            "reflink",
            "--src-offset",
            "4096",
            "--dst-offset",
            "8192",
            "--length",
            "4096",
        ])
        .arg(&src)
        .arg(m.path("dst2"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut b = vec![0u8; BS as usize];
    File::open(m.path("dst2"))
        .unwrap()
        .read_exact_at(&mut b, 8192)
        .unwrap();
    assert_eq!(b, pattern(1, 5 * BS as usize + 100)[4096..8192]);
    // Unaligned offsets.
    assert_eq!(
        errno(client::reflink(&src, &m.path("e1"), 1, 0, BS)),
        libc::EINVAL
    );
    assert_eq!(
        errno(client::reflink(&src, &m.path("e1"), 0, 100, BS)),
        libc::EINVAL
    );
    // Unaligned length not ending at EOF.
    assert_eq!(
        errno(client::reflink(&src, &m.path("e1"), 0, 0, 100)),
        libc::EINVAL
    );
    // ... but a tail ending at the source EOF is fine.
    assert_eq!(
        client::reflink(&src, &m.path("tail"), 4 * BS, 0, BS + 100).unwrap(),
        BS + 100
    );
    // Past the source EOF.
    assert_eq!(
        errno(client::reflink(&src, &m.path("e1"), 8 * BS, 0, BS)),
        libc::EINVAL
    );
    assert_eq!(
        errno(client::reflink(&src, &m.path("e1"), 4 * BS, 0, 2 * BS)),
        libc::EINVAL
    );
    // Same file: overlapping ranges refused, disjoint ones allowed.
    assert_eq!(
        errno(client::reflink(&src, &src, 0, BS, 2 * BS)),
        libc::EINVAL
    );
    assert_eq!(
        client::reflink(&src, &src, 0, 8 * BS, 2 * BS).unwrap(),
        2 * BS
    );
    let mut x = vec![0u8; 2 * BS as usize];
    File::open(&src)
        .unwrap()
        .read_exact_at(&mut x, 8 * BS)
        .unwrap();
    assert_eq!(x, pattern(1, 2 * BS as usize));
    // Blocks 8 and 9 of src are now blocks 0 and 1 of src.
    let e = client::extents(&src).unwrap();
    let phys_at = |l: u64| {
        e.iter()
            .find(|x| x.logical <= l && l < x.logical + x.length)
            .map(|x| x.physical + (l - x.logical) / BS)
    };
    assert_eq!(phys_at(8 * BS), phys_at(0));
    assert_eq!(phys_at(9 * BS), phys_at(BS));
    // A destination open read-only: EBADF.
    let ro = File::open(m.path("dst")).unwrap();
    let s = File::open(&src).unwrap();
    assert_eq!(
        errno(clone_ioctl(&ro, s.as_raw_fd(), 0, 0, BS)),
        libc::EBADF
    );
    // Directories: EISDIR.
    fs::create_dir(m.path("dir")).unwrap();
    let d = File::open(m.path("dir")).unwrap();
    let w = OpenOptions::new().write(true).open(m.path("dst")).unwrap();
    assert_eq!(
        errno(clone_ioctl(&w, d.as_raw_fd(), 0, 0, BS)),
        libc::EISDIR
    );
    // A source descriptor that is not open, or not open for reading: EBADF.
    assert_eq!(errno(clone_ioctl(&w, 999_999, 0, 0, BS)), libc::EBADF);
    assert_eq!(errno(clone_ioctl(&w, -1, 0, 0, BS)), libc::EBADF);
    let wo = OpenOptions::new().write(true).open(&src).unwrap();
    assert_eq!(
        errno(clone_ioctl(&w, wo.as_raw_fd(), 0, 0, BS)),
        libc::EBADF
    );
    // A source descriptor on another filesystem: EXDEV.
    let elsewhere = File::open("/proc/self/status").unwrap();
    assert_eq!(
        errno(clone_ioctl(&w, elsewhere.as_raw_fd(), 0, 0, BS)),
        libc::EXDEV
    );
    // Across filesystems: EXDEV.
    let other = tempfile::NamedTempFile::new().unwrap();
    fs::write(other.path(), b"x").unwrap();
    assert_eq!(
        errno(client::reflink(other.path(), &m.path("x"), 0, 0, 0)),
        libc::EXDEV
    );
    // The kernel itself refuses FICLONE on FUSE.
    let r = unsafe { libc::ioctl(w.as_raw_fd(), libc::FICLONE as _, ro.as_raw_fd()) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    drop((ro, w, s, d, wo, elsewhere));
    m.cycle("");
}

#[test]
fn clone_checks_read_permission_of_the_source() {
    let img = Image::new("clperm", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let secret = m.path("secret");
    fs::write(&secret, vec![7u8; 8192]).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let root = m.root().display();
    let (rc, err) = run_as(
        1000,
        1000,
        &format!("{DAXLINK} reflink {root}/secret {root}/stolen"),
    );
    assert_ne!(rc, 0);
    assert!(err.contains("ermission denied"), "{err}");
    let stolen = fs::read(m.path("stolen")).unwrap_or_default();
    assert!(stolen.iter().all(|&b| b == 0));
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let (rc, err) = run_as(
        1000,
        1000,
        &format!("{DAXLINK} reflink {root}/secret {root}/copy"),
    );
    assert_eq!(rc, 0, "{err}");
    assert_eq!(fs::read(m.path("copy")).unwrap(), vec![7u8; 8192]);
}

#[test]
fn dedupe_shares_only_identical_ranges() {
    let img = Image::new("dedupe", 32 << 20);
    let m = Mounted::new(&img.path, "");
    let data = pattern(5, 8 * BS as usize);
    fs::write(m.path("a"), &data).unwrap();
    fs::write(m.path("b"), &data).unwrap();
    let mut other = data.clone();
    other[3 * BS as usize + 7] ^= 1;
    fs::write(m.path("c"), &other).unwrap();
    let before = free_bytes(m.root());
    let (same, n) = client::dedupe(&m.path("a"), &m.path("b"), 0, 0, 8 * BS).unwrap();
    assert!(same);
    assert_eq!(n, 8 * BS);
    assert!(free_bytes(m.root()) >= before + 8 * BS - BS);
    assert!(client::extents(&m.path("b"))
        .unwrap()
        .iter()
        .all(|e| e.refcount == 2));
    let (same, n) = client::dedupe(&m.path("a"), &m.path("c"), 0, 0, 8 * BS).unwrap();
    assert!(!same);
    assert_eq!(n, 0);
    assert!(client::extents(&m.path("c"))
        .unwrap()
        .iter()
        .all(|e| e.refcount == 1));
    // The identical part of c can be deduped.
    let (same, _) = client::dedupe(&m.path("a"), &m.path("c"), 4 * BS, 4 * BS, 4 * BS).unwrap();
    assert!(same);
    assert_eq!(fs::read(m.path("c")).unwrap(), other);
    // Beyond EOF of the destination and unaligned offsets: EINVAL.
    fs::write(m.path("short"), &data[..BS as usize]).unwrap();
    assert_eq!(
        errno(client::dedupe(&m.path("a"), &m.path("short"), 0, 0, 2 * BS)),
        libc::EINVAL
    );
    assert_eq!(
        errno(client::dedupe(&m.path("a"), &m.path("b"), 1, 1, BS)),
        libc::EINVAL
    );
    let out = Command::new(DAXLINK)
        .args([
            "dedupe",
            "--src-offset",
            "0",
            "--dst-offset",
            "0",
            "--length",
            "8192",
        ])
        .arg(m.path("a"))
        .arg(m.path("c"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("deduped 8192"));
    m.cycle("");
}

fn copy_file_range(
    a: &File,
    off_in: i64,
    b: &File,
    off_out: i64,
    len: usize,
) -> std::io::Result<usize> {
    let (mut i, mut o) = (off_in, off_out);
    let r = unsafe { libc::copy_file_range(a.as_raw_fd(), &mut i, b.as_raw_fd(), &mut o, len, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[test]
fn copy_file_range_aligned_unaligned_and_errors() {
    let img = Image::new("cfr", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let data = pattern(9, 10 * BS as usize + 123);
    fs::write(m.path("s"), &data).unwrap();
    let s = File::open(m.path("s")).unwrap();
    // Congruent offsets: the middle blocks are shared, head and tail copied.
    let d = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(m.path("d"))
        .unwrap();
    assert_eq!(
        copy_file_range(&s, 100, &d, 100, 6 * BS as usize).unwrap(),
        6 * BS as usize
    );
    let mut got = vec![0u8; 6 * BS as usize];
    d.read_exact_at(&mut got, 100).unwrap();
    assert_eq!(got, data[100..100 + 6 * BS as usize]);
    let e = client::extents(&m.path("d")).unwrap();
    let shared: u64 = e.iter().filter(|x| x.refcount > 1).map(|x| x.length).sum();
    assert_eq!(shared, 5 * BS);
    // Incongruent offsets: copied, nothing shared.
    let d2 = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(m.path("d2"))
        .unwrap();
    assert_eq!(copy_file_range(&s, 3, &d2, 5, 1000).unwrap(), 1000);
    let mut got = vec![0u8; 1000];
    d2.read_exact_at(&mut got, 5).unwrap();
    assert_eq!(got, data[3..1003]);
    assert!(client::extents(&m.path("d2"))
        .unwrap()
        .iter()
        .all(|x| x.refcount == 1));
    // Length past the source EOF is clamped; at EOF it returns 0.
    let n = copy_file_range(&s, 8 * BS as i64, &d2, 0, 1 << 30).unwrap();
    assert_eq!(n, 2 * BS as usize + 123);
    assert_eq!(
        copy_file_range(&s, data.len() as i64, &d2, 0, 100).unwrap(),
        0
    );
    // Whole-file copy at EOF shares the last partial block too.
    let d3 = File::create(m.path("d3")).unwrap();
    assert_eq!(
        copy_file_range(&s, 0, &d3, 0, data.len()).unwrap(),
        data.len()
    );
    assert_eq!(fs::read(m.path("d3")).unwrap(), data);
    assert!(client::extents(&m.path("d3"))
        .unwrap()
        .iter()
        .all(|x| x.refcount > 1));
    // Overlapping ranges within one file: EINVAL.
    let same = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("s"))
        .unwrap();
    assert_eq!(
        errno(copy_file_range(&same, 0, &same, 100, 8192)),
        libc::EINVAL
    );
    // To another filesystem: EXDEV.
    let other = tempfile::tempfile().unwrap();
    assert_eq!(errno(copy_file_range(&s, 0, &other, 0, 100)), libc::EXDEV);
    // xfs_io's copy_range reaches us too.
    let st = Command::new("xfs_io")
        .args(["-f", "-c"])
        .arg(format!(
            "copy_range -s 0 -d 0 -l 16384 {}",
            m.path("s").display()
        ))
        .arg(m.path("x"))
        .status()
        .expect("xfs_io (xfsprogs) must be installed: scripts/test.sh installs it");
    assert!(st.success());
    assert!(client::extents(&m.path("x"))
        .unwrap()
        .iter()
        .all(|x| x.refcount > 1));
    drop((s, d, d2, d3, same));
    m.cycle("");
}

#[test]
fn unshare_punch_truncate_on_shared_ranges() {
    let img = Image::new("unshare", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let data = pattern(11, 16 * BS as usize);
    fs::write(m.path("a"), &data).unwrap();
    client::reflink(&m.path("a"), &m.path("b"), 0, 0, 0).unwrap();
    client::reflink(&m.path("a"), &m.path("c"), 0, 0, 0).unwrap();
    assert!(client::extents(&m.path("a"))
        .unwrap()
        .iter()
        .all(|x| x.refcount == 3));
    // Punch in b: a and c keep their data.
    let b = OpenOptions::new().write(true).open(m.path("b")).unwrap();
    let r = unsafe {
        libc::fallocate(
            b.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            100,
            3 * BS as i64,
        )
    };
    assert_eq!(r, 0);
    let mut expect_b = data.clone();
    expect_b[100..100 + 3 * BS as usize].fill(0);
    assert_eq!(fs::read(m.path("b")).unwrap(), expect_b);
    assert_eq!(fs::read(m.path("a")).unwrap(), data);
    // Truncate c to an unaligned size: a keeps its tail bytes.
    b.set_len(5 * BS + 10).unwrap();
    File::options()
        .write(true)
        .open(m.path("c"))
        .unwrap()
        .set_len(BS + 1)
        .unwrap();
    assert_eq!(fs::read(m.path("a")).unwrap(), data);
    assert_eq!(fs::read(m.path("c")).unwrap(), data[..BS as usize + 1]);
    // Unshare a: private copies, same bytes.
    client::unshare(&m.path("a"), 0, 0).unwrap();
    assert!(client::extents(&m.path("a"))
        .unwrap()
        .iter()
        .all(|x| x.refcount == 1));
    assert_eq!(fs::read(m.path("a")).unwrap(), data);
    daxlink(&[&"unshare", &m.path("b")]);
    drop(b);
    let m = m.cycle("");
    assert_eq!(fs::read(m.path("a")).unwrap(), data);
    assert_eq!(fs::read(m.path("c")).unwrap(), data[..BS as usize + 1]);
    // The virtual xattr mirrors `daxlink extents --json`.
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.daxlink.extents"])
        .arg(m.path("c"))
        .output()
        .expect("getfattr (attr) must be installed: scripts/test.sh installs it");
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["refcount"], 1);
    assert_eq!(j[0]["logical"], 0);
}
