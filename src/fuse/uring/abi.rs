//! The kernel's FUSE-over-io_uring interface, as far as this transport uses
//! it: the per-entry header buffer, the command that travels in a 128-byte
//! submission entry, and the few request and reply layouts the transport
//! decodes and encodes itself. Everything is native-endian, as the
//! FUSE protocol is; every decode is bounds-checked and fails with `None`.

/// `struct fuse_in_header`: the request header (also at the start of a
/// request read from /dev/fuse).
use crate::fs::Attr;

pub const IN_HEADER: usize = 40;
/// `struct fuse_out_header`: the reply header.
pub const OUT_HEADER: usize = 16;
/// The header buffer of one ring entry: the in/out header area (128 bytes),
/// the opcode's own header (128 bytes), then `struct fuse_uring_ent_in_out`.
pub const HEADER_AREA: usize = 128;
pub const OP_AREA: usize = 128;
pub const ENT_IN_OUT: usize = HEADER_AREA + OP_AREA;
pub const HEADERS_LEN: usize = ENT_IN_OUT + 32;

/// `enum fuse_uring_cmd`: the `cmd_op` of an IORING_OP_URING_CMD on /dev/fuse.
pub const CMD_REGISTER: u32 = 1;
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

pub const OP_LOOKUP: u32 = 1;
pub const OP_GETATTR: u32 = 3;
pub const OP_UNLINK: u32 = 10;
pub const OP_OPEN: u32 = 14;
pub const OP_READ: u32 = 15;
pub const OP_WRITE: u32 = 16;
pub const OP_RELEASE: u32 = 18;
pub const OP_GETXATTR: u32 = 22;
pub const OP_FLUSH: u32 = 25;
pub const OP_CREATE: u32 = 35;
pub const OP_IOCTL: u32 = 39;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `struct fuse_uring_cmd_req` in the 80-byte command area of the entry:
/// flags (0), the request being answered, the queue.
pub fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    c[16..18].copy_from_slice(&qid.to_ne_bytes());
    c
}

/// A `struct fuse_in_header` for a request of `len` bytes in all (the
/// transport's own requests to the bridge: FUSE_INIT, FUSE_DESTROY).
pub fn in_header(len: u32, opcode: u32, unique: u64) -> [u8; IN_HEADER] {
    let mut b = [0u8; IN_HEADER];
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..8].copy_from_slice(&opcode.to_ne_bytes());
    b[8..16].copy_from_slice(&unique.to_ne_bytes());
    b
}

/// The fields of `struct fuse_in_header` the transport needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHeader {
    /// Length of the request as /dev/fuse would deliver it: this header,
    /// the opcode's header and the payload.
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    pub fn decode(b: &[u8]) -> Option<InHeader> {
        if b.len() < IN_HEADER {
            return None;
        }
        Some(InHeader {
            len: u32_at(b, 0)?,
            opcode: u32_at(b, 4)?,
            unique: u64_at(b, 8)?,
            nodeid: u64_at(b, 16)?,
            uid: u32_at(b, 24)?,
            gid: u32_at(b, 28)?,
            pid: u32_at(b, 32)?,
        })
    }
}

/// `struct fuse_uring_ent_in_out`: the id to answer with and the payload size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntInOut {
    pub commit_id: u64,
    pub payload_sz: u32,
}

impl EntInOut {
    pub fn decode(headers: &[u8]) -> Option<EntInOut> {
        Some(EntInOut {
            commit_id: u64_at(headers, ENT_IN_OUT + 8)?,
            payload_sz: u32_at(headers, ENT_IN_OUT + 16)?,
        })
    }
}

/// Write the reply header and the payload size of a reply into an entry's
/// header buffer (`error` is 0 or a negative errno).
pub fn set_reply(headers: &mut [u8], unique: u64, error: i32, payload: u32) {
    let len = OUT_HEADER as u32 + payload;
    headers[0..4].copy_from_slice(&len.to_ne_bytes());
    headers[4..8].copy_from_slice(&error.to_ne_bytes());
    headers[8..16].copy_from_slice(&unique.to_ne_bytes());
    headers[ENT_IN_OUT..ENT_IN_OUT + 8].copy_from_slice(&0u64.to_ne_bytes());
    headers[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&payload.to_ne_bytes());
}

