//! POSIX behaviour through a real FUSE mount: every operation, its errors,
//! and persistence across unmount + fsck + remount.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use common::*;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

#[test]
fn files_read_write_append_truncate_persist() {
    let img = Image::new("files", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let a = m.path("a");
    fs::write(&a, b"hello world").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"hello world");
    // Overwrite in the middle.
    let f = OpenOptions::new().write(true).open(&a).unwrap();
    f.write_at(b"WORLD", 6).unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"hello WORLD");
    // O_APPEND.
    let mut f = OpenOptions::new().append(true).open(&a).unwrap();
    f.write_all(b"!!").unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"hello WORLD!!");
    // Truncate down and up: the cut bytes read back as zeros.
    let f = OpenOptions::new().write(true).open(&a).unwrap();
    f.set_len(5).unwrap();
    f.set_len(8).unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"hello\0\0\0");
    // A multi-megabyte file with a pattern, unaligned writes.
    let big = pattern(1, 5 << 20);
    let b = m.path("big");
    let mut f = File::create(&b).unwrap();
    for chunk in big.chunks(123_457) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(&b).unwrap(), big);
    let m = m.cycle("");
    assert_eq!(fs::read(m.path("a")).unwrap(), b"hello\0\0\0");
    assert_eq!(fs::read(m.path("big")).unwrap(), big);
    // Unaligned pread across block boundaries.
    let f = File::open(m.path("big")).unwrap();
    let mut buf = vec![0u8; 10_000];
    f.read_exact_at(&mut buf, 4090).unwrap();
    assert_eq!(&buf[..], &big[4090..14090]);
}

#[test]
fn sparse_and_large_files_seek_data_hole() {
    let img = Image::new("sparse", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = m.path("sparse");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let five_gib = 5u64 << 30;
    f.write_at(b"tail", five_gib).unwrap();
    f.write_at(b"head", 0).unwrap();
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), five_gib + 4);
    assert!(
        md.blocks() <= 16,
        "sparse file uses {} sectors",
        md.blocks()
    );
    let mut buf = [1u8; 8];
    f.read_exact_at(&mut buf, 1 << 30).unwrap();
    assert_eq!(buf, [0u8; 8]);
    let fd = f.as_raw_fd();
    // SAFETY-free wrappers: libc calls on a valid fd.
    let data = unsafe { libc::lseek(fd, 4096, libc::SEEK_DATA) };
    assert_eq!(data as u64, five_gib / 4096 * 4096);
    let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
    assert_eq!(hole, 4096);
    let r = unsafe { libc::lseek(fd, (five_gib + 10) as i64, libc::SEEK_DATA) };
    assert_eq!(r, -1);
    assert_eq!(last_errno(), libc::ENXIO);
    drop(f);
    let m = m.cycle("");
    let f = File::open(m.path("sparse")).unwrap();
    let mut t = [0u8; 4];
    f.read_exact_at(&mut t, five_gib).unwrap();
    assert_eq!(&t, b"tail");
}

#[test]
fn fallocate_modes() {
    let img = Image::new("falloc", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = m.path("f");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let fd = f.as_raw_fd();
    f.write_all_at(&vec![0xAAu8; 64 << 10], 0).unwrap();
    // Punch a hole (with KEEP_SIZE, as the VFS requires).
    let r = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            8192,
            16384,
        )
    };
    assert_eq!(r, 0, "punch: errno {}", last_errno());
    let mut buf = vec![0u8; 64 << 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..8192].iter().all(|&b| b == 0xAA));
    assert!(buf[8192..24576].iter().all(|&b| b == 0));
    assert!(buf[24576..].iter().all(|&b| b == 0xAA));
    assert_eq!(unsafe { libc::lseek(fd, 8192, libc::SEEK_HOLE) }, 8192);
    assert_eq!(unsafe { libc::lseek(fd, 8192, libc::SEEK_DATA) }, 24576);
    // Zero range, unaligned.
    let r = unsafe { libc::fallocate(fd, libc::FALLOC_FL_ZERO_RANGE, 100, 1000) };
    assert_eq!(r, 0);
    f.read_exact_at(&mut buf[..2000], 0).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0xAA));
    assert!(buf[100..1100].iter().all(|&b| b == 0));
    assert!(buf[1100..2000].iter().all(|&b| b == 0xAA));
    // Preallocate beyond EOF with and without KEEP_SIZE.
    let before = f.metadata().unwrap().blocks();
    assert_eq!(
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) },
        0
    );
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), 64 << 10);
    assert!(md.blocks() >= before + 2048);
    assert_eq!(unsafe { libc::fallocate(fd, 0, 4 << 20, 4096) }, 0);
    assert_eq!(f.metadata().unwrap().len(), (4 << 20) + 4096);
    // Unsupported: punch without KEEP_SIZE is refused by the VFS.
    assert_eq!(
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096) },
        -1
    );
    assert_eq!(last_errno(), libc::EOPNOTSUPP);
    drop(f);
    let m = m.cycle("");
    let f = File::open(m.path("f")).unwrap();
    assert_eq!(
        unsafe { libc::lseek(f.as_raw_fd(), 8192, libc::SEEK_DATA) },
        24576
    );
}

