//! daxlink's private ioctls: command numbers and fixed-size, little-endian
//! payloads shared by the daemon (which decodes them) and the `daxlink`
//! command (which issues them).
//!
//! The kernel forwards unknown ioctls on a FUSE file in "restricted" mode: the
//! payload size comes from the command number (`_IOC_SIZE`, at most 16383
//! bytes) and is copied in (`_IOC_WRITE`) and out (`_IOC_READ`). Linux does
//! not forward FICLONERANGE / FIDEDUPERANGE / FIEMAP to FUSE, so these carry
//! the same semantics instead; the clone and dedupe source is named, as
//! there, by a descriptor the caller holds open for reading (the daemon finds
//! it through /proc, see `crate::fuse::caller`).

use std::os::fd::AsRawFd;

use crate::format::Le;

use daxlink_direct::wire::ioc;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

pub const CLONE_SIZE: usize = 40;
pub const DEDUPE_SIZE: usize = 48;
pub const UNSHARE_SIZE: usize = 16;
pub const EXTENT_ENTRY: usize = 32;
pub const EXTENTS_MAX: usize = 500;
pub const EXTENTS_HDR: usize = 16;
pub const EXTENTS_SIZE: usize = EXTENTS_HDR + EXTENTS_MAX * EXTENT_ENTRY;
pub const STAT_SIZE: usize = 48;

/// FICLONERANGE semantics: {src_fd, src_off, dst_off, len (0 = to EOF)} in,
/// {bytes cloned} out at offset 32.
pub const CLONE: u32 = ioc(IOC_READ | IOC_WRITE, 0x40, CLONE_SIZE);
/// FIDEDUPERANGE semantics for one destination: {src_fd, src_off, dst_off, len} in,
/// {status (0 same, 1 differs) at 32, bytes deduped at 40} out.
pub const DEDUPE: u32 = ioc(IOC_READ | IOC_WRITE, 0x41, DEDUPE_SIZE);
/// Give private copies of the shared blocks of {off, len (0 = to EOF)}.
pub const UNSHARE: u32 = ioc(IOC_WRITE, 0x42, UNSHARE_SIZE);
/// In: {start logical block}. Out: {count u32, more u32, next logical block u64,
/// then `count` entries of {logical block, physical block, blocks, refcount u32, 0u32}}.
pub const EXTENTS: u32 = ioc(IOC_READ | IOC_WRITE, 0x43, EXTENTS_SIZE);
/// Out: {shared blocks, saved blocks, refcount records, data blocks, free blocks, record blocks}.
pub const STAT: u32 = ioc(IOC_READ, 0x44, STAT_SIZE);

pub const PIN_SIZE: usize = daxlink_direct::wire::PIN_SIZE;
pub const DMA_MAX: usize = 4096;
pub const DMA_SIZE: usize = 24 + DMA_MAX;
pub const POISON_SIZE: usize = 24;
pub const OWNERS_SIZE: usize = 16016;
pub const PIN_WRITE: u32 = daxlink_direct::wire::PIN_WRITE;
pub const PIN_LONGTERM: u32 = daxlink_direct::wire::PIN_LONGTERM;

