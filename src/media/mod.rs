//! The media layer: the one place that stores into persistent memory.
//!
//! A [`Media`] is a byte range mapped into the daemon (an image file, a /dev/pmem
//! block device, a /dev/dax character device, or anonymous memory for tests).
//! Every store goes through [`Media::write_at`] / [`Media::fill`]; durability is
//! made explicit with [`Media::flush`], [`Media::fence`] and [`Media::persist`].
//! An optional [`MediaObserver`] sees every store, flush and fence (crash testing).
//!
//! Opening a path takes a lock on it for as long as the [`Media`] lives: one
//! writer (exclusive `flock`, plus `O_EXCL` for a block device) or any number of
//! readers (shared `flock`); as root the `flock` is on a lock file no other
//! user can open (see [`lock`]). A second writer is refused with
//! [`MediaError::Busy`], which names the holder.
//!
//! Most of the project's `unsafe` code lives in this file: the mapping,
//! the stores and cache flushes, and the one way to look at mapped bytes
//! without copying them out, [`Media::read_in_place`], an `unsafe fn` whose
//! contract the caller keeps (no store into the range meanwhile; device
//! stores, [`Media::device_write`], are excluded by the media itself). The
//! other places are listed in ARCHITECTURE.md ("Where `unsafe` lives"); the
//! crate denies undocumented `unsafe` blocks, and the layers that need none
//! forbid it.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use thiserror::Error;

pub mod lock;
pub use lock::{lock_file, open_image, Locked, LOCK_DIR};

/// CPU cache line size assumed for flushing.
pub const CACHE_LINE: u64 = persist::CACHE_LINE as u64;
/// Stores at least this long bypass the cache (`write_flushed`).
const NT_MIN: usize = persist::NT_MIN;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("access {off:#x}+{len:#x} is outside the media ({size:#x} bytes)")]
    OutOfBounds { off: u64, len: u64, size: u64 },
    #[error("media is mapped read-only")]
    ReadOnly,
    /// [`Media::shut_down`] was called: nothing reaches the media any more.
    #[error("the filesystem was shut down (FS_IOC_SHUTDOWN); unmount it")]
    ShutDown,
    /// Another open holds the lock: "in use by pid N (comm)".
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    CannotPersist(String),
    /// Root's lock directory (/run/daxlink) cannot be used.
    #[error("cannot use the lock directory {}: {err}", path.display())]
    LockDir {
        path: std::path::PathBuf,
        err: String,
    },
}

/// How stores are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistMode {
    /// CPU cache flush instructions (clwb / clflushopt / clflush) and sfence, as on x86 ADR pmem.
    Cpu,
    /// msync(MS_SYNC) of the touched pages: for an image on an ordinary (non-DAX) disk.
    Msync,
    /// Nothing to do: anonymous memory for unit tests.
    None,
}

use daxlink_direct::persist;
/// The cache-flush instruction chosen at run time (one definition, shared
/// with direct-access clients, which flush their own stores the same way).
pub use daxlink_direct::persist::FlushInsn;

/// Sees every store, flush and fence (the recording backend used by crash tests).
pub trait MediaObserver: Send + Sync {
    fn store(&self, off: u64, data: &[u8]);
    fn flush(&self, off: u64, len: u64);
    fn fence(&self);
}

enum Backing {
    Mapped {
        map: MmapRaw,
        _file: File,
    },
    /// Mapped with MAP_SYNC (see [`SyncMap`]).
    Sync {
        map: SyncMap,
        _file: File,
    },
    Anon {
        map: MmapRaw,
    },
}

/// A shared writable mapping made with MAP_SYNC | MAP_SHARED_VALIDATE. A
/// write fault on it returns only once the file's block allocation and
/// metadata for that page are durable, so CPU cache flushes alone make
/// stores durable: the guarantee DAX files and devices give. The kernel
/// refuses the flag (EOPNOTSUPP) wherever it cannot keep that promise.
struct SyncMap {
    ptr: *mut u8,
    len: usize,
}