/// `struct fuse_read_in` / `struct fuse_write_in` (same layout): the file
/// handle, offset, size, the READ/WRITE flags and the open flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub io_flags: u32,
    pub open_flags: u32,
}

impl Io {
    pub fn decode(op: &[u8]) -> Option<Io> {
        Some(Io {
            fh: u64_at(op, 0)?,
            offset: u64_at(op, 8)?,
            size: u32_at(op, 16)?,
            io_flags: u32_at(op, 20)?,
            open_flags: u32_at(op, 32)?,
        })
    }
}

/// The fields of the opcode headers the ring threads read, by offset:
/// `fuse_open_in` {flags u32, open_flags u32}; `fuse_create_in` {flags,
/// mode, umask, open_flags: u32}; `fuse_release_in` {fh u64, flags u32, ..};
/// `fuse_ioctl_in` {fh u64, flags u32, cmd u32, ..}.
pub fn op_u32(op: &[u8], at: usize) -> Option<u32> {
    u32_at(op, at)
}

pub fn op_u64(op: &[u8], at: usize) -> Option<u64> {
    u64_at(op, at)
}

/// A name in a request's payload: up to its NUL, which must be there.
pub fn name(payload: &[u8]) -> Option<&[u8]> {
    let end = payload.iter().position(|&b| b == 0)?;
    Some(&payload[..end])
}

/// `struct fuse_attr` (88 bytes) for `a`, whose mode is already in the
/// form sent (`wire_mode`).
fn put_attr(b: &mut [u8], a: &Attr, mode: u32) {
    let mut w = Writer { b, at: 0 };
    w.u64(a.ino);
    w.u64(a.size);
    w.u64(a.blocks);
    w.u64(a.atime.sec as u64);
    w.u64(a.mtime.sec as u64);
    w.u64(a.ctime.sec as u64);
    w.u32(a.atime.nsec);
    w.u32(a.mtime.nsec);
    w.u32(a.ctime.nsec);
    w.u32(mode);
    w.u32(a.nlink);
    w.u32(a.uid);
    w.u32(a.gid);
    w.u32(a.rdev);
    w.u32(4096); // blksize
    w.u32(0); // flags
}

struct Writer<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn u64(&mut self, v: u64) {
        self.b[self.at..self.at + 8].copy_from_slice(&v.to_ne_bytes());
        self.at += 8;
    }
    fn u32(&mut self, v: u32) {
        self.b[self.at..self.at + 4].copy_from_slice(&v.to_ne_bytes());
        self.at += 4;
    }
}

pub const ATTR_LEN: usize = 88;
pub const ENTRY_OUT: usize = 40 + ATTR_LEN;
pub const ATTR_OUT: usize = 16 + ATTR_LEN;
pub const OPEN_OUT: usize = 16;

/// `struct fuse_entry_out`: node id, generation, entry and attribute
/// validity (`ttl` seconds), the attributes. `b` holds ENTRY_OUT bytes.
pub fn entry_out(b: &mut [u8], a: &Attr, mode: u32, ttl: u64) -> usize {
    let mut w = Writer { b, at: 0 };
    w.u64(a.ino);
    w.u64(a.generation as u64);
    w.u64(ttl);
    w.u64(ttl);
    w.u32(0);
    w.u32(0);
    put_attr(&mut b[40..40 + ATTR_LEN], a, mode);
    ENTRY_OUT
}

/// `struct fuse_attr_out`: validity, then the attributes.
pub fn attr_out(b: &mut [u8], a: &Attr, mode: u32, ttl: u64) -> usize {
    let mut w = Writer { b, at: 0 };
    w.u64(ttl);
    w.u32(0);
    w.u32(0);
    put_attr(&mut b[16..16 + ATTR_LEN], a, mode);
    ATTR_OUT
}

