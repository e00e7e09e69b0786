//! HELLO, admission on the socket, MAP and what it marks writable, `direct=off`.

use super::*;

#[test]
fn a_client_reads_a_block_straight_from_the_image() {
    let img = Image::new("direct-read", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let data = pattern(1, 3 * BS);
    let p = write_file(&m, "f", &data);
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    assert!(
        c.still_admitted(),
        "the daemon closed an admitted client's connection"
    );
    assert_eq!(c.hello.block_size as usize, BS);
    assert!(
        c.hello.flags & wire::HELLO_WRITABLE != 0,
        "a rw mount on /dev/shm"
    );
    let md = std::fs::metadata(&img.path).unwrap();
    assert_eq!((c.hello.image_dev, c.hello.image_ino), (md.dev(), md.ino()));
    assert!(c.ctl.state() & control::OPEN != 0);
    // The heartbeat is fresh.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_ms = now.tv_sec() as u64 * 1000 + now.tv_nsec() as u64 / 1_000_000;
    assert!(now_ms.saturating_sub(c.ctl.heartbeat()) < control::STALE_MS);
    let r = map(&f, 0, false).unwrap();
    assert_eq!(r.size, data.len() as u64);
    assert_eq!(r.next, u64::MAX);
    assert_eq!(
        r.bucket,
        control::bucket_of(std::fs::metadata(&p).unwrap().ino())
    );
    assert!(
        r.extents.iter().all(|e| e.flags & wire::EXT_WRITE == 0),
        "read map"
    );
    let e = r
        .extents
        .iter()
        .find(|e| e.lblock <= 1 && 1 < e.lblock + e.count)
        .unwrap();
    let pb = e.pblock + (1 - e.lblock);
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    let got = c.load(pb);
    c.ctl.exit(c.slot);
    let mut kernel = vec![0u8; BS];
    f.read_exact_at(&mut kernel, BS as u64).unwrap();
    assert_eq!(
        got, kernel,
        "the image's block is what the kernel path reads"
    );
    assert_eq!(got, &data[BS..2 * BS]);
    // MAP needs the file open for reading; a write map needs it writable.
    let wo = OpenOptions::new().write(true).open(&p).unwrap();
    assert_eq!(errno_of(map(&wo, 0, false)), libc::EBADF);
    // (An open that uses the page cache and holds no lease keeps writable
    // maps away: it goes.)
    drop(wo);
    assert_eq!(errno_of(map(&f, 0, true)), libc::EBADF);
    // TOUCH needs it open for writing.
    assert_eq!(errno_of(touch(&f)), libc::EBADF);
    // A write map marks the file's own whole blocks writable.
    let w = map(&rw(&p), 0, true).unwrap();
    assert!(w.flags & wire::MAP_WRITE != 0);
    assert_eq!(w.extents.iter().map(|e| e.count).sum::<u64>(), 3);
    assert!(w.extents.iter().all(|e| e.flags & wire::EXT_WRITE != 0));
    // A clone from the file shares its blocks: a recall of the source (an
    // access under the old map cannot begin), and no block of either file
    // is writable in place any more.
    let g = m.path("g");
    daxlink(&[&"reflink", &p, &g]);
    assert!(
        !c.ctl.enter(c.slot, w.bucket, w.gen),
        "clone did not recall the source"
    );
    for q in [&p, &g] {
        let s = map(&rw(q), 0, true).unwrap();
        assert_eq!(s.extents.iter().map(|e| e.count).sum::<u64>(), 3);
        assert!(
            s.extents.iter().all(|e| e.flags & wire::EXT_WRITE == 0),
            "{s:?}"
        );
    }
    drop((c, f));
    m.unmount();
    fsck_clean(&img.path);
}

#[test]
fn only_a_read_write_descriptor_of_the_image_is_admitted() {
    let img = Image::new("direct-trust", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", b"x");
    let f = File::open(&p).unwrap();
    let h = hello(&f).unwrap();
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes_(&h.path));
    assert_eq!(path, img.path.canonicalize().unwrap());
    // nobody may not open the image: it keeps the kernel path.
    let (rc, err) = run_as(65534, 65534, &format!("exec 3<>'{}'", path.display()));
    assert_ne!(rc, 0, "nobody opened the image read-write");
    assert!(err.contains("Permission denied"), "{err}");
    // The image, read-only: EACCES.
    let ro = File::open(&path).unwrap();
    let (_s, w, fd) = say_hello(&h.socket, h.nonce, &[ro.as_raw_fd()]);
    assert_eq!((w.status, fd.is_none()), (libc::EACCES, true));
    // Another file, read-write: EPERM.
    let other = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
    let (_s, w, fd) = say_hello(&h.socket, h.nonce, &[other.as_file().as_raw_fd()]);
    assert_eq!((w.status, fd.is_none()), (libc::EPERM, true));
    // No descriptor at all: EPERM; the wrong mount's nonce: ESTALE.
    let (_s, w, _) = say_hello(&h.socket, h.nonce, &[]);
    assert_eq!(w.status, libc::EPERM);
    let im = rw(&path);
    let (_s, w, _) = say_hello(&h.socket, h.nonce ^ 1, &[im.as_raw_fd()]);
    assert_eq!(w.status, libc::ESTALE);
    // The image read-write: admitted.
    let (_s, w, fd) = say_hello(&h.socket, h.nonce, &[im.as_raw_fd()]);
    assert_eq!((w.status, fd.is_some()), (0, true));
    drop((_s, f, im));
    m.unmount();
}

#[test]
fn direct_off_and_writeback_refuse_hello() {
    let img = Image::new("direct-off", 64 << 20);
    for opts in ["direct=off", "writeback"] {
        let m = Mounted::new(&img.path, opts);
        let p = write_file(&m, "f", b"x");
        let f = File::open(&p).unwrap();
        assert_eq!(errno_of(hello(&f)), libc::EOPNOTSUPP, "{opts}");
        assert_eq!(errno_of(map(&f, 0, false)), libc::EOPNOTSUPP, "{opts}");
        // No socket either.
        let name = format!("daxlink-direct-{}-", m.pid().unwrap());
        let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
        assert!(!unix.contains(&name), "{opts}: a direct socket exists");
        drop(f);
        m.unmount();
    }
    let m = Mounted::new(&img.path, "direct=on");
    let f = File::open(m.path("f")).unwrap();
    let h = hello(&f).unwrap();
    let name = String::from_utf8_lossy(&h.socket).into_owned();
    assert!(name.starts_with(&format!("daxlink-direct-{}-", m.pid().unwrap())));
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    assert!(unix.contains(&format!("@{name}")));
    drop(f);
    m.unmount();
}

/// `n` connections to `addr` made with effective uid `uid` (SO_PEERCRED
/// records it), from a thread of their own.
fn connect_as(uid: u32, addr: &SocketAddr, n: usize) -> Vec<UnixStream> {
    let addr = addr.clone();
    std::thread::spawn(move || {
        let set = |e: u32| {
            // SAFETY: the raw system call changes only this thread's
            // credentials (glibc's setresuid would change every thread's);
            // it takes three ids by value.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, -1i32, e as i32, -1i32) };
            assert_eq!(r, 0, "setresuid");
        };
        set(uid);
        let v: Vec<UnixStream> = (0..n)
            .map(|_| UnixStream::connect_addr(&addr).unwrap())
            .collect();
        set(0);
        v
    })
    .join()
    .unwrap()
}

/// Rude clients: no Hello, garbage, too many descriptors, an early close.
/// The daemon answers or drops each, leaks no descriptor, and still admits
/// a proper client.
#[test]
fn rude_socket_clients_leak_nothing_and_block_no_one() {
    let img = Image::new("direct-rude", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", b"x");
    let f = File::open(&p).unwrap();
    let h = hello(&f).unwrap();
    let list = |pid: u32| {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.display().to_string())
            .collect();
        v.sort();
        v
    };
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let pid = m.pid().unwrap();
    let ro = File::open(&img.path).unwrap();
    let addr = SocketAddr::from_abstract_name(&h.socket).unwrap();
    // A first client, so that the daemon's own descriptors settle.
    drop(Client::connect(&f));
    std::thread::sleep(Duration::from_millis(200));
    let before = fds(pid);
    let before_list = list(pid);
    // Silent connections of another user, held open: each is dropped after
    // 5 s, and past 8 of one user's at once.
    let silent = connect_as(65534, &addr, 10);
    std::thread::sleep(Duration::from_millis(300));
    let dropped = silent
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut r: &UnixStream = s;
            matches!(r.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert_eq!(
        dropped, 2,
        "one user's silent connections past 8 are dropped"
    );
    for round in 0..20 {
        // Too many descriptors, and more than the daemon reads.
        let many = vec![ro.as_raw_fd(); 3 + round % 20];
        let (_s, w, fd) = say_hello(&h.socket, h.nonce, &many);
        assert_eq!((w.status, fd.is_none()), (libc::EPERM, true));
        // Garbage.
        let s = UnixStream::connect_addr(&addr).unwrap();
        sendmsg::<()>(
            s.as_raw_fd(),
            &[IoSlice::new(b"abc")],
            &[],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; wire::WELCOME_MSG];
        (&s).read_exact(&mut b).unwrap();
        assert_eq!(Welcome::decode(&b).unwrap().status, libc::EPROTO);
        // Gone before it said anything.
        drop(UnixStream::connect_addr(&addr).unwrap());
    }
    // While the silent ones wait, a proper client is admitted at once.
    let t0 = Instant::now();
    drop(Client::connect(&f));
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The silent ones are dropped (end of file within the 5 s, and a bit).
    for mut s in silent {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0);
    }
    let t0 = Instant::now();
    while fds(pid) > before {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the daemon holds {:?}, before {before_list:?}",
            list(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(f);
    m.unmount();
}

/// Clients may store only while the mount is writable and its stores are
/// made durable by cache flushes: remount read-only takes WRITABLE away
/// (and recalls every map), read-write gives it back, an msync image or a
/// read-only mount never has it, and unmount closes the page.
#[test]
fn stores_only_on_a_writable_cpu_flushed_mount() {
    let img = Image::new("direct-ro", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", &pattern(11, 2 * BS));
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    assert_eq!(c.ctl.state(), control::OPEN | control::WRITABLE);
    let r = map(&f, 0, false).unwrap();
    daxlink(&[&"remount", &m.root(), &"-o", &"ro"]);
    assert_eq!(c.ctl.state(), control::OPEN);
    assert!(
        !c.ctl.enter(c.slot, r.bucket, r.gen),
        "remount ro recalled nothing"
    );
    assert_eq!(hello(&f).unwrap().flags & wire::HELLO_WRITABLE, 0);
    daxlink(&[&"remount", &m.root(), &"-o", &"rw"]);
    assert_eq!(c.ctl.state(), control::OPEN | control::WRITABLE);
    assert!(hello(&f).unwrap().flags & wire::HELLO_WRITABLE != 0);
    drop(f);
    m.unmount();
    assert_eq!(c.ctl.state(), 0, "unmount left the page open");
    for opts in ["persist=msync", "ro"] {
        let m = Mounted::new(&img.path, opts);
        let p = m.path("f");
        let f = File::open(&p).unwrap();
        let c = Client::connect(&f);
        assert_eq!(c.hello.flags & wire::HELLO_WRITABLE, 0, "{opts}");
        assert_eq!(c.ctl.state(), control::OPEN, "{opts}");
        if opts != "ro" {
            let w = map(&rw(&p), 0, true).unwrap();
            assert_eq!(w.flags & wire::MAP_WRITE, 0, "{opts}");
            assert!(w.extents.iter().all(|e| e.flags & wire::EXT_WRITE == 0));
        }
        drop((c, f));
        m.unmount();
    }
}

/// FS_IOC_SHUTDOWN closes the control page before the media is cut: no
/// access can begin after it.
#[test]
fn shutdown_closes_the_page() {
    let img = Image::new("direct-down", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let p = write_file(&m, "f", &pattern(13, BS));
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    let r = map(&f, 0, false).unwrap();
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    c.ctl.exit(c.slot);
    let root = File::open(m.root()).unwrap();
    let mut flags = 0u32.to_ne_bytes();
    ioctl::call(&root, Cmd::GOINGDOWN, &mut flags).unwrap();
    assert_eq!(c.ctl.state(), 0);
    assert!(
        !c.ctl.enter(c.slot, r.bucket, r.gen),
        "an access began after shutdown"
    );
    drop((c, f, root));
    m.unmount();
}
