//! The daemon's side of direct access (issue 23), through real mounts and a
//! minimal client written here with raw system calls (not the client
//! library): HELLO, the image opened by the client itself, the socket's
//! Hello/Welcome, the control page, MAP, loads and stores into the image
//! mapping under enter/exit, recalls, leases, TOUCH, page-cache coherence
//! and `direct=off`.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use daxlink::fuse::ioctl::{self, Cmd};
use daxlink_direct::control::{self, Control};
use daxlink_direct::persist;
use daxlink_direct::wire::{self, HelloReply, MapReply, Welcome};
use memmap2::MmapRaw;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

const BS: usize = 4096;

fn hello(f: &File) -> std::io::Result<HelloReply> {
    let mut b = vec![0u8; wire::HELLO_SIZE];
    ioctl::call(f, Cmd::HELLO, &mut b)?;
    Ok(HelloReply::decode(&b).expect("HELLO reply"))
}

fn map(f: &File, from: u64, want_write: bool) -> std::io::Result<MapReply> {
    let mut b = Box::new([0u8; wire::MAP_SIZE]);
    let fl = if want_write { wire::MAP_WANT_WRITE } else { 0 };
    wire::map_request(&mut b, from, fl);
    ioctl::call(f, Cmd::MAP, &mut b[..])?;
    Ok(MapReply::decode(&b[..]).expect("MAP reply"))
}

fn touch(f: &File) -> std::io::Result<()> {
    let mut b = wire::TOUCH_MTIME.to_le_bytes().to_vec();
    ioctl::call(f, Cmd::TOUCH, &mut b).map(|_| ())
}

/// Send Hello with `fds` attached; the Welcome and its descriptor.
fn say_hello(name: &[u8], nonce: u64, fds: &[RawFd]) -> (UnixStream, Welcome, Option<OwnedFd>) {
    let addr = SocketAddr::from_abstract_name(name).unwrap();
    let s = UnixStream::connect_addr(&addr).expect("connect to the daemon's socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let msg = wire::Hello { nonce }.encode();
    let cm: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&msg)],
        &cm,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let mut b = [0u8; wire::WELCOME_MSG];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut got = None;
    let n = {
        let mut iov = [IoSliceMut::new(&mut b)];
        let m = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("Welcome");
        for c in m.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                for fd in v {
                    // SAFETY: the kernel installed this descriptor for us.
                    got = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        m.bytes
    };
    assert_eq!(n, wire::WELCOME_MSG);
    (s, Welcome::decode(&b).unwrap(), got)
}

/// A direct client: the image mapped read-write, the control page mapped.
struct Client {
    _sock: UnixStream,
    _ctl_map: MmapRaw,
    ctl: Control,
    img: MmapRaw,
    hello: HelloReply,
    slot: usize,
}

impl Client {
    fn connect(any: &File) -> Client {
        let h = hello(any).expect("HELLO");
        let path = std::ffi::OsStr::from_bytes_(&h.path);
        let image = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the image read-write");
        let (sock, w, fd) = say_hello(&h.socket, h.nonce, &[image.as_raw_fd()]);
        assert_eq!(w.status, 0, "Welcome refused: {w:?}");
        assert_eq!(w.slot_count, 16);
        let memfd = File::from(fd.expect("the control page's descriptor"));
        let ctl_map = MmapRaw::map_raw(&memfd).unwrap();
        // SAFETY: a shared read-write mapping of the whole control page,
        // kept in the Client beside the Control.
        let ctl = unsafe { Control::from_raw(ctl_map.as_mut_ptr(), ctl_map.len()) }.unwrap();
        ctl.check(h.nonce).expect("the control page of this mount");
        let img = MmapRaw::map_raw(&image).unwrap();
        Client {
            _sock: sock,
            _ctl_map: ctl_map,
            ctl,
            img,
            hello: h,
            slot: w.slot_first as usize,
        }
    }

    /// Copy block `pblock` out of the image (inside an access).
    fn load(&self, pblock: u64) -> Vec<u8> {
        let mut v = vec![0u8; BS];
        let off = pblock as usize * BS;
        assert!(off + BS <= self.img.len());
        // SAFETY: inside the mapping (checked); the daemon does not free or
        // move the block while we are inside an access under its map.
        unsafe { std::ptr::copy_nonoverlapping(self.img.as_ptr().add(off), v.as_mut_ptr(), BS) };
        v
    }