/// pin_user_pages on the open file: in {off, len, flags (PIN_WRITE | PIN_LONGTERM)},
/// out {pin id at 24}. The pin ends on UNPIN or when this open file is released.
/// (Numbers in `daxlink_direct::wire`: a direct mmap's client pins too.)
pub const PIN: u32 = daxlink_direct::wire::PIN;
/// in {pin id}.
pub const UNPIN: u32 = daxlink_direct::wire::UNPIN;
/// A device write through a pin: in {pin id, offset in the pinned range, len u32, 0u32, data}.
pub const DMA_WRITE: u32 = ioc(IOC_WRITE, 0x52, DMA_SIZE);
/// A device read through a pin: in {pin id, offset, len u32, 0u32}, out data at 24.
pub const DMA_READ: u32 = ioc(IOC_READ | IOC_WRITE, 0x53, DMA_SIZE);
/// Memory failure of the block under {offset}: out {block at 8, notified owners u32 at 16,
/// all owners u32 at 20}.
pub const POISON: u32 = ioc(IOC_READ | IOC_WRITE, 0x54, POISON_SIZE);
/// Reverse map of the block under {offset}: out {json length u32 at 8, JSON at 16}.
pub const OWNERS: u32 = ioc(IOC_READ | IOC_WRITE, 0x55, OWNERS_SIZE);
/// Invariants 1-7 that do not hold: out {bitmask u64 (bit n = invariant n)}.
pub const CHECK: u32 = ioc(IOC_READ, 0x56, 8);
/// The page model: out {0 legacy, 1 upstream, 2 proxy}.
pub const MODEL: u32 = ioc(IOC_READ, 0x57, 8);
pub const SNAPSHOT_SIZE: usize = 16016;
/// Blocks a SNAPSHOT request may name.
pub const SNAPSHOT_EXTRA_MAX: usize = 64;
/// The whole page model and the files' mappings, for pictures (CAP_SYS_ADMIN):
/// in {count u64, then `count` block numbers u64 to describe as well},
/// out {JSON length u64 at 0, JSON at 16} (`Fs::snapshot`).
pub const SNAPSHOT: u32 = ioc(IOC_READ | IOC_WRITE, 0x58, SNAPSHOT_SIZE);

/// The VFS's own inode-flag ioctls, which the kernel re-sends to a FUSE
/// filesystem (chattr, lsattr, xfs_io chattr/lsattr). GETFLAGS arrives with
/// room for 4 bytes (an int), whatever its number encodes.
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
/// struct fsxattr: {xflags, extsize, nextents, projid, cowextsize u32, pad[8]}.
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
pub const FSXATTR_SIZE: usize = 28;
/// Remount: in {1 = read-only, 0 = read-write}. CAP_SYS_ADMIN. On the mount's root.
pub const REMOUNT: u32 = ioc(IOC_WRITE, 0x60, 8);
pub const OPTIONS_SIZE: usize = 1024;
/// The daemon's mount options, as text (NUL-padded): out {options}.
pub const OPTIONS: u32 = ioc(IOC_READ, 0x61, OPTIONS_SIZE);
/// COUNTERS_SIZE: {flags u64} in; out {flags at 0, then the request
/// counts, u64 each, of fuser's sessions then of the ring threads, by FUSE
/// opcode (64 each)}. On the mount's root; CAP_SYS_ADMIN or its owner.
pub const COUNTERS_SIZE: usize = 8 + 2 * 64 * 8;
/// In `flags`: zero the counters after reading them.
pub const COUNTERS_RESET: u64 = 1;
/// Per-opcode request counters (`crate::fuse::counters`).
pub const COUNTERS: u32 = ioc(IOC_READ | IOC_WRITE, 0x62, COUNTERS_SIZE);
/// FS_IOC_SHUTDOWN = XFS_IOC_GOINGDOWN = EXT4_IOC_SHUTDOWN = `_IOR('X', 125, __u32)`.
/// The kernel forwards it to FUSE as an ordinary ioctl; as `_IOR` it copies no
/// payload in, so the daemon reads the flags from the caller's memory.
pub const GOINGDOWN: u32 = (IOC_READ << 30) | (4 << 16) | ((b'X' as u32) << 8) | 125;

/// FITRIM = `_IOWR('X', 121, struct fstrim_range)`: {start, len, minlen}, u64 each.
pub const FITRIM: u32 = ((IOC_READ | IOC_WRITE) << 30) | (24 << 16) | ((b'X' as u32) << 8) | 121;
pub const FSTRIM_RANGE_SIZE: usize = 24;
/// FS_IOC_GETFSLABEL = `_IOR(0x94, 49, char[FSLABEL_MAX])`.
pub const FS_IOC_GETFSLABEL: u32 = (IOC_READ << 30) | (256 << 16) | (0x94 << 8) | 49;
/// FS_IOC_SETFSLABEL = `_IOW(0x94, 50, char[FSLABEL_MAX])`.
pub const FS_IOC_SETFSLABEL: u32 = (IOC_WRITE << 30) | (256 << 16) | (0x94 << 8) | 50;