#[test]
fn directories_links_symlinks_rename() {
    let img = Image::new("dirs", 64 << 20);
    let m = Mounted::new(&img.path, "");
    fs::create_dir(m.path("d")).unwrap();
    fs::create_dir(m.path("d/sub")).unwrap();
    assert_eq!(fs::metadata(m.path("d")).unwrap().nlink(), 3);
    for i in 0..1000 {
        fs::write(m.path(&format!("d/f{i}")), format!("{i}")).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 1001);
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    // Hard links.
    fs::hard_link(m.path("d/f1"), m.path("link1")).unwrap();
    assert_eq!(fs::metadata(m.path("d/f1")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.path("link1")).unwrap().ino(),
        fs::metadata(m.path("d/f1")).unwrap().ino()
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("d"), m.path("dl"))),
        libc::EPERM
    );
    // Symlinks.
    std::os::unix::fs::symlink("d/f2", m.path("sl")).unwrap();
    assert_eq!(
        fs::read_link(m.path("sl")).unwrap().to_str().unwrap(),
        "d/f2"
    );
    assert_eq!(fs::read(m.path("sl")).unwrap(), b"2");
    let long_target = "x".repeat(4000);
    std::os::unix::fs::symlink(&long_target, m.path("longsl")).unwrap();
    assert_eq!(
        fs::read_link(m.path("longsl")).unwrap().to_str().unwrap(),
        long_target
    );
    // Rename: plain, over an existing file, directories, NOREPLACE and EXCHANGE.
    fs::rename(m.path("d/f3"), m.path("moved")).unwrap();
    fs::rename(m.path("d/f4"), m.path("moved")).unwrap();
    assert_eq!(fs::read(m.path("moved")).unwrap(), b"4");
    fs::rename(m.path("d/sub"), m.path("sub2")).unwrap();
    assert_eq!(fs::metadata(m.path("d")).unwrap().nlink(), 2);
    assert_eq!(
        errno_of(fs::rename(m.path("d"), m.path("d/x"))),
        libc::EINVAL
    );
    fs::create_dir(m.path("full")).unwrap();
    fs::write(m.path("full/x"), b"x").unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("sub2"), m.path("full"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::rename(m.path("moved"), m.path("full"))),
        libc::EISDIR
    );
    assert_eq!(
        errno_of(fs::rename(m.path("sub2"), m.path("moved"))),
        libc::ENOTDIR
    );
    let renameat2 = |a: &Path, b: &Path, flags: u32| -> i32 {
        let (ca, cb) = (cstr(a), cstr(b));
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            last_errno()
        }
    };
    assert_eq!(
        renameat2(&m.path("d/f5"), &m.path("moved"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(
        renameat2(&m.path("d/f5"), &m.path("moved"), libc::RENAME_EXCHANGE),
        0
    );
    assert_eq!(fs::read(m.path("moved")).unwrap(), b"5");
    assert_eq!(fs::read(m.path("d/f5")).unwrap(), b"4");
    assert_eq!(
        renameat2(&m.path("sub2"), &m.path("moved"), libc::RENAME_EXCHANGE),
        0
    );
    assert!(fs::metadata(m.path("moved")).unwrap().is_dir());
    // Device nodes and FIFOs.
    let fifo = cstr(&m.path("fifo"));
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(fs::metadata(m.path("fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    let m = m.cycle("");
    assert_eq!(fs::read_dir(m.path("d")).unwrap().count(), 998);
    assert_eq!(
        fs::read_link(m.path("sl")).unwrap().to_str().unwrap(),
        "d/f2"
    );
    assert_eq!(fs::metadata(m.path("link1")).unwrap().nlink(), 2);
    assert!(fs::metadata(m.path("moved")).unwrap().is_dir());
    assert_eq!(fs::metadata(m.path("moved")).unwrap().nlink(), 2);
    assert!(fs::metadata(m.path("fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn unlink_open_file_keeps_data_until_close() {
    let img = Image::new("unlinkopen", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = m.path("victim");
    fs::write(&p, pattern(3, 1 << 20)).unwrap();
    let before = statvfs_free(m.root());
    let mut f = File::open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, pattern(3, 1 << 20));
    drop(f);
    // Space comes back after the last close.
    let t0 = std::time::Instant::now();
    while statvfs_free(m.root()) < before + 250 && t0.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(statvfs_free(m.root()) >= before + 250);
    m.cycle("");
}

fn statvfs_free(p: &Path) -> u64 {
    let c = cstr(p);
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bfree
}

#[test]
fn errors_match_linux() {
    let img = Image::new("errors", 16 << 20);
    let m = Mounted::new(&img.path, "");
    assert_eq!(errno_of(fs::read(m.path("nope"))), libc::ENOENT);
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(errno_of(fs::create_dir(m.path("d"))), libc::EEXIST);
    let long = "n".repeat(256);
    assert_eq!(errno_of(fs::write(m.path(&long), b"")), libc::ENAMETOOLONG);
    fs::write(m.path(&"n".repeat(255)), b"ok").unwrap();
    assert_eq!(
        errno_of(OpenOptions::new().write(true).open(m.path("d"))),
        libc::EISDIR
    );
    fs::write(m.path("file"), b"").unwrap();
    assert_eq!(errno_of(fs::write(m.path("file/x"), b"")), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_dir(m.path("file"))), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_file(m.path("d"))), libc::EISDIR);
    // Across filesystems.
    let other = tempfile::tempdir().unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("file"), other.path().join("x"))),
        libc::EXDEV
    );
    // Beyond the maximum file size.
    let f = OpenOptions::new().write(true).open(m.path("file")).unwrap();
    assert_eq!(errno_of(f.write_at(b"x", 1 << 50)), libc::EFBIG);
    // ENOSPC: fill the filesystem; everything stays consistent.
    let mut g = File::create(m.path("fill")).unwrap();
    let chunk = vec![0x5Au8; 1 << 20];
    let mut written = 0u64;
    let err = loop {
        match g.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    assert!(written > 8 << 20);
    drop((f, g));
    assert_eq!(
        errno_of(fs::write(m.path("more"), vec![1u8; 1 << 20])),
        libc::ENOSPC
    );
    let m = m.cycle("");
    let len = fs::metadata(m.path("fill")).unwrap().len();
    assert_eq!(len, written);
    fs::remove_file(m.path("fill")).unwrap();
    let _ = fs::remove_file(m.path("more"));
    fs::write(m.path("after"), vec![2u8; 4 << 20]).unwrap();
    m.cycle("");
}

#[test]
fn xattrs_roundtrip() {
    let img = Image::new("xattr", 32 << 20);
    let m = Mounted::new(&img.path, "");
    let p = m.path("x");
    fs::write(&p, b"").unwrap();
    let c = cstr(&p);
    let set = |name: &str, val: &[u8], flags: i32| -> i32 {
        let n = CString::new(name).unwrap();
        let r = unsafe {
            libc::setxattr(
                c.as_ptr(),
                n.as_ptr(),
                val.as_ptr().cast(),
                val.len(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            last_errno()
        }
    };
    let get = |name: &str| -> Result<Vec<u8>, i32> {
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; 70_000];
        let r =
            unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            Err(last_errno())
        } else {
            buf.truncate(r as usize);
            Ok(buf)
        }
    };
    assert_eq!(set("user.a", b"1", 0), 0);
    assert_eq!(set("user.a", b"2", libc::XATTR_CREATE), libc::EEXIST);
    assert_eq!(set("user.b", b"2", libc::XATTR_REPLACE), libc::ENODATA);
    let big = pattern(9, 65536);
    assert_eq!(set("user.big", &big, 0), 0);
    assert_eq!(set("trusted.t", b"tt", 0), 0);
    assert_eq!(get("user.a").unwrap(), b"1");
    assert_eq!(get("user.big").unwrap(), big);
    assert_eq!(get("user.none"), Err(libc::ENODATA));
    // Too small a buffer: ERANGE.
    let n = CString::new("user.big").unwrap();
    let mut small = [0u8; 10];
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), small.as_mut_ptr().cast(), 10) };
    assert_eq!((r, last_errno()), (-1, libc::ERANGE));
    let mut list = vec![0u8; 1000];
    let r = unsafe { libc::listxattr(c.as_ptr(), list.as_mut_ptr().cast(), 1000) };
    let names: Vec<&[u8]> = list[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    assert!(names.contains(&&b"user.a"[..]) && names.contains(&&b"user.big"[..]));
    let rm = CString::new("user.a").unwrap();
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), rm.as_ptr()) }, 0);
    let m = m.cycle("");
    let c = cstr(&m.path("x"));
    let n = CString::new("user.big").unwrap();
    let mut buf = vec![0u8; 70_000];
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(&buf[..r as usize], &big[..]);
    let n = CString::new("user.a").unwrap();
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!((r, last_errno()), (-1, libc::ENODATA));
}

