//! A direct-access client as the crash harness runs it: the stores a
//! process makes into a file's blocks through its own mapping of the image
//! (client/src/access.rs), recorded like every other store.
//!
//! A real client stores with `daxlink_direct::persist` into its own mapping:
//! raw pointers the media's recorder never sees. Here each access makes the
//! same stores through the media API in the same order: every physically
//! contiguous piece is stored and written back (`Media::write_flushed`: a
//! store and a flush of its lines, as `persist::store_flushed_nt_from`,
//! whose non-temporal body is durable at the next fence just like a flushed
//! store), then one fence (`persist::fence`) ends the access. What is mapped
//! and writable comes from the code the daemon serves MAP with
//! ([`Fs::lease_map`], the EXT_WRITE rule, and the lease table), the times
//! from the code TOUCH runs ([`Fs::touch_direct`]), and the generation
//! check from a [`Recall`] hook installed in the filesystem, as the daemon's
//! (`fuse/direct`), which bumps a bucket's generation wherever the core
//! recalls. So a map taken before a clone, punch or truncate is stale at
//! the next access, which maps again and takes the kernel path for what is
//! no longer the file's own. Not modelled: the FUSE edge's checks of the
//! open file (readable, writable), the control page's slots (one thread,
//! nobody to wait for) and the 10 ms TOUCH clock (every direct write after
//! an open file's first one leaves its TOUCH pending until fsync, as writes
//! closer than 10 ms apart do).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use daxlink_direct::control::bucket_of;
use daxlink_direct::wire::MAP_MAX;
use parking_lot::Mutex;

use super::oracle::Snapshot;
use super::Bug;
use crate::error::FsResult;
use crate::format::BLOCK_SIZE;
use crate::fs::{Fs, LeaseMap, Recall};

const BS: u64 = BLOCK_SIZE;
/// Tries of an access whose map went stale under it before the kernel path
/// (client/src/access.rs `TRIES`).
const TRIES: usize = 3;

/// The generations of the control page, bumped where the daemon's recall
/// hook bumps them.
#[derive(Default)]
struct Gens {
    t: Mutex<GenTable>,
}

#[derive(Default)]
struct GenTable {
    bucket: HashMap<u32, u64>,
    /// Added to every bucket's generation (`recall_all`).
    all: u64,
    /// The state word: (OPEN, WRITABLE) as the last `recall_all` set it.
    closed: bool,
    read_only: bool,
}

impl Gens {
    fn gen(&self, b: u32) -> u64 {
        let t = self.t.lock();
        t.all + t.bucket.get(&b).copied().unwrap_or(0)
    }

    /// `Control::enter` and `mount::live` for a write: the map's
    /// generation is current and the page says OPEN and WRITABLE.
    fn enter(&self, b: u32, gen: u64) -> bool {
        let t = self.t.lock();
        !t.closed && !t.read_only && t.all + t.bucket.get(&b).copied().unwrap_or(0) == gen
    }
}

impl Recall for Gens {
    fn recall(&self, ino: u64) {
        *self.t.lock().bucket.entry(bucket_of(ino)).or_default() += 1;
    }

    fn recall_all(&self, open: bool, writable: bool) {
        let mut t = self.t.lock();
        t.all += 1;
        t.closed = !open;
        t.read_only = !writable;
    }
}

/// One open file of the client.
struct Open {
    fh: u64,
    /// The map window held, and the block it was asked from.
    map: Option<(u64, LeaseMap)>,
    touched: bool,
    pending: bool,
}

/// What a direct write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Stored directly into the file's blocks.
    Direct,
    /// Through the kernel (the real pwrite): the map did not cover it.
    Kernel,
}

/// The client process of a workload: its open files and maps.
pub struct Client {
    gens: Arc<Gens>,
    files: HashMap<u64, Open>,
    bug: Option<Bug>,
    /// How the last write that returned went.
    pub last: Option<Path>,
    pub counts: Counts,
}

/// What the client did in a workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes stored directly.
    pub direct: u64,
    /// Writes that took the kernel path.
    pub kernel: u64,
    /// Accesses whose map a recall had made stale (mapped again).
    pub stale: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.direct += o.direct;
        self.kernel += o.kernel;
        self.stale += o.stale;
    }
}

impl Client {
    /// A client of `fs` (installs the recall hook, as a mount with direct
    /// access does). `bug`: a client-side bug to plant, if it is one.
    pub fn attach(fs: &Fs, bug: Option<Bug>) -> Client {
        let gens = Arc::new(Gens::default());
        fs.set_recall(gens.clone());
        Client {
            gens,
            files: HashMap::new(),
            bug,
            last: None,
            counts: Counts::default(),
        }
    }

    /// pwrite(fd, data, off) under the client library.
    pub fn write(&mut self, fs: &Fs, ino: u64, off: u64, data: &[u8]) -> FsResult<Path> {
        self.last = None;
        let p = self.write_inner(fs, ino, off, data)?;
        self.last = Some(p);
        match p {
            Path::Direct => self.counts.direct += 1,
            Path::Kernel => self.counts.kernel += 1,
        }
        Ok(p)
    }