/// Direct access (payloads in `daxlink_direct::wire`): HELLO
/// (how to reach this mount directly), MAP (a file's extents and a lease on
/// them), TOUCH (a direct write happened: set mtime and ctime), PINMAP (the
/// blocks of a pin, for a direct mmap).
pub const HELLO: u32 = daxlink_direct::wire::HELLO;
pub const MAP: u32 = daxlink_direct::wire::MAP;
pub const TOUCH: u32 = daxlink_direct::wire::TOUCH;
pub const PINMAP: u32 = daxlink_direct::wire::PINMAP;

/// Every ioctl the daemon serves; any other fails with ENOTTY before
/// anything else is looked at (so a transport may answer those itself).
pub const SERVED: &[u32] = &[
    CLONE,
    DEDUPE,
    UNSHARE,
    EXTENTS,
    STAT,
    PIN,
    UNPIN,
    DMA_WRITE,
    DMA_READ,
    POISON,
    OWNERS,
    CHECK,
    MODEL,
    SNAPSHOT,
    FS_IOC_GETFLAGS,
    FS_IOC_SETFLAGS,
    FS_IOC_FSGETXATTR,
    FS_IOC_FSSETXATTR,
    REMOUNT,
    OPTIONS,
    GOINGDOWN,
    FITRIM,
    FS_IOC_GETFSLABEL,
    FS_IOC_SETFSLABEL,
    COUNTERS,
    HELLO,
    MAP,
    TOUCH,
    PINMAP,
];

/// Arguments of CLONE and DEDUPE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemapArgs {
    /// The source: a descriptor of the calling process, open for reading.
    pub src_fd: u64,
    pub src_off: u64,
    pub dst_off: u64,
    pub len: u64,
}

impl RemapArgs {
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        Le::put64(&mut b, 0, self.src_fd);
        Le::put64(&mut b, 8, self.src_off);
        Le::put64(&mut b, 16, self.dst_off);
        Le::put64(&mut b, 24, self.len);
        b
    }
    pub fn decode(b: &[u8]) -> Option<RemapArgs> {
        if b.len() < 32 {
            return None;
        }
        Some(RemapArgs {
            src_fd: Le::u64(b, 0),
            src_off: Le::u64(b, 8),
            dst_off: Le::u64(b, 16),
            len: Le::u64(b, 24),
        })
    }
}

pub fn get_u64(b: &[u8], off: usize) -> Option<u64> {
    (b.len() >= off + 8).then(|| Le::u64(b, off))
}

pub fn get_u32(b: &[u8], off: usize) -> Option<u32> {
    (b.len() >= off + 4).then(|| Le::u32(b, off))
}

pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    Le::put64(b, off, v)
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    Le::put32(b, off, v)
}

/// One of the ioctls above, the only commands [`call`] issues: its field is
/// private and its values are the associated constants, so safe code cannot
/// turn an arbitrary number into an ioctl through this module.
///
/// ```compile_fail
/// let _ = daxlink::fuse::ioctl::Cmd(0x5401); // TCGETS: not a daxlink command
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmd(u32);

