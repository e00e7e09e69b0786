//! The `daxlink` subcommands that talk to a mounted filesystem through its
//! private ioctls: reflink, dedupe, unshare, extents, stat.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::format::BLOCK_SIZE;
use crate::fuse::ioctl::{self, RemapArgs};

fn open_ro(p: &Path) -> io::Result<File> {
    File::open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

/// A daxlink ioctl on `f`, opened from `p`. Anywhere else the kernel answers
/// ENOTTY; say that plainly, naming the path.
fn on(f: &File, p: &Path, cmd: ioctl::Cmd, buf: &mut [u8]) -> io::Result<i32> {
    ioctl::call(f, cmd, buf).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTTY) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{}: not on a daxlink filesystem", p.display()),
            )
        } else {
            e
        }
    })
}

fn exdev(src: &File, dst: &File) -> io::Result<()> {
    if src.metadata()?.dev() != dst.metadata()?.dev() {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(())
}

/// Clone `len` bytes (0 = to the end of SRC) of SRC at `soff` into DST at
/// `doff`, creating DST if needed. Returns the bytes cloned; a failure keeps
/// the kernel's errno, and a DST this call created is removed again.
pub fn reflink(src: &Path, dst: &Path, soff: u64, doff: u64, len: u64) -> io::Result<u64> {
    reflink_why(src, dst, (soff, doff, len)).map_err(|(e, _)| e)
}

/// [`reflink`], with a failure described for a person: both paths, and why
/// (FICLONERANGE's EINVAL has several causes). What `daxlink reflink` says.
pub fn reflink_described(
    src: &Path,
    dst: &Path,
    soff: u64,
    doff: u64,
    len: u64,
) -> io::Result<u64> {
    reflink_why(src, dst, (soff, doff, len)).map_err(|(e, why)| match why {
        Some(why) => io::Error::new(
            e.kind(),
            format!("{} -> {}: {why}", src.display(), dst.display()),
        ),
        None => e,
    })
}

/// The clone; a failure of the clone itself comes with why, worked out
/// while both files are still open.
fn reflink_why(
    src: &Path,
    dst: &Path,
    (soff, doff, len): (u64, u64, u64),
) -> Result<u64, (io::Error, Option<String>)> {
    let s = open_ro(src).map_err(|e| (e, None))?;
    let named = |e: io::Error| {
        (
            io::Error::new(e.kind(), format!("{}: {e}", dst.display())),
            None,
        )
    };
    let (d, created) = match OpenOptions::new().write(true).create_new(true).open(dst) {
        Ok(d) => (d, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            OpenOptions::new().write(true).open(dst).map_err(named)?,
            false,
        ),
        Err(e) => return Err(named(e)),
    };
    let r = clone_into(&s, &d, dst, (soff, doff, len)).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EXDEV) => {
                "not on the same daxlink filesystem (a clone shares blocks within one)".to_string()
            }
            Some(libc::EINVAL) => clone_einval(&s, &d, (soff, doff, len)),
            _ => e.to_string(),
        };
        (e, Some(why))
    });
    if r.is_err() && created {
        // Only the file this call made, if the name still leads to it.
        let ours = (d.metadata().ok(), std::fs::symlink_metadata(dst).ok());
        if let (Some(a), Some(b)) = ours {
            if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                let _ = std::fs::remove_file(dst);
            }
        }
    }
    r
}

fn clone_into(
    s: &File,
    d: &File,
    dst: &Path,
    (soff, doff, len): (u64, u64, u64),
) -> io::Result<u64> {
    exdev(s, d)?;
    let a = RemapArgs {
        src_fd: s.as_raw_fd() as u64,
        src_off: soff,
        dst_off: doff,
        len,
    };
    let mut buf = a.encode(ioctl::CLONE_SIZE);
    on(d, dst, ioctl::Cmd::CLONE, &mut buf)?;
    Ok(ioctl::get_u64(&buf, 32).unwrap_or(0))
}

/// Why the kernel's FICLONERANGE rules (which daxlink's clone follows)
/// refused a range: what `daxlink reflink` says instead of a bare EINVAL.
pub fn clone_einval(s: &File, d: &File, (soff, doff, len): (u64, u64, u64)) -> String {
    let bs = BLOCK_SIZE;
    let (Ok(sm), Ok(dm)) = (s.metadata(), d.metadata()) else {
        return "invalid argument".into();
    };
    if !sm.is_file() || !dm.is_file() {
        return "both must be regular files".into();
    }
    if soff % bs != 0 || doff % bs != 0 {
        return format!(
            "offsets must be multiples of {bs} (--src-offset {soff}, --dst-offset {doff})"
        );
    }
    let ssize = sm.len();
    let n = if len == 0 {
        ssize.saturating_sub(soff)
    } else {
        len
    };
    let end = soff.saturating_add(n);
    if soff > ssize || end > ssize {
        return format!("the range {soff}..{end} ends past the end of the source ({ssize} bytes)");
    }
    if n % bs != 0 {
        return format!(
            "the length ({n}) must be a multiple of {bs} unless the range ends at the end of the \
             source and not inside the destination"
        );
    }
    if (sm.dev(), sm.ino()) == (dm.dev(), dm.ino()) && doff < end && soff < doff.saturating_add(n) {
        return "the source and destination ranges overlap in the same file".into();
    }
    format!(
        "invalid range (offsets and length must be multiples of {bs} and lie within the source)"
    )
}