impl SyncMap {
    fn new(file: &File, len: usize) -> Option<SyncMap> {
        use std::os::fd::AsRawFd;
        // SAFETY: asks for a new shared mapping of `len` bytes of an open
        // file at offset 0; nothing else refers to the address it returns.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                file.as_raw_fd(),
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(SyncMap {
            ptr: p as *mut u8,
            len,
        })
    }
}

impl Drop for SyncMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; `Media` owns it and
        // no pointer into it outlives the `Media`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Is this file on memory (tmpfs, ramfs, hugetlbfs)? Its pages are the
/// storage: durable as long as the machine runs, which is what emulated pmem
/// on /dev/shm offers, and there is no disk to write back to.
pub fn on_ram(file: &File) -> bool {
    use nix::sys::statfs::{fstatfs, FsType, HUGETLBFS_MAGIC, TMPFS_MAGIC};
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    fstatfs(file).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == TMPFS_MAGIC || t == RAMFS_MAGIC || t == HUGETLBFS_MAGIC
    })
}

/// What kind of object backs the media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    ImageFile,
    BlockDevice,
    DaxDevice,
    Memory,
}

pub struct Media {
    backing: Backing,
    len: u64,
    read_only: bool,
    mode: PersistMode,
    insn: FlushInsn,
    kind: MediaKind,
    observer: Option<Arc<dyn MediaObserver>>,
    /// One way: set by [`Media::shut_down`], then every store and flush fails.
    down: AtomicBool,
    /// Stores and flushes running now (so that `shut_down` can wait for them).
    active: AtomicUsize,
    /// Root's lock file (see [`lock`]), held as long as the mapping.
    _lock: Option<File>,
    /// Shared by [`Media::read_in_place`] while its reference lives,
    /// exclusive for a device store ([`Media::device_write`]): the stores
    /// the filesystem's inode locks do not order against a reader.
    device: parking_lot::RwLock<()>,
}

/// A store or flush in progress (see [`Media::shut_down`]).
struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: the mapping is plain shared memory that the `Media` owns for its
// whole life. Every access is a raw-pointer copy, store or flush in this
// module, bounds-checked, and no Rust reference into the mapping is ever
// handed out by a safe function: concurrent stores into the same bytes can
// tear what a reader copies, never invalidate a reference. The one reference
// (`read_in_place`) is an `unsafe fn`: its caller promises that no store
// reaches the range meanwhile (the filesystem's locks), and device stores
// wait for it here (`device`).
unsafe impl Send for Media {}
// SAFETY: see above.
unsafe impl Sync for Media {}