    /// Store `data` into the image at block `pblock` and make it durable.
    fn store(&self, pblock: u64, data: &[u8]) {
        let off = pblock as usize * BS;
        assert!(data.len() <= BS && off + BS <= self.img.len());
        let insn = persist::FlushInsn::from_code(self.hello.flush).unwrap();
        // SAFETY: inside the mapping, which nothing in this process borrows.
        unsafe { persist::store_flushed(insn, self.img.as_mut_ptr().add(off), data) };
        persist::fence();
    }
}

/// `OsStr` from bytes (paths from HELLO).
trait FromBytes {
    fn from_bytes_(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytes for std::ffi::OsStr {
    fn from_bytes_(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

fn write_file(m: &Mounted, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = m.path(name);
    std::fs::write(&p, data).unwrap();
    File::open(&p).unwrap().sync_all().unwrap();
    p
}

fn rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

#[test]
fn a_client_reads_a_block_straight_from_the_image() {
    let img = Image::new("direct-read", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let data = pattern(1, 3 * BS);
    let p = write_file(&m, "f", &data);
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
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
    drop((c, f, wo));
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

/// Run `truncate -s 0 P` in the background.
fn truncate_bg(p: &Path) -> std::process::Child {
    Command::new("truncate")
        .args(["-s", "0"])
        .arg(p)
        .stderr(Stdio::null())
        .spawn()
        .expect("truncate(1)")
}

fn finished_within(c: &mut std::process::Child, d: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        if let Some(st) = c.try_wait().unwrap() {
            assert!(st.success());
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_truncate_waits_for_an_access_and_not_for_a_dead_client() {
    let img = Image::new("direct-recall", 64 << 20);
    // A long recall deadline: only the end of the access (or of its
    // process) may let the truncate go on.
    let m = Mounted::new(&img.path, "recall_timeout_ms=60000");
    let p = write_file(&m, "f", &pattern(2, 2 * BS));
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    let r = map(&f, 0, false).unwrap();
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    let mut t = truncate_bg(&p);
    assert!(
        !finished_within(&mut t, Duration::from_millis(700)),
        "truncate went on while a client was inside an access"
    );
    let before = c.load(r.extents[0].pblock);
    assert_eq!(
        &before[..64],
        &pattern(2, 64)[..],
        "the block is still the file's"
    );
    c.ctl.exit(c.slot);
    assert!(
        finished_within(&mut t, Duration::from_secs(10)),
        "truncate never finished"
    );
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    assert!(
        !c.ctl.enter(c.slot, r.bucket, r.gen),
        "the old map was recalled"
    );

    // A client process that dies inside an access: the truncate goes on.
    let p2 = write_file(&m, "g", &pattern(3, BS));
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_enter_and_wait",
            "--ignored",
            "--nocapture",
        ])
        .env("DAXLINK_DIRECT_HELPER", &p2)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    while !line.starts_with("entered") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
    }
    let mut t = truncate_bg(&p2);
    assert!(
        !finished_within(&mut t, Duration::from_millis(700)),
        "truncate went on while the helper was inside an access"
    );
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(
        finished_within(&mut t, Duration::from_secs(10)),
        "a dead client's slot held the truncate"
    );
    drop((c, f));
    m.unmount();
    fsck_clean(&img.path);
}

/// Run by the test above in a process of its own: enter an access on the
/// file named by DAXLINK_DIRECT_HELPER and never leave it.
#[test]
#[ignore = "a helper process of a_truncate_waits_for_an_access_and_not_for_a_dead_client"]
fn helper_enter_and_wait() {
    let Some(p) = std::env::var_os("DAXLINK_DIRECT_HELPER") else {
        panic!("run only by a_truncate_waits_for_an_access_and_not_for_a_dead_client");
    };
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    let r = map(&f, 0, false).unwrap();
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    println!("entered");
    std::thread::sleep(Duration::from_secs(120));
}

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
    // (cache=keep).
    let early = File::open(&p).unwrap();
    let mut b = vec![0u8; 2 * BS];
    early.read_exact_at(&mut b, 0).unwrap();
    // The first writable lease drops what the kernel cached: the early
    // reader (no open since, which would drop it too) sees a direct store.
    let r = map(&f, 0, true).unwrap();
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
    early.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(
        seen, one,
        "the reader opened before the lease read a stale page"
    );
    // Kernel-path opens now bypass the page cache (FOPEN_DIRECT_IO): what
    // they read is not served again from the cache after the next store.
    File::open(&p).unwrap().read_exact(&mut seen).unwrap();
    assert_eq!(seen, one);
    let two = pattern(8, BS);
    store(&two);
    File::open(&p).unwrap().read_exact(&mut seen).unwrap();
    assert_eq!(seen, two, "a kernel-path open read a stale page");
    drop((c, f, early));
    m.unmount();
    fsck_clean(&img.path);
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
