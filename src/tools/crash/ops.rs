//! The operations workloads are made of and [`Workload`], a named sequence
//! of them: [`Op`] (what each does to the
//! filesystem through the core API, and the paths it touches), the file set
//! they name and the data they write. Shared by the base images (`base.rs`),
//! which are made by running operations, and the workloads (`workload.rs`).

use super::direct::Client;
use super::rng::hash_str;
use crate::error::FsResult;
use crate::format::{BLOCK_SIZE, ROOT_INO};
use crate::fs::{Cred, Fs};

pub(super) const BS: u64 = BLOCK_SIZE;
/// Size of the test filesystem (the smallest mkfs makes).
pub const IMAGE_BLOCKS: u64 = crate::fs::make::MIN_BLOCKS;

pub const FILES: [&str; 4] = ["A/foo", "A/bar", "B/foo", "B/bar"];
pub const DIRS: [&str; 2] = ["A/C", "B/C"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameFlags {
    Plain,
    NoReplace,
    Exchange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Mode 0 (may extend the size).
    Alloc,
    /// KEEP_SIZE.
    KeepSize,
    /// PUNCH_HOLE | KEEP_SIZE.
    Punch,
    /// ZERO_RANGE.
    Zero,
}

/// One filesystem operation of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Create {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `overwrite` only names it (a write inside the file vs past its end).
    Write {
        path: String,
        off: u64,
        len: u64,
        overwrite: bool,
    },
    Append {
        path: String,
        len: u64,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Fallocate {
        path: String,
        off: u64,
        len: u64,
        mode: Falloc,
    },
    Rename {
        from: String,
        to: String,
        flags: RenameFlags,
    },
    Link {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    SetXattr {
        path: String,
        name: String,
        len: u64,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Fsync {
        path: String,
        data_only: bool,
    },
    /// FICLONERANGE.
    Clone {
        src: String,
        dst: String,
        soff: u64,
        doff: u64,
        len: u64,
    },
    CopyRange {
        src: String,
        dst: String,
        soff: u64,
        doff: u64,
        len: u64,
    },
    Dedupe {
        src: String,
        dst: String,
        soff: u64,
        doff: u64,
        len: u64,
    },
    /// Open the file, unlink it, and keep it open (an orphan until unmount).
    UnlinkOpen {
        path: String,
    },
    /// Pin the first block through an open file (pin_user_pages), then
    /// truncate to `size`: the proxy page model defers the pinned block's
    /// free with an orphan record. The pin is kept (DRAM only).
    PinTruncate {
        path: String,
        size: u64,
    },
    /// The UNSHARE ioctl (`len` 0: to EOF).
    Unshare {
        path: String,
        off: u64,
        len: u64,
    },
    /// A write pin through an open file (fallocate of its holes, then
    /// unshare); the pin is kept (DRAM only).
    PinWrite {
        path: String,
        off: u64,
        len: u64,
    },
    /// pwrite by a direct-access client (`direct.rs`): stored into the
    /// file's blocks where its map allows, else through the kernel path.
    DirectWrite {
        path: String,
        off: u64,
        len: u64,
    },
    /// fsync by the direct-access client: its pending TOUCH, then fsync.
    DirectFsync {
        path: String,
    },
}

/// Deterministic, non-zero, position-dependent bytes.
pub fn pattern(seed: u64, off: u64, len: u64) -> Vec<u8> {
    (off..off + len)
        .map(|i| ((seed.wrapping_mul(131).wrapping_add(i.wrapping_mul(7))) % 251 + 1) as u8)
        .collect()
}

pub(super) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Inode of a path ("" = root).
pub fn resolve(fs: &Fs, path: &str) -> FsResult<u64> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part.as_bytes())?.ino;
    }
    Ok(ino)
}

fn parent(fs: &Fs, path: &str) -> FsResult<(u64, Vec<u8>)> {
    let (p, n) = split(path);
    Ok((resolve(fs, p)?, n.as_bytes().to_vec()))
}