/// Share a range of DST with SRC where both hold the same bytes.
/// Returns (identical, bytes deduped).
pub fn dedupe(src: &Path, dst: &Path, soff: u64, doff: u64, len: u64) -> io::Result<(bool, u64)> {
    let s = open_ro(src)?;
    let d = OpenOptions::new().write(true).open(dst)?;
    exdev(&s, &d)?;
    let a = RemapArgs {
        src_fd: s.as_raw_fd() as u64,
        src_off: soff,
        dst_off: doff,
        len,
    };
    let mut buf = a.encode(ioctl::DEDUPE_SIZE);
    on(&d, dst, ioctl::Cmd::DEDUPE, &mut buf)?;
    Ok((
        ioctl::get_u32(&buf, 32) == Some(0),
        ioctl::get_u64(&buf, 40).unwrap_or(0),
    ))
}

pub fn unshare(file: &Path, off: u64, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(file)?;
    let mut buf = vec![0u8; ioctl::UNSHARE_SIZE];
    ioctl::put_u64(&mut buf, 0, off);
    ioctl::put_u64(&mut buf, 8, len);
    on(&f, file, ioctl::Cmd::UNSHARE, &mut buf)?;
    Ok(())
}

/// One extent as `daxlink extents` shows it: logical offset and length in
/// bytes, physical block number, reference count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub refcount: u32,
}

pub fn extents(file: &Path) -> io::Result<Vec<Extent>> {
    let f = open_ro(file)?;
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut buf = vec![0u8; ioctl::EXTENTS_SIZE];
        ioctl::put_u64(&mut buf, 0, start);
        on(&f, file, ioctl::Cmd::EXTENTS, &mut buf)?;
        let n = ioctl::get_u32(&buf, 0).unwrap_or(0) as usize;
        for i in 0..n.min(ioctl::EXTENTS_MAX) {
            let o = ioctl::EXTENTS_HDR + i * ioctl::EXTENT_ENTRY;
            out.push(Extent {
                logical: ioctl::get_u64(&buf, o).unwrap_or(0) * BLOCK_SIZE,
                physical: ioctl::get_u64(&buf, o + 8).unwrap_or(0),
                length: ioctl::get_u64(&buf, o + 16).unwrap_or(0) * BLOCK_SIZE,
                refcount: ioctl::get_u32(&buf, o + 24).unwrap_or(0),
            });
        }
        if ioctl::get_u32(&buf, 4) != Some(1) {
            return Ok(out);
        }
        start = ioctl::get_u64(&buf, 8).unwrap_or(0);
    }
}