impl Cmd {
    pub const CLONE: Cmd = Cmd(CLONE);
    pub const DEDUPE: Cmd = Cmd(DEDUPE);
    pub const UNSHARE: Cmd = Cmd(UNSHARE);
    pub const EXTENTS: Cmd = Cmd(EXTENTS);
    pub const STAT: Cmd = Cmd(STAT);
    pub const PIN: Cmd = Cmd(PIN);
    pub const UNPIN: Cmd = Cmd(UNPIN);
    pub const DMA_WRITE: Cmd = Cmd(DMA_WRITE);
    pub const DMA_READ: Cmd = Cmd(DMA_READ);
    pub const POISON: Cmd = Cmd(POISON);
    pub const OWNERS: Cmd = Cmd(OWNERS);
    pub const CHECK: Cmd = Cmd(CHECK);
    pub const MODEL: Cmd = Cmd(MODEL);
    pub const SNAPSHOT: Cmd = Cmd(SNAPSHOT);
    pub const FS_IOC_GETFLAGS: Cmd = Cmd(FS_IOC_GETFLAGS);
    pub const FS_IOC_SETFLAGS: Cmd = Cmd(FS_IOC_SETFLAGS);
    pub const FS_IOC_FSGETXATTR: Cmd = Cmd(FS_IOC_FSGETXATTR);
    pub const FS_IOC_FSSETXATTR: Cmd = Cmd(FS_IOC_FSSETXATTR);
    pub const REMOUNT: Cmd = Cmd(REMOUNT);
    pub const OPTIONS: Cmd = Cmd(OPTIONS);
    pub const GOINGDOWN: Cmd = Cmd(GOINGDOWN);
    pub const FITRIM: Cmd = Cmd(FITRIM);
    pub const FS_IOC_GETFSLABEL: Cmd = Cmd(FS_IOC_GETFSLABEL);
    pub const FS_IOC_SETFSLABEL: Cmd = Cmd(FS_IOC_SETFSLABEL);
    pub const COUNTERS: Cmd = Cmd(COUNTERS);
    pub const HELLO: Cmd = Cmd(HELLO);
    pub const MAP: Cmd = Cmd(MAP);
    pub const TOUCH: Cmd = Cmd(TOUCH);
    pub const PINMAP: Cmd = Cmd(PINMAP);

    /// The command number.
    pub const fn number(self) -> u32 {
        self.0
    }

    /// The payload size the number encodes (`_IOC_SIZE`).
    pub const fn size(self) -> usize {
        ((self.0 >> 16) & 0x3fff) as usize
    }
}

/// Issue the daxlink ioctl `cmd` on `fd` with `buf` (exactly
/// `cmd.size()` bytes) as the in/out payload. Returns the ioctl's result.
pub fn call(fd: &impl AsRawFd, cmd: Cmd, buf: &mut [u8]) -> std::io::Result<i32> {
    if buf.len() != cmd.size() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "ioctl buffer does not match the command's size",
        ));
    }
    // SAFETY: `cmd` is one of the daxlink commands (`Cmd` has no other
    // values), each of which makes the kernel (and the daemon behind it)
    // read and write at most `_IOC_SIZE(cmd)` bytes at the pointer; `buf` is
    // a live, exclusively borrowed buffer of exactly that size.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd.number() as _, buf.as_mut_ptr()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_served_and_sized() {
        let all = [
            Cmd::CLONE,
            Cmd::DEDUPE,
            Cmd::UNSHARE,
            Cmd::EXTENTS,
            Cmd::STAT,
            Cmd::PIN,
            Cmd::UNPIN,
            Cmd::DMA_WRITE,
            Cmd::DMA_READ,
            Cmd::POISON,
            Cmd::OWNERS,
            Cmd::CHECK,
            Cmd::MODEL,
            Cmd::SNAPSHOT,
            Cmd::FS_IOC_GETFLAGS,
            Cmd::FS_IOC_SETFLAGS,
            Cmd::FS_IOC_FSGETXATTR,
            Cmd::FS_IOC_FSSETXATTR,
            Cmd::REMOUNT,
            Cmd::OPTIONS,
            Cmd::GOINGDOWN,
            Cmd::FITRIM,
            Cmd::FS_IOC_GETFSLABEL,
            Cmd::FS_IOC_SETFSLABEL,
            Cmd::COUNTERS,
            Cmd::HELLO,
            Cmd::MAP,
            Cmd::TOUCH,
            Cmd::PINMAP,
        ];
        assert_eq!(all.len(), SERVED.len());
        for c in all {
            assert!(SERVED.contains(&c.number()), "{c:?}");
        }
        assert_eq!(Cmd::CLONE.size(), CLONE_SIZE);
        assert_eq!(Cmd::GOINGDOWN.size(), 4);
    }
}
