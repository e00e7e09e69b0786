//! Directories at the FUSE edge: the walk READDIR and READDIRPLUS share,
//! and what an OPENDIR tells the kernel about caching the listing.

use super::*;

impl DaxFuse {
    /// FOPEN_CACHE_DIR: the kernel keeps a listing in the directory's page
    /// cache (dropped when the directory changes, all through the kernel),
    /// kept across opens as a file's pages are (`open_flags`): not when a
    /// listing now would update the access time.
    pub(super) fn opendir_flags(&self, ino: u64) -> FopenFlags {
        if self.cache.keep && !self.fs.read_would_touch_atime(ino).unwrap_or(false) {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::FOPEN_CACHE_DIR
        }
    }
}

/// The walk readdir and readdirplus share: the entries of directory `ino`
/// after `offset`, each handed to `add` (with its attributes for
/// readdirplus, which skips an entry whose inode went away meanwhile) until
/// `add` says the reply is full.
pub(super) fn walk_dir(
    fs: &Fs,
    ino: u64,
    offset: u64,
    plus: bool,
    mut add: impl FnMut(&crate::fs::DirEntry, Option<&Attr>) -> bool,
) -> Result<(), FsError> {
    // A batch fills a reply: the kernel asks for up to 32 KiB (getdents'
    // buffer), which holds about 1,000 plain entries of short names or 200
    // plus entries (each carries 128 bytes of attributes).
    let batch = if plus { 256 } else { 1024 };
    for e in fs.readdir(ino, offset, batch)? {
        let full = if plus {
            match fs.getattr(e.ino) {
                Ok(a) => add(&e, Some(&a)),
                Err(_) => continue,
            }
        } else {
            add(&e, None)
        };
        if full {
            break;
        }
    }
    Ok(())
}