impl Op {
    /// Stable name: `kind:arg:arg...` (no spaces, usable on a command line).
    pub fn name(&self) -> String {
        match self {
            Op::Create { path } => format!("create:{path}"),
            Op::Mkdir { path } => format!("mkdir:{path}"),
            Op::Symlink { path, .. } => format!("symlink:{path}"),
            Op::Write {
                path,
                off,
                len,
                overwrite,
            } => format!(
                "{}:{path}:{off}:{len}",
                if *overwrite { "overwrite" } else { "write" }
            ),
            Op::Append { path, len } => format!("append:{path}:{len}"),
            Op::Truncate { path, size } => format!("truncate:{path}:{size}"),
            Op::Fallocate {
                path,
                off,
                len,
                mode,
            } => {
                let k = match mode {
                    Falloc::Alloc => "falloc",
                    Falloc::KeepSize => "falloc-keep",
                    Falloc::Punch => "punch",
                    Falloc::Zero => "zero",
                };
                format!("{k}:{path}:{off}:{len}")
            }
            Op::Rename { from, to, flags } => {
                let k = match flags {
                    RenameFlags::Plain => "rename",
                    RenameFlags::NoReplace => "rename-noreplace",
                    RenameFlags::Exchange => "rename-exchange",
                };
                format!("{k}:{from}:{to}")
            }
            Op::Link { from, to } => format!("link:{from}:{to}"),
            Op::Unlink { path } => format!("unlink:{path}"),
            Op::Rmdir { path } => format!("rmdir:{path}"),
            Op::SetXattr { path, name, len } => format!("setxattr:{path}:{name}:{len}"),
            Op::RemoveXattr { path, name } => format!("removexattr:{path}:{name}"),
            Op::Fsync { path, data_only } => {
                format!("{}:{path}", if *data_only { "fdatasync" } else { "fsync" })
            }
            Op::Clone {
                src,
                dst,
                soff,
                doff,
                len,
            } => format!("clone:{src}:{dst}:{soff}:{doff}:{len}"),
            Op::CopyRange {
                src,
                dst,
                soff,
                doff,
                len,
            } => format!("copy_range:{src}:{dst}:{soff}:{doff}:{len}"),
            Op::Dedupe {
                src,
                dst,
                soff,
                doff,
                len,
            } => format!("dedupe:{src}:{dst}:{soff}:{doff}:{len}"),
            Op::UnlinkOpen { path } => format!("unlink-open:{path}"),
            Op::PinTruncate { path, size } => format!("pin-truncate:{path}:{size}"),
            Op::Unshare { path, off, len } => format!("unshare:{path}:{off}:{len}"),
            Op::PinWrite { path, off, len } => format!("pin-write:{path}:{off}:{len}"),
            Op::DirectWrite { path, off, len } => format!("direct-write:{path}:{off}:{len}"),
            Op::DirectFsync { path } => format!("direct-fsync:{path}"),
        }
    }

    /// The operation kind (the name's first field).
    pub fn kind(&self) -> String {
        self.name().split(':').next().unwrap_or("").to_string()
    }