fn size_of_dax_char(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let rdev = file.metadata()?.rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let s = std::fs::read_to_string(format!("/sys/dev/char/{maj}:{min}/size"))?;
    s.trim()
        .parse::<u64>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl Media {
    /// Open, lock and map an image file or a pmem/dax device: writable with an
    /// exclusive lock, or `read_only` with a shared lock (see [`Media::lock_path`]).
    /// `mode` None chooses what makes stores durable on this media (see
    /// [`Media::map_locked`]).
    pub fn open(
        path: &Path,
        mode: Option<PersistMode>,
        read_only: bool,
    ) -> Result<Media, MediaError> {
        let file = Media::lock_path(path, !read_only)?;
        Media::map_locked(file, mode, read_only)
    }

    /// Open `path` (read-write if `write`, following symlinks) and lock it:
    /// `write` takes the exclusive lock (and opens a block device with
    /// `O_EXCL`), otherwise the shared one (see [`lock`]); waits at most half
    /// a second. Fails with [`MediaError::Busy`] naming the holder.
    pub fn lock_path(path: &Path, write: bool) -> Result<Locked, MediaError> {
        lock::lock_path(path, write)
    }

    /// Map a file opened and locked by [`Media::lock_path`] (opened writable
    /// unless `read_only`). The mapping keeps the lock.
    ///
    /// How stores become durable depends on the media. A device-DAX
    /// character device, a MAP_SYNC mapping (a file on a DAX filesystem, or a
    /// DAX-capable block device) and a file in memory (/dev/shm) need only
    /// CPU cache flushes (`Cpu`); anything else (a block device or a file on
    /// an ordinary filesystem) keeps stores in the page cache until msync
    /// (`Msync`). `mode` None chooses that; an explicit `Cpu` where it
    /// cannot make stores durable is refused.
    pub fn map_locked(
        locked: Locked,
        mode: Option<PersistMode>,
        read_only: bool,
    ) -> Result<Media, MediaError> {
        let (file, lock) = locked.into_parts();
        let ft = file.metadata()?.file_type();
        let (len, kind) = if ft.is_block_device() {
            use std::io::{Seek, SeekFrom};
            let mut f = &file;
            let l = f.seek(SeekFrom::End(0))?;
            f.seek(SeekFrom::Start(0))?;
            (l, MediaKind::BlockDevice)
        } else if ft.is_char_device() {
            (size_of_dax_char(&file)?, MediaKind::DaxDevice)
        } else {
            (file.metadata()?.len(), MediaKind::ImageFile)
        };
        if len == 0 {
            return Err(MediaError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "media has size 0",
            )));
        }
        let ram = kind == MediaKind::ImageFile && on_ram(&file);
        let sync = if read_only || ram || kind == MediaKind::DaxDevice {
            None
        } else {
            SyncMap::new(&file, len as usize)
        };
        let cpu_is_durable = kind == MediaKind::DaxDevice || ram || sync.is_some();
        let mode = match mode {
            None if cpu_is_durable => PersistMode::Cpu,
            None => PersistMode::Msync,
            Some(PersistMode::Cpu) if !cpu_is_durable && !read_only => {
                return Err(MediaError::CannotPersist(format!(
                    "persist=cpu cannot make stores durable on this {}: it is neither DAX \
                     (MAP_SYNC refused) nor in memory; use persist=msync (the default here)",
                    if kind == MediaKind::BlockDevice {
                        "block device"
                    } else {
                        "file"
                    }
                )))
            }
            Some(m) => m,
        };
        let backing = match sync {
            Some(map) => Backing::Sync { map, _file: file },
            None => {
                let mut opts = MmapOptions::new();
                opts.len(len as usize);
                let map = if read_only {
                    opts.map_raw_read_only(&file)?
                } else {
                    opts.map_raw(&file)?
                };
                Backing::Mapped { map, _file: file }
            }
        };
        log::info!("media: {kind:?}, persist {mode:?}");
        Ok(Media {
            backing,
            len,
            read_only,
            mode,
            insn: FlushInsn::detect(),
            kind,
            observer: None,
            down: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            _lock: lock,
            device: parking_lot::RwLock::new(()),
        })
    }

    /// Anonymous zeroed memory: the in-memory backend for unit tests.
    pub fn anonymous(len: u64) -> Result<Media, MediaError> {
        let mm = MmapOptions::new().len(len as usize).map_anon()?;
        Ok(Media {
            backing: Backing::Anon {
                map: MmapRaw::from(mm),
            },
            len,
            read_only: false,
            mode: PersistMode::None,
            insn: FlushInsn::detect(),
            kind: MediaKind::Memory,
            observer: None,
            down: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            _lock: None,
            device: parking_lot::RwLock::new(()),
        })
    }

    pub fn set_observer(&mut self, obs: Option<Arc<dyn MediaObserver>>) {
        self.observer = obs;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn persist_mode(&self) -> PersistMode {
        self.mode
    }

    pub fn flush_insn(&self) -> FlushInsn {
        self.insn
    }

    /// Shut the media down, as if the power had gone: every later store and
    /// flush fails with [`MediaError::ShutDown`] and a fence does nothing.
    /// Returns once no store or flush that began before is still running, so
    /// that afterwards no byte reaches the media. One way; idempotent.
    pub fn shut_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        // Each store announces itself (active += 1) before it checks `down`,
        // both SeqCst: one that missed the flag is counted here.
        while self.active.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Which object the media is: `(st_dev, st_ino)` of an image file,
    /// `(0, st_rdev)` of a device (as direct-access clients prove they
    /// opened it); None for anonymous memory.
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let f = match &self.backing {
            Backing::Mapped { _file, .. } | Backing::Sync { _file, .. } => _file,
            Backing::Anon { .. } => return None,
        };
        let m = f.metadata().ok()?;
        let t = m.file_type();
        Some(if t.is_block_device() || t.is_char_device() {
            (0, m.rdev())
        } else {
            (m.dev(), m.ino())
        })
    }

    pub fn is_shut_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Admit one store or flush, unless the media is shut down.
    /// Every store's admission: the media is writable, `off..off+len` is
    /// inside it, and it is not shut down (the guard counts the store as
    /// active until it is dropped).
    fn admit_store(&self, off: u64, len: u64) -> Result<Active<'_>, MediaError> {
        if self.read_only {
            return Err(MediaError::ReadOnly);
        }
        self.check(off, len)?;
        self.admit()
    }

    fn admit(&self) -> Result<Active<'_>, MediaError> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let a = Active(&self.active);
        if self.down.load(Ordering::SeqCst) {
            return Err(MediaError::ShutDown);
        }
        Ok(a)
    }

    fn base(&self) -> *mut u8 {
        match &self.backing {
            Backing::Mapped { map, .. } => map.as_mut_ptr(),
            Backing::Sync { map, .. } => map.ptr,
            Backing::Anon { map } => map.as_mut_ptr(),
        }
    }

    fn check(&self, off: u64, len: u64) -> Result<(), MediaError> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(MediaError::OutOfBounds {
                off,
                len,
                size: self.len,
            }),
        }
    }

    /// Copy bytes out of the media.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.check(off, buf.len() as u64)?;
        // SAFETY: the range was bounds-checked against the mapping length; the
        // destination is a distinct, exclusively borrowed buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base().add(off as usize),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    /// Hand the bytes at `off..off+len` to `f` as a reference into the
    /// mapping (no copy: for a reply the kernel copies out itself). Device
    /// stores ([`Media::device_write`]) wait until `f` returns.
    ///
    /// # Safety
    /// While `f` runs, nothing else may store into `off..off+len` through
    /// [`Media::write_at`], [`Media::write_flushed`] or [`Media::fill`]: the
    /// caller holds the lock that keeps the filesystem's own stores away
    /// from those bytes (for file data, the owning inode's lock; data
    /// blocks shared with other files are never stored into in place). A
    /// store racing the reference would be a data race on memory a `&[u8]`
    /// promises is not changing.
    pub unsafe fn read_in_place<R>(
        &self,
        off: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, MediaError> {
        self.check(off, len as u64)?;
        let _device = self.device.read();
        // SAFETY: the range is inside the mapping (checked above), which is
        // readable in every mode and lives as long as `self`, so as long as
        // the borrow `f` gets. Device stores are excluded by `_device` until
        // `f` returns; every other store is kept away by the caller (this
        // function's contract).
        let bytes = unsafe { std::slice::from_raw_parts(self.base().add(off as usize), len) };
        Ok(f(bytes))
    }

    /// A store a (simulated) device makes, outside the filesystem's locks
    /// (a DMA write through a pin, a memory failure's poison pattern):
    /// `write_at`, once no [`Media::read_in_place`] reference is live.
    pub fn device_write(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        let _excl = self.device.write();
        self.write_at(off, data)
    }

    pub fn read_vec(&self, off: u64, len: usize) -> Result<Vec<u8>, MediaError> {
        let mut v = vec![0u8; len];
        self.read(off, &mut v)?;
        Ok(v)
    }

    pub fn read_u64(&self, off: u64) -> Result<u64, MediaError> {
        let mut b = [0u8; 8];
        self.read(off, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Store bytes into the media (not yet durable: see [`Media::persist`]).
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        let _a = self.admit_store(off, data.len() as u64)?;
        if let Some(o) = &self.observer {
            o.store(off, data);
        }
        // SAFETY: bounds-checked above; the mapping is writable (not read_only);
        // the source slice cannot overlap the mapping's private view.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base().add(off as usize), data.len());
        }
        Ok(())
    }

    /// Store `data` at `off` and write it back: durable after the next
    /// fence, as `write_at` + `flush`. With `persist=cpu` a large store
    /// bypasses the cache instead (non-temporal stores of whole cache lines,
    /// then nothing to flush; the edges are stored and flushed as usual), so
    /// a big copy costs one pass and evicts nothing useful.
    pub fn write_flushed(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        if self.mode != PersistMode::Cpu || data.len() < NT_MIN || !cfg!(target_arch = "x86_64") {
            self.write_at(off, data)?;
            return self.flush(off, data.len() as u64);
        }
        let _a = self.admit_store(off, data.len() as u64)?;
        if let Some(o) = &self.observer {
            o.store(off, data);
            o.flush(off, data.len() as u64);
        }
        // SAFETY: [off, off + len) was bounds-checked (`admit_store`) and the mapping
        // is writable (not read_only); the source slice cannot overlap the
        // mapping's private view, and no Rust reference into the mapping is
        // handed out by safe code (see `unsafe impl Send for Media`).
        unsafe { persist::store_flushed(self.insn, self.base().add(off as usize), data) };
        Ok(())
    }

    /// Store `len` copies of `byte`.
    pub fn fill(&self, off: u64, len: u64, byte: u8) -> Result<(), MediaError> {
        let _a = self.admit_store(off, len)?;
        if let Some(o) = &self.observer {
            o.store(off, &vec![byte; len as usize]);
        }
        // SAFETY: bounds-checked above, writable mapping.
        unsafe {
            std::ptr::write_bytes(self.base().add(off as usize), byte, len as usize);
        }
        Ok(())
    }

    /// Write back the cache lines covering `off..off+len` (ordered only by a later fence).
    pub fn flush(&self, off: u64, len: u64) -> Result<(), MediaError> {
        if len == 0 || self.read_only {
            return Ok(());
        }
        self.check(off, len)?;
        let _a = self.admit()?;
        if let Some(o) = &self.observer {
            o.flush(off, len);
        }
        match self.mode {
            PersistMode::None => {}
            PersistMode::Msync => {
                let page = 4096u64;
                let start = off & !(page - 1);
                let end = (off + len).div_ceil(page) * page;
                let end = end.min(self.len);
                let r = match &self.backing {
                    Backing::Mapped { map, .. } => {
                        map.flush_range(start as usize, (end - start) as usize)
                    }
                    // SAFETY: the page-aligned range lies inside the mapping
                    // (bounds checked above, `end` clamped to its length).
                    Backing::Sync { map, .. } => match unsafe {
                        libc::msync(
                            map.ptr.add(start as usize) as *mut libc::c_void,
                            (end - start) as usize,
                            libc::MS_SYNC,
                        )
                    } {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    },
                    Backing::Anon { .. } => Ok(()),
                };
                if let Err(e) = r {
                    log::error!("msync failed: {e}");
                    return Err(e.into());
                }
            }
            PersistMode::Cpu => {
                let start = off & !(CACHE_LINE - 1);
                let end = off + len;
                let mut p = start;
                while p < end {
                    // SAFETY: p lies within the bounds-checked mapped range (rounded down
                    // to its cache line, which is inside the same page of the mapping).
                    unsafe { persist::flush_line(self.insn, self.base().add(p as usize)) };
                    p += CACHE_LINE;
                }
            }
        }
        Ok(())
    }

    /// Order all earlier flushes before any later store (sfence).
    pub fn fence(&self) {
        if self.is_shut_down() {
            return;
        }
        if let Some(o) = &self.observer {
            o.fence();
        }
        if self.mode == PersistMode::Cpu {
            persist::fence();
        }
    }

    /// flush + fence.
    pub fn persist(&self, off: u64, len: u64) -> Result<(), MediaError> {
        self.flush(off, len)?;
        self.fence();
        Ok(())
    }

    /// Store then persist.
    pub fn write_persist(&self, off: u64, data: &[u8]) -> Result<(), MediaError> {
        self.write_at(off, data)?;
        self.persist(off, data.len() as u64)
    }
}

#[cfg(test)]
mod tests;
