//! Clone and dedupe of a range between two files: FICLONERANGE and
//! FIDEDUPERANGE, or on a daxlink mount (Linux does not pass those two to a
//! FUSE file system) daxlink's private ioctls with the same semantics
//! (numbers and payloads as `src/fuse/ioctl.rs` defines them: type 'D',
//! CLONE 0x40 of 40 bytes, DEDUPE 0x41 of 48 bytes, little-endian
//! {src_fd, src_off, dst_off, len}; clone answers the bytes cloned at 32,
//! dedupe its status at 32 (0 same, 1 differs) and the bytes at 40).

use libc::c_int;

use crate::sys::{self, R};

const fn daxlink_ioc(nr: u32, size: u32) -> u64 {
    // _IOC(_IOC_READ | _IOC_WRITE, 'D', nr, size)
    ((3u32 << 30) | (size << 16) | ((b'D' as u32) << 8) | nr) as u64
}
const DAXLINK_CLONE: u64 = daxlink_ioc(0x40, 40);
const DAXLINK_DEDUPE: u64 = daxlink_ioc(0x41, 48);
/// _IOWR(0x94, 54, struct file_dedupe_range) (24 bytes).
const FIDEDUPERANGE: u64 = (3u64 << 30) | (24 << 16) | (0x94 << 8) | 54;

fn args(size: usize, src: c_int, soff: u64, doff: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; size];
    for (i, v) in [src as u64, soff, doff, len].into_iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Clone `len` bytes of `src` at `soff` into `dst` at `doff`; the bytes cloned.
pub fn clone(daxlink: bool, src: c_int, soff: u64, dst: c_int, doff: u64, len: u64) -> R<u64> {
    if daxlink {
        let mut b = args(40, src, soff, doff, len);
        sys::ioctl(dst, DAXLINK_CLONE, b.as_mut_ptr().cast())?;
        return Ok(u64_at(&b, 32));
    }
    let mut a = libc::file_clone_range {
        src_fd: src as i64,
        src_offset: soff,
        src_length: len,
        dest_offset: doff,
    };
    sys::ioctl(
        dst,
        libc::FICLONERANGE,
        (&mut a as *mut libc::file_clone_range).cast(),
    )?;
    Ok(len)
}

/// Dedupe `len` bytes of `dst` at `doff` against `src` at `soff`:
/// (identical, bytes deduped).
pub fn dedupe(
    daxlink: bool,
    src: c_int,
    soff: u64,
    dst: c_int,
    doff: u64,
    len: u64,
) -> R<(bool, u64)> {
    if daxlink {
        let mut b = args(48, src, soff, doff, len);
        sys::ioctl(dst, DAXLINK_DEDUPE, b.as_mut_ptr().cast())?;
        return Ok((u64_at(&b, 32) as u32 == 0, u64_at(&b, 40)));
    }
    // struct file_dedupe_range with one file_dedupe_range_info after it.
    let mut b = [0u8; 24 + 32];
    b[0..8].copy_from_slice(&soff.to_le_bytes());
    b[8..16].copy_from_slice(&len.to_le_bytes());
    b[16..18].copy_from_slice(&1u16.to_le_bytes());
    b[24..32].copy_from_slice(&(dst as i64).to_le_bytes());
    b[32..40].copy_from_slice(&doff.to_le_bytes());
    sys::ioctl(src, FIDEDUPERANGE, b.as_mut_ptr().cast())?;
    let status = i32::from_le_bytes(b[48..52].try_into().unwrap());
    if status < 0 {
        return Err(-status);
    }
    Ok((status == 0, u64_at(&b, 40)))
}