#[test]
fn attributes_times_owners_persist() {
    let img = Image::new("attrs", 16 << 20);
    let m = Mounted::new(&img.path, "");
    let p = m.path("f");
    fs::write(&p, b"data").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    let c = cstr(&p);
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 1234, 5678) }, 0);
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    // chown clears set-user-ID.
    assert_eq!(md.mode() & 0o7777, 0o0751);
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 987_654_321));
    let ctime_before = (md.ctime(), md.ctime_nsec());
    let m = m.cycle("");
    let md = fs::metadata(m.path("f")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o751)
    );
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 987_654_321));
    assert_eq!((md.ctime(), md.ctime_nsec()), ctime_before);
    // Writing updates mtime and ctime.
    std::thread::sleep(std::time::Duration::from_millis(20));
    OpenOptions::new()
        .append(true)
        .open(m.path("f"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let md2 = fs::metadata(m.path("f")).unwrap();
    assert!(md2.mtime() > 1_500_000_000);
}

#[test]
fn permissions_for_other_users() {
    let img = Image::new("perm", 16 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    let root = m.root().display().to_string();
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    // Another user cannot create in a root-owned 0755 directory.
    let (rc, _) = run_as(1000, 1000, &format!("echo x > {root}/denied"));
    assert_ne!(rc, 0);
    assert!(!m.path("denied").exists());
    // A world-writable sticky directory: create yes, delete someone else's no.
    fs::create_dir(m.path("tmp")).unwrap();
    fs::set_permissions(m.path("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let (rc, err) = run_as(1000, 1000, &format!("echo mine > {root}/tmp/u1000"));
    assert_eq!(rc, 0, "{err}");
    let md = fs::metadata(m.path("tmp/u1000")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    let (rc, _) = run_as(1001, 1001, &format!("rm -f {root}/tmp/u1000"));
    assert_ne!(rc, 0);
    assert!(m.path("tmp/u1000").exists());
    let (rc, _) = run_as(1000, 1000, &format!("rm {root}/tmp/u1000"));
    assert_eq!(rc, 0);
    // setgid directory: new files take the directory's group, subdirs inherit setgid.
    fs::create_dir(m.path("sg")).unwrap();
    let c = cstr(&m.path("sg"));
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 4242) }, 0);
    fs::set_permissions(m.path("sg"), fs::Permissions::from_mode(0o2777)).unwrap();
    let (rc, err) = run_as(
        1000,
        1000,
        &format!("touch {root}/sg/f && mkdir {root}/sg/d"),
    );
    assert_eq!(rc, 0, "{err}");
    assert_eq!(fs::metadata(m.path("sg/f")).unwrap().gid(), 4242);
    let d = fs::metadata(m.path("sg/d")).unwrap();
    assert_eq!(d.gid(), 4242);
    assert_ne!(d.mode() & 0o2000, 0);
    // Non-owner chmod fails; reading a 0600 file of another user fails.
    fs::write(m.path("secret"), b"s").unwrap();
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let (rc, _) = run_as(1000, 1000, &format!("cat {root}/secret"));
    assert_ne!(rc, 0);
    let (rc, _) = run_as(1000, 1000, &format!("chmod 777 {root}/secret"));
    assert_ne!(rc, 0);
    // Writing to a setuid file as another user clears the bit.
    fs::write(m.path("suid"), b"s").unwrap();
    fs::set_permissions(m.path("suid"), fs::Permissions::from_mode(0o4777)).unwrap();
    let (rc, err) = run_as(1000, 1000, &format!("echo more >> {root}/suid"));
    assert_eq!(rc, 0, "{err}");
    assert_eq!(fs::metadata(m.path("suid")).unwrap().mode() & 0o4000, 0);
    m.cycle("");
}

#[test]
fn concurrent_writers_and_readers() {
    let img = Image::new("conc", 128 << 20);
    let m = Mounted::new(&img.path, "threads=4");
    let root = m.root().to_path_buf();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let p = root.join(format!("t{t}-{i}"));
                    let data = pattern(t * 100 + i, 100_000 + i as usize * 997);
                    fs::write(&p, &data).unwrap();
                    assert_eq!(fs::read(&p).unwrap(), data);
                    if i % 3 == 0 {
                        fs::remove_file(&p).unwrap();
                    }
                }
                // Many writers into one shared file, disjoint ranges.
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(root.join("shared"))
                    .unwrap();
                for k in 0..50u64 {
                    f.write_all_at(&[t as u8 + 1; 4096], (k * 4 + t) * 4096)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = fs::read(m.path("shared")).unwrap();
    for k in 0..200usize {
        assert!(s[k * 4096..(k + 1) * 4096]
            .iter()
            .all(|&b| b == (k % 4) as u8 + 1));
    }
    m.cycle("");
}

#[test]
fn statfs_counts_space_and_inodes() {
    let img = Image::new("statfs", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let c = cstr(m.root());
    let mut s0: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s0) }, 0);
    assert_eq!(s0.f_bsize, 4096);
    assert_eq!(s0.f_namemax, 255);
    fs::write(m.path("f"), vec![1u8; 8 << 20]).unwrap();
    let mut s1: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statvfs(c.as_ptr(), &mut s1) };
    assert!(s0.f_bfree - s1.f_bfree >= 2048);
    assert_eq!(s0.f_ffree - s1.f_ffree, 1);
}