    /// Paths this operation reads or changes.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::Create { path }
            | Op::Mkdir { path }
            | Op::Symlink { path, .. }
            | Op::Write { path, .. }
            | Op::Append { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::Unlink { path }
            | Op::Rmdir { path }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Fsync { path, .. }
            | Op::UnlinkOpen { path }
            | Op::PinTruncate { path, .. }
            | Op::Unshare { path, .. }
            | Op::PinWrite { path, .. }
            | Op::DirectWrite { path, .. }
            | Op::DirectFsync { path } => vec![path],
            Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
            Op::Clone { src, dst, .. }
            | Op::CopyRange { src, dst, .. }
            | Op::Dedupe { src, dst, .. } => vec![src, dst],
        }
    }

    /// The bytes a write of this operation stores at `off`.
    pub fn data(&self, off: u64, len: u64) -> Vec<u8> {
        pattern(hash_str(&self.name()), off, len)
    }

    /// Run it against a mounted filesystem, direct writes through `client`.
    pub fn apply(&self, fs: &Fs, client: &mut Client) -> FsResult<()> {
        let c = Cred::ROOT;
        let tag = hash_str(&self.name());
        match self {
            Op::Create { path } => {
                let (p, n) = parent(fs, path)?;
                fs.mknod(p, &n, libc::S_IFREG | 0o644, 0, c)?;
            }
            Op::Mkdir { path } => {
                let (p, n) = parent(fs, path)?;
                fs.mkdir(p, &n, 0o755, c)?;
            }
            Op::Symlink { path, target } => {
                let (p, n) = parent(fs, path)?;
                fs.symlink(p, &n, target.as_bytes(), c)?;
            }
            Op::Write { path, off, len, .. } => {
                let ino = resolve(fs, path)?;
                fs.write(ino, *off, &pattern(tag, *off, *len), false)?;
            }
            Op::Append { path, len } => {
                let ino = resolve(fs, path)?;
                let size = fs.getattr(ino)?.size;
                fs.write(ino, 0, &pattern(tag, size, *len), true)?;
            }
            Op::Truncate { path, size } => {
                fs.truncate(resolve(fs, path)?, *size)?;
            }
            Op::Fallocate {
                path,
                off,
                len,
                mode,
            } => {
                let m = match mode {
                    Falloc::Alloc => 0,
                    Falloc::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
                    Falloc::Punch => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    Falloc::Zero => libc::FALLOC_FL_ZERO_RANGE,
                };
                fs.fallocate(resolve(fs, path)?, *off, *len, m)?;
            }
            Op::Rename { from, to, flags } => {
                let (p, n) = parent(fs, from)?;
                let (np, nn) = parent(fs, to)?;
                let f = match flags {
                    RenameFlags::Plain => 0,
                    RenameFlags::NoReplace => libc::RENAME_NOREPLACE,
                    RenameFlags::Exchange => libc::RENAME_EXCHANGE,
                };
                fs.rename(p, &n, np, &nn, f)?;
            }
            Op::Link { from, to } => {
                let ino = resolve(fs, from)?;
                let (np, nn) = parent(fs, to)?;
                fs.link(ino, np, &nn)?;
            }
            Op::Unlink { path } => {
                let (p, n) = parent(fs, path)?;
                fs.unlink(p, &n)?;
            }
            Op::Rmdir { path } => {
                let (p, n) = parent(fs, path)?;
                fs.rmdir(p, &n)?;
            }
            Op::SetXattr { path, name, len } => {
                let v = pattern(tag, 0, *len);
                fs.setxattr(resolve(fs, path)?, name.as_bytes(), Some(&v), 0)?;
            }
            Op::RemoveXattr { path, name } => {
                fs.setxattr(resolve(fs, path)?, name.as_bytes(), None, 0)?;
            }
            // daxlink's core has one fsync (it only fences); fdatasync maps to it.
            Op::Fsync { path, .. } => fs.fsync(resolve(fs, path)?)?,
            Op::Clone {
                src,
                dst,
                soff,
                doff,
                len,
            } => {
                fs.clone_range(resolve(fs, src)?, *soff, resolve(fs, dst)?, *doff, *len)?;
            }
            Op::CopyRange {
                src,
                dst,
                soff,
                doff,
                len,
            } => {
                fs.copy_range(resolve(fs, src)?, *soff, resolve(fs, dst)?, *doff, *len)?;
            }
            Op::UnlinkOpen { path } => {
                let ino = resolve(fs, path)?;
                fs.open(ino)?;
                let (p, n) = parent(fs, path)?;
                fs.unlink(p, &n)?;
            }
            Op::PinTruncate { path, size } => {
                let ino = resolve(fs, path)?;
                let fh = fs.open(ino)?;
                fs.pin(ino, fh, 0, BS.min(fs.getattr(ino)?.size), false, true)?;
                fs.truncate(ino, *size)?;
            }
            Op::Dedupe {
                src,
                dst,
                soff,
                doff,
                len,
            } => {
                fs.dedupe_range(resolve(fs, src)?, *soff, resolve(fs, dst)?, *doff, *len)?;
            }
            Op::Unshare { path, off, len } => fs.unshare(resolve(fs, path)?, *off, *len)?,
            Op::PinWrite { path, off, len } => {
                let ino = resolve(fs, path)?;
                let fh = fs.open(ino)?;
                fs.pin(ino, fh, *off, *len, true, false)?;
            }
            Op::DirectWrite { path, off, len } => {
                client.write(fs, resolve(fs, path)?, *off, &pattern(tag, *off, *len))?;
            }
            Op::DirectFsync { path } => client.fsync(fs, resolve(fs, path)?)?,
        }
        Ok(())
    }
}

/// A named sequence of operations.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub ops: Vec<Op>,
    /// Starts from the big base image (`base.rs`), not the small one.
    pub big: bool,
}

impl Workload {
    pub(super) fn new(prefix: &str, ops: Vec<Op>) -> Workload {
        let name = if ops.is_empty() {
            format!("{prefix}/mount-unmount")
        } else {
            format!(
                "{prefix}/{}",
                ops.iter().map(|o| o.name()).collect::<Vec<_>>().join("+")
            )
        };
        Workload {
            name,
            ops,
            big: prefix == "big",
        }
    }

    /// Operations whose fences produce crash points: the workload's own ops
    /// (1..=n), or mount (0) and unmount (1) for the empty workload.
    pub fn crash_ops(&self) -> (usize, usize) {
        if self.ops.is_empty() {
            (0, 1)
        } else {
            (1, self.ops.len())
        }
    }
}
