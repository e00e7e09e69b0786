//! Who else can reach an image file: the owner and mode rules of mkfs, mount
//! and `fsck -y`. An image holds every file of the filesystem in the clear,
//! and the daemon trusts what it maps, so an image others can read leaks
//! every file, and one others can write lets them change what the daemon
//! reads under its feet. Block and character devices (/dev/pmemN,
//! /dev/daxN.M) are exempt: they are root:disk 0660 by design.

#![forbid(unsafe_code)]

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AccessError {
    #[error(
        "{} is a symbolic link, which mkfs does not follow: give the path of the image itself",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error(
        "{} belongs to uid {owner}, not to uid {uid} running mkfs: remove it, or run mkfs as its owner",
        path.display()
    )]
    NotOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{} is neither a regular file nor a pmem or dax device", path.display())]
    NotImage { path: PathBuf },
    #[error(
        "{} can be written by other users (mode {mode:04o}): run chmod go-w {}",
        path.display(),
        path.display()
    )]
    WritableByOthers { path: PathBuf, mode: u32 },
}

/// A block or character device: exempt from the owner and mode rules.
pub fn is_device(md: &Metadata) -> bool {
    let ft = md.file_type();
    ft.is_block_device() || ft.is_char_device()
}

/// mkfs on an existing `path` whose `lstat` is `md`, run by `uid`: no
/// symlink, nothing but a regular file or a device, and a regular file of
/// one's own.
pub fn check_mkfs_target(path: &Path, md: &Metadata, uid: u32) -> Result<(), AccessError> {
    let p = path.to_path_buf();
    let ft = md.file_type();
    if ft.is_symlink() {
        return Err(AccessError::Symlink { path: p });
    }
    if is_device(md) {
        return Ok(());
    }
    if !ft.is_file() {
        return Err(AccessError::NotImage { path: p });
    }
    if md.uid() != uid {
        return Err(AccessError::NotOwner {
            path: p,
            owner: md.uid(),
            uid,
        });
    }
    Ok(())
}

/// What mkfs warns about for the image file `md` at `path` (`existed`: it
/// was there before mkfs): an existing image others can read or write, a
/// directory others can write without the sticky bit (they could replace the
/// image). One line each.
pub fn mkfs_warnings(path: &Path, md: &Metadata, existed: bool) -> Vec<String> {
    let mut w = Vec::new();
    if is_device(md) {
        return w;
    }
    let mode = md.mode() & 0o7777;
    if existed && mode & 0o066 != 0 {
        w.push(format!(
            "{} can be read or written by group or other users (mode {mode:04o}): run chmod go-rw {}",
            path.display(),
            path.display()
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(dmd) = std::fs::metadata(dir) {
        let dm = dmd.mode() & 0o7777;
        if dm & 0o002 != 0 && dm & 0o1000 == 0 {
            w.push(format!(
                "{} is in {}, which other users can write and which has no sticky bit (mode {dm:04o}): they can replace the image",
                path.display(),
                dir.display()
            ));
        }
    }
    w
}

/// Mount of the image `md` at `path`: refused if group or other users can
/// write it; a warning (one line) if they can read it.
pub fn check_mount(path: &Path, md: &Metadata) -> Result<Option<String>, AccessError> {
    check_repair(path, md)?;
    let mode = md.mode() & 0o7777;
    if is_device(md) || mode & 0o044 == 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} can be read by group or other users (mode {mode:04o}), and with it every file in it: run chmod go-r {}",
        path.display(),
        path.display()
    )))
}

/// A repair (`fsck -y`) or a mount of the image `md` at `path`: refused if
/// group or other users can write it.
pub fn check_repair(path: &Path, md: &Metadata) -> Result<(), AccessError> {
    let mode = md.mode() & 0o7777;
    if !is_device(md) && mode & 0o022 != 0 {
        return Err(AccessError::WritableByOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}