pub fn extents_report(e: &[Extent], json: bool) -> String {
    if json {
        let v: Vec<serde_json::Value> = e
            .iter()
            .map(|x| {
                serde_json::json!({
                    "logical": x.logical, "physical": x.physical, "length": x.length,
                    "shared": x.refcount > 1, "refcount": x.refcount,
                })
            })
            .collect();
        return serde_json::Value::Array(v).to_string();
    }
    let mut s = format!(
        "{:>14} {:>12} {:>14} {:>6} {:>8}\n",
        "logical", "physical", "length", "shared", "refcount"
    );
    for x in e {
        s += &format!(
            "{:>14} {:>12} {:>14} {:>6} {:>8}\n",
            x.logical,
            x.physical,
            x.length,
            if x.refcount > 1 { "yes" } else { "no" },
            x.refcount
        );
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub shared_bytes: u64,
    pub saved_bytes: u64,
    pub refcount_records: u64,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub metadata_bytes: u64,
}

pub fn stat(path: &Path) -> io::Result<Stat> {
    let f = open_ro(path)?;
    let mut buf = vec![0u8; ioctl::STAT_SIZE];
    on(&f, path, ioctl::Cmd::STAT, &mut buf)?;
    let g = |i: usize| ioctl::get_u64(&buf, i * 8).unwrap_or(0);
    Ok(Stat {
        shared_bytes: g(0) * BLOCK_SIZE,
        saved_bytes: g(1) * BLOCK_SIZE,
        refcount_records: g(2),
        total_bytes: g(3) * BLOCK_SIZE,
        free_bytes: g(4) * BLOCK_SIZE,
        metadata_bytes: g(5) * BLOCK_SIZE,
    })
}

// ---------------------------------------------------------------------------
// Page model: pins, device DMA, poison, reverse map, invariants
// ---------------------------------------------------------------------------

/// Pin `len` bytes at `off` of the open file `f` (pin_user_pages). The pin
/// lives until [`unpin`] or until `f` is closed.
pub fn pin(f: &File, off: u64, len: u64, write: bool, longterm: bool) -> io::Result<u64> {
    let mut b = vec![0u8; ioctl::PIN_SIZE];
    ioctl::put_u64(&mut b, 0, off);
    ioctl::put_u64(&mut b, 8, len);
    let flags =
        if write { ioctl::PIN_WRITE } else { 0 } | if longterm { ioctl::PIN_LONGTERM } else { 0 };
    ioctl::put_u32(&mut b, 16, flags);
    ioctl::call(f, ioctl::Cmd::PIN, &mut b)?;
    Ok(ioctl::get_u64(&b, 24).unwrap_or(0))
}

pub fn unpin(f: &File, id: u64) -> io::Result<()> {
    let mut b = id.to_le_bytes().to_vec();
    ioctl::call(f, ioctl::Cmd::UNPIN, &mut b)?;
    Ok(())
}

/// A simulated device writes `data` (at most 4096 bytes) through pin `id`.
pub fn dma_write(f: &File, id: u64, off: u64, data: &[u8]) -> io::Result<()> {
    if data.len() > ioctl::DMA_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut b = vec![0u8; ioctl::DMA_SIZE];
    ioctl::put_u64(&mut b, 0, id);
    ioctl::put_u64(&mut b, 8, off);
    ioctl::put_u32(&mut b, 16, data.len() as u32);
    b[24..24 + data.len()].copy_from_slice(data);
    ioctl::call(f, ioctl::Cmd::DMA_WRITE, &mut b)?;
    Ok(())
}

pub fn dma_read(f: &File, id: u64, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let len = len.min(ioctl::DMA_MAX);
    let mut b = vec![0u8; ioctl::DMA_SIZE];
    ioctl::put_u64(&mut b, 0, id);
    ioctl::put_u64(&mut b, 8, off);
    ioctl::put_u32(&mut b, 16, len as u32);
    ioctl::call(f, ioctl::Cmd::DMA_READ, &mut b)?;
    Ok(b[24..24 + len].to_vec())
}

/// Memory failure of the block under `off` of `file`: (block, owners notified, all owners).
pub fn poison(file: &Path, off: u64) -> io::Result<(u64, u32, u32)> {
    let f = open_ro(file)?;
    let mut b = vec![0u8; ioctl::POISON_SIZE];
    ioctl::put_u64(&mut b, 0, off);
    on(&f, file, ioctl::Cmd::POISON, &mut b)?;
    Ok((
        ioctl::get_u64(&b, 8).unwrap_or(0),
        ioctl::get_u32(&b, 16).unwrap_or(0),
        ioctl::get_u32(&b, 20).unwrap_or(0),
    ))
}

/// The reverse map of the block under `off` of `file`, as JSON
/// `{"block","owners":[{"inode","path","offset"}],"pins":[...],"poisoned"}`.
pub fn owners(file: &Path, off: u64) -> io::Result<serde_json::Value> {
    let f = open_ro(file)?;
    let mut b = vec![0u8; ioctl::OWNERS_SIZE];
    ioctl::put_u64(&mut b, 0, off);
    on(&f, file, ioctl::Cmd::OWNERS, &mut b)?;
    let n = ioctl::get_u32(&b, 8).unwrap_or(0) as usize;
    serde_json::from_slice(&b[16..16 + n.min(b.len() - 16)])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Invariants 1-7 that do not hold now in the filesystem holding `path`.
pub fn check(path: &Path) -> io::Result<Vec<u8>> {
    let f = open_ro(path)?;
    let mut b = vec![0u8; 8];
    on(&f, path, ioctl::Cmd::CHECK, &mut b)?;
    let m = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    Ok((1..=7).filter(|i| m & (1 << i) != 0).collect())
}

/// The page model's snapshot (`Fs::snapshot`) of the filesystem holding
/// `path`, also describing the blocks in `extra` (at most
/// `ioctl::SNAPSHOT_EXTRA_MAX`). Root only.
pub fn snapshot(path: &Path, extra: &[u64]) -> io::Result<serde_json::Value> {
    if extra.len() > ioctl::SNAPSHOT_EXTRA_MAX {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let f = open_ro(path)?;
    let mut b = vec![0u8; ioctl::SNAPSHOT_SIZE];
    ioctl::put_u64(&mut b, 0, extra.len() as u64);
    for (i, x) in extra.iter().enumerate() {
        ioctl::put_u64(&mut b, 8 + 8 * i, *x);
    }
    on(&f, path, ioctl::Cmd::SNAPSHOT, &mut b)?;
    let n = ioctl::get_u64(&b, 0).unwrap_or(0) as usize;
    serde_json::from_slice(&b[16..16 + n.min(b.len() - 16)])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
