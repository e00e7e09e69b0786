//! The kernel's FUSE-over-io_uring interface, as far as this transport uses
//! it: the per-entry header buffer, the command that travels in a 128-byte
//! submission entry, and the few request and reply layouts the transport
//! decodes itself (READ and WRITE). Everything is native-endian, as the
//! FUSE protocol is; every decode is bounds-checked and fails with `None`.

/// `struct fuse_in_header`: the request header (also at the start of a
/// request read from /dev/fuse).
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

pub const OP_READ: u32 = 15;
pub const OP_WRITE: u32 = 16;

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

/// The fields of `struct fuse_in_header` the transport needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHeader {
    /// Length of the request as /dev/fuse would deliver it: this header,
    /// the opcode's header and the payload.
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
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
