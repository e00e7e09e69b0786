//! The daemon's side of direct access (issue 23), through real mounts and a
//! minimal client written here with raw system calls (not the client
//! library): HELLO, the image opened by the client itself, the socket's
//! Hello/Welcome, the control page, MAP, loads and stores into the image
//! mapping under enter/exit, recalls, leases, TOUCH, page-cache coherence
//! and `direct=off`.

#[path = "../common/mod.rs"]
mod common;

mod admit;
mod coherence;
mod recall;

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

    /// The daemon keeps the connection open while it counts us admitted.
    fn still_admitted(&self) -> bool {
        let mut b = [0u8; 1];
        self._sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!((&self._sock).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
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