/// `struct fuse_open_out`: the handle and FOPEN_* flags.
pub fn open_out(b: &mut [u8], fh: u64, flags: u32) -> usize {
    let mut w = Writer { b, at: 0 };
    w.u64(fh);
    w.u32(flags);
    w.u32(0);
    OPEN_OUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_refuse_short_buffers() {
        assert_eq!(InHeader::decode(&[0u8; 39]), None);
        assert_eq!(Io::decode(&[0u8; 35]), None);
        assert_eq!(EntInOut::decode(&[0u8; ENT_IN_OUT + 19]), None);
        assert!(EntInOut::decode(&[0u8; HEADERS_LEN]).is_some());
    }

    #[test]
    fn in_header_fields_at_their_offsets() {
        // struct fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid.
        let mut b = in_header(40, 16, 7).to_vec();
        b[16..24].copy_from_slice(&9u64.to_ne_bytes());
        for (at, v) in [(24, 1000u32), (28, 1001), (32, 4321)] {
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let h = InHeader::decode(&b).unwrap();
        assert_eq!((h.len, h.opcode, h.unique, h.nodeid), (40, 16, 7, 9));
        assert_eq!((h.uid, h.gid, h.pid), (1000, 1001, 4321));
    }

    #[test]
    fn reply_header_round_trip() {
        let mut h = vec![0u8; HEADERS_LEN];
        set_reply(&mut h, 77, -5, 8);
        assert_eq!(u32_at(&h, 0), Some(24));
        assert_eq!(i32::from_ne_bytes(h[4..8].try_into().unwrap()), -5);
        assert_eq!(u64_at(&h, 8), Some(77));
        assert_eq!(EntInOut::decode(&h).unwrap().payload_sz, 8);
        let c = cmd_req(9, 3);
        assert_eq!(u64_at(&c, 8), Some(9));
        assert_eq!(c[16..18], 3u16.to_ne_bytes());
    }

    #[test]
    fn entry_layout() {
        let a = Attr {
            ino: 5,
            size: 4096,
            blocks: 8,
            atime: crate::format::Timespec { sec: -2, nsec: 500 },
            mtime: Default::default(),
            ctime: Default::default(),
            crtime: Default::default(),
            mode: 0o100644,
            nlink: 1,
            uid: 1000,
            gid: 100,
            rdev: 0,
            generation: 9,
        };
        let mut b = vec![0u8; ENTRY_OUT];
        assert_eq!(entry_out(&mut b, &a, 0o100644, 1), 128);
        assert_eq!(u64_at(&b, 0), Some(5));
        assert_eq!(u64_at(&b, 8), Some(9));
        assert_eq!(u64_at(&b, 16), Some(1));
        let at = &b[40..];
        assert_eq!(u64_at(at, 8), Some(4096));
        assert_eq!(u64_at(at, 24), Some((-2i64) as u64));
        assert_eq!(u32_at(at, 48), Some(500));
        assert_eq!(u32_at(at, 60), Some(0o100644));
        assert_eq!(u32_at(at, 68), Some(1000));
        assert_eq!(u32_at(at, 80), Some(4096));
        assert_eq!(name(b"abc\0"), Some(&b"abc"[..]));
        assert_eq!(name(b"abc"), None);
    }

    #[test]
    fn io_fields() {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[8..16].copy_from_slice(&4096u64.to_ne_bytes());
        b[16..20].copy_from_slice(&512u32.to_ne_bytes());
        b[20..24].copy_from_slice(&4u32.to_ne_bytes());
        b[32..36].copy_from_slice(&0o2001u32.to_ne_bytes());
        let io = Io::decode(&b).unwrap();
        assert_eq!(
            io,
            Io {
                fh: 5,
                offset: 4096,
                size: 512,
                io_flags: 4,
                open_flags: 0o2001
            }
        );
    }
}
