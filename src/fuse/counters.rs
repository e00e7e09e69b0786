//! Per-opcode request counters: how many requests of each FUSE opcode
//! reached the daemon since mount (or the last reset), split by who served
//! them: fuser's sessions (`dev`: /dev/fuse, or the io_uring transport's
//! bridge) or an io_uring queue thread itself (`ring`). Read and reset with
//! the COUNTERS ioctl on the mount's root (`daxlink counters`).
//!
//! A request is counted where it enters our code: `guarded` (every handler
//! runs in it, also on the long-operation threads, once per request) for
//! the fuser side, and the queue's `serve` for the requests a ring thread
//! answers itself. Not counted: what fuser answers without calling us
//! (INIT, DESTROY, FORGET, BATCH_FORGET, INTERRUPT, and the opcodes our
//! `Filesystem` does not implement, which fuser's defaults answer ENOSYS:
//! GETLK, SETLK, SETLKW, ACCESS, BMAP, POLL, TMPFILE, STATX, SYNCFS, ...).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// Opcodes are below this (FUSE_STATX is 52).
pub const OPCODES: usize = 64;
/// Index of the transport in the counters: fuser's sessions, ring threads.
pub const DEV: usize = 0;
pub const RING: usize = 1;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
/// One daemon serves one mount, so the counters are the process's.
static COUNTS: [[AtomicU64; OPCODES]; 2] = [[ZERO; OPCODES], [ZERO; OPCODES]];

thread_local! {
    /// Set on the io_uring queue threads: they count what they serve
    /// themselves (`ring`), so `guarded` there does not count again.
    static ON_RING: Cell<bool> = const { Cell::new(false) };
}

/// The FUSE opcode names (linux/fuse.h), by number.
pub const NAMES: &[(u32, &str)] = &[
    (1, "LOOKUP"),
    (2, "FORGET"),
    (3, "GETATTR"),
    (4, "SETATTR"),
    (5, "READLINK"),
    (6, "SYMLINK"),
    (8, "MKNOD"),
    (9, "MKDIR"),
    (10, "UNLINK"),
    (11, "RMDIR"),
    (12, "RENAME"),
    (13, "LINK"),
    (14, "OPEN"),
    (15, "READ"),
    (16, "WRITE"),
    (17, "STATFS"),
    (18, "RELEASE"),
    (20, "FSYNC"),
    (21, "SETXATTR"),
    (22, "GETXATTR"),
    (23, "LISTXATTR"),
    (24, "REMOVEXATTR"),
    (25, "FLUSH"),
    (26, "INIT"),
    (27, "OPENDIR"),
    (28, "READDIR"),
    (29, "RELEASEDIR"),
    (30, "FSYNCDIR"),
    (31, "GETLK"),
    (32, "SETLK"),
    (33, "SETLKW"),
    (34, "ACCESS"),
    (35, "CREATE"),
    (36, "INTERRUPT"),
    (37, "BMAP"),
    (38, "DESTROY"),
    (39, "IOCTL"),
    (40, "POLL"),
    (42, "BATCH_FORGET"),
    (43, "FALLOCATE"),
    (44, "READDIRPLUS"),
    (45, "RENAME2"),
    (46, "LSEEK"),
    (47, "COPY_FILE_RANGE"),
    (50, "SYNCFS"),
    (51, "TMPFILE"),
    (52, "STATX"),
];

/// The name of opcode `op` (its number if it has none).
pub fn name(op: u32) -> String {
    NAMES
        .iter()
        .find(|(n, _)| *n == op)
        .map_or_else(|| format!("OP{op}"), |(_, s)| s.to_string())
}

/// The opcode a handler names itself by in `guarded`. RENAME and RENAME2
/// reach one handler and count as RENAME.
fn opcode(what: &str) -> Option<u32> {
    Some(match what {
        "lookup" => 1,
        "getattr" => 3,
        "setattr" => 4,
        "readlink" => 5,
        "symlink" => 6,
        "mknod" => 8,
        "mkdir" => 9,
        "unlink" => 10,
        "rmdir" => 11,
        "rename" => 12,
        "link" => 13,
        "open" => 14,
        "read" => 15,
        "write" => 16,
        "statfs" => 17,
        "release" => 18,
        "fsync" => 20,
        "setxattr" => 21,
        "getxattr" => 22,
        "listxattr" => 23,
        "removexattr" => 24,
        "flush" => 25,
        "opendir" => 27,
        "readdir" => 28,
        "releasedir" => 29,
        "fsyncdir" => 30,
        "create" => 35,
        "ioctl" => 39,
        "fallocate" => 43,
        "readdirplus" => 44,
        "lseek" => 46,
        "copy_file_range" => 47,
        _ => return None,
    })
}

/// Count one request that entered `guarded` as `what` (not on a ring thread).
pub(super) fn entered(what: &str) {
    if ON_RING.with(Cell::get) {
        return;
    }
    match opcode(what) {
        Some(op) => bump(DEV, op),
        None => log::debug!("counters: no opcode for {what}"),
    }
}

/// Count one request of opcode `op` served by transport `t`.
pub fn bump(t: usize, op: u32) {
    if let Some(c) = COUNTS[t].get(op as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Mark the calling thread as an io_uring queue thread.
pub fn on_ring_thread() {
    ON_RING.with(|r| r.set(true));
}

/// Every counter, `[transport][opcode]`; zeroed afterwards if `reset`.
pub fn read(reset: bool) -> [[u64; OPCODES]; 2] {
    let mut out = [[0; OPCODES]; 2];
    for (t, row) in COUNTS.iter().enumerate() {
        for (op, c) in row.iter().enumerate() {
            out[t][op] = if reset {
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            };
        }
    }
    out
}

impl DaxFuse {
    /// The COUNTERS ioctl (`crate::fuse::ioctl::COUNTERS`), on the mount's root
    /// only (EINVAL elsewhere): for CAP_SYS_ADMIN in the mount's namespace or
    /// the owner of the root directory (EPERM for anyone else), as the
    /// counts tell what other users do.
    pub(super) fn counters_ioctl(
        &self,
        o: Origin,
        ino: u64,
        input: &[u8],
    ) -> Result<Vec<u8>, FsError> {
        use crate::fuse::ioctl as io;
        if ino != fuser::INodeNo::ROOT.0 {
            return Err(FsError::Invalid);
        }
        let flags = io::get_u64(input, 0).ok_or(FsError::Invalid)?;
        if flags & !io::COUNTERS_RESET != 0 {
            return Err(FsError::Invalid);
        }
        let owner = self.fs.getattr(ino)?.uid;
        if o.uid != owner && !o.caller().has_cap(who::CAP_SYS_ADMIN) {
            return Err(FsError::Perm);
        }
        let counts = read(flags & io::COUNTERS_RESET != 0);
        let mut out = vec![0u8; io::COUNTERS_SIZE];
        io::put_u64(&mut out, 0, flags);
        for (t, row) in counts.iter().enumerate() {
            for (op, v) in row.iter().enumerate() {
                io::put_u64(&mut out, 8 + (t * OPCODES + op) * 8, *v);
            }
        }
        Ok(out)
    }
}