#[test]
fn fsync_and_odd_flags() {
    let img = Image::new("fsync", 16 << 20);
    let m = Mounted::new(&img.path, "");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(m.path("s"))
        .unwrap();
    f.write_all(b"synced").unwrap();
    f.sync_data().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    drop(f);
    File::open(m.root()).unwrap().sync_all().unwrap();
    // O_TRUNC on open.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("s"))
        .unwrap();
    assert_eq!(fs::metadata(m.path("s")).unwrap().len(), 0);
    m.cycle("");
}

/// A directory of many reply pages, listed through readdirplus (the first
/// batch, and every batch after lookups) and plain readdir (later batches
/// while nothing looked entries up): every entry once, with its inode number
/// and type, in both.
#[test]
fn big_directory_lists_every_entry_once_through_readdir_and_readdirplus() {
    use std::collections::BTreeMap;
    use std::os::unix::fs::DirEntryExt;
    let img = Image::new("bigdir", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    let mut want: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for i in 0..1500 {
        // Long names: a reply page holds few of them.
        let name = format!("{i:05}-{}", "n".repeat(180));
        let p = d.join(&name);
        if i % 7 == 0 {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, b"").unwrap();
        }
        let st = fs::symlink_metadata(&p).unwrap();
        want.insert(name, (st.ino(), st.is_dir()));
    }
    let list = || -> BTreeMap<String, (u64, bool)> {
        let mut got = BTreeMap::new();
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let v = (e.ino(), e.file_type().unwrap().is_dir());
            assert!(got.insert(name.clone(), v).is_none(), "{name} twice");
        }
        got
    };
    // Drop the kernel's dentries first, so the listing is not the kernel's.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(list(), want, "first listing");
    // Every entry looked up (stat), then listed again.
    for name in want.keys() {
        fs::symlink_metadata(d.join(name)).unwrap();
    }
    assert_eq!(list(), want, "listing after lookups");
    let m = m.cycle("");
    let d = m.path("d");
    let got: usize = fs::read_dir(&d).unwrap().count();
    assert_eq!(got, want.len());
    m.unmount();
    fsck_clean(&img.path);
}