    fn write_inner(&mut self, fs: &Fs, ino: u64, off: u64, data: &[u8]) -> FsResult<Path> {
        let gens = self.gens.clone();
        let bug = self.bug;
        let counts = &mut self.counts;
        let len = data.len() as u64;
        let o = open(&mut self.files, fs, ino)?;
        let lb = off / BS;
        for _ in 0..TRIES {
            // MAP from the range's first block unless the window holds it.
            let held = o
                .map
                .as_ref()
                .is_some_and(|(from, m)| *from <= lb && m.next.is_none_or(|n| lb < n));
            if !held {
                let m = fs.lease_map(ino, lb, MAP_MAX, true, &mut || gens.gen(bucket_of(ino)))?;
                fs.pages
                    .leases
                    .grant(o.fh, std::process::id(), 0, ino, true);
                o.map = Some((lb, m));
            }
            let (_, m) = o.map.as_ref().expect("mapped");
            let Some(pieces) = cover(m, off, len) else {
                break;
            };
            let stale = !gens.enter(bucket_of(ino), m.gen);
            if stale && bug != Some(Bug::DirectStaleMap) {
                counts.stale += 1;
                o.map = None;
                continue;
            }
            let mut done = 0usize;
            for (img, n) in pieces {
                let img = if bug == Some(Bug::DirectWrongBlock) {
                    img + BS
                } else {
                    img
                };
                let bytes = &data[done..done + n as usize];
                if bug == Some(Bug::DirectSkipFlush) {
                    fs.media.write_at(img, bytes)?;
                } else {
                    fs.media.write_flushed(img, bytes)?;
                }
                done += n as usize;
            }
            if bug != Some(Bug::DirectSkipFence) {
                fs.media.fence();
            }
            // TOUCH at an open file's first direct write; later ones wait
            // for fsync (closer than TOUCH_EVERY_MS).
            if o.touched {
                o.pending = true;
            } else {
                o.touched = true;
                fs.touch_direct(ino)?;
            }
            return Ok(Path::Direct);
        }
        // The kernel path, after which the map is fetched again.
        o.map = None;
        fs.write(ino, off, data, false)?;
        Ok(Path::Kernel)
    }

    /// fsync(fd): the pending TOUCH, then the real fsync.
    pub fn fsync(&mut self, fs: &Fs, ino: u64) -> FsResult<()> {
        let o = open(&mut self.files, fs, ino)?;
        if o.pending {
            o.pending = false;
            fs.touch_direct(ino)?;
        }
        fs.fsync(ino)
    }
}

/// The client's open file of `ino` (opened now if it has none).
fn open<'a>(files: &'a mut HashMap<u64, Open>, fs: &Fs, ino: u64) -> FsResult<&'a mut Open> {
    Ok(match files.entry(ino) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(Open {
            fh: fs.open(ino)?,
            map: None,
            touched: false,
            pending: false,
        }),
    })
}

/// The image ranges (offset, bytes) of file range `off..off+len` if the
/// map lets a client store all of it in place: below the size it knows,
/// every block mapped with EXT_WRITE (client/src/access.rs `walk`: an
/// access is all or nothing).
fn cover(m: &LeaseMap, off: u64, len: u64) -> Option<Vec<(u64, u64)>> {
    let end = off.checked_add(len)?;
    if end > m.size {
        return None;
    }
    let mut out = Vec::new();
    let mut p = off;
    while p < end {
        let l = p / BS;
        let &(s, phys, n, w) = m.extents.iter().find(|e| l >= e.0 && l < e.0 + e.2)?;
        if !w {
            return None;
        }
        let within = p - s * BS;
        let k = ((n * BS) - within).min(end - p);
        out.push((phys * BS + within, k));
        p += k;
    }
    Some(out)
}

/// What a direct write that returned must have done, read from the states
/// before and after it: the written range reads `data`, nothing else of any
/// file changed (no byte landing in another file), and a write
/// served directly changed no metadata.
pub fn check_effect(
    before: &Snapshot,
    after: &Snapshot,
    ino: u64,
    off: u64,
    data: &[u8],
    path: Path,
) -> Result<(), String> {
    let end = off as usize + data.len();
    let got = after.data.get(&ino).ok_or("the file is gone")?;
    if got.len() < end || got[off as usize..end] != *data {
        return Err(format!(
            "inode {ino}: bytes {off}..{end} do not read back what the direct write stored"
        ));
    }
    for (i, b) in &after.data {
        let Some(old) = before.data.get(i) else {
            continue;
        };
        let same = if *i == ino {
            let n = old.len().max(b.len());
            (0..n).all(|k| {
                (k >= off as usize && k < end) || old.get(k).unwrap_or(&0) == b.get(k).unwrap_or(&0)
            })
        } else {
            old == b
        };
        if !same {
            return Err(format!(
                "inode {i}: bytes outside the direct write to inode {ino} {off}..{end} changed"
            ));
        }
    }
    if path == Path::Direct && before.nodes != after.nodes {
        return Err(format!(
            "a direct store to inode {ino} changed metadata (sizes, mapped blocks)"
        ));
    }
    Ok(())
}
