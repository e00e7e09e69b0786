//! The mkfs tool: creating and checking the image file (or device) and
//! making the filesystem on it (`fs::make`).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::error::FsError;
use crate::format::Superblock;
use crate::fs::make::{has_filesystem, mkfs, MkfsOptions, MIN_BLOCKS};
use crate::media::{lock_file, open_image, Media, MediaError};
use crate::tools::access::{check_mkfs_target, mkfs_warnings, AccessError};
use crate::util::progress::Progress;

/// Parse sizes like 512M, 2G, 1048576, 64KiB.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suf) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suf.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Why [`mkfs_image`] refused or failed; one line naming the path.
#[derive(Debug, Error)]
pub enum MkfsError {
    #[error("{0}")]
    Access(#[from] AccessError),
    #[error("{} does not exist: give --size to create it", path.display())]
    NeedSize { path: PathBuf },
    #[error("cannot create {}: {err}", path.display())]
    Create { path: PathBuf, err: std::io::Error },
    #[error("cannot open {}: {err}", path.display())]
    Open { path: PathBuf, err: MediaError },
    #[error("{} changed while mkfs opened it; run mkfs again", path.display())]
    Changed { path: PathBuf },
    #[error("{} already holds a daxlink filesystem; use --force to overwrite it", path.display())]
    HasFilesystem { path: PathBuf },
    #[error("{} appears to contain an existing filesystem ({kind}); use --force to overwrite it", path.display())]
    Foreign { path: PathBuf, kind: &'static str },
    #[error("{} is empty (0 bytes): give --size to size it", path.display())]
    Empty { path: PathBuf },
    #[error("cannot size {}: {err}", path.display())]
    Size { path: PathBuf, err: std::io::Error },
    #[error("cannot allocate {}: {err}", path.display())]
    Allocate { path: PathBuf, err: nix::Error },
    #[error("cannot map {}: {err}", path.display())]
    Map { path: PathBuf, err: MediaError },
    #[error("{} is too small: daxlink needs at least {} KiB", path.display(), MIN_BLOCKS * 4)]
    TooSmall { path: PathBuf },
    #[error("cannot make the filesystem on {}: {err}", path.display())]
    Write { path: PathBuf, err: FsError },
}

/// What [`mkfs_image`] made, and what it warns about (one line each).
pub struct Made {
    pub sb: Superblock,
    pub warnings: Vec<String>,
}

/// Removes the image file mkfs created unless [`Created::keep`] is called,
/// and only while the path still names that file.
struct Created<'a> {
    path: &'a Path,
    id: Option<(u64, u64)>,
}

impl Created<'_> {
    fn keep(&mut self) {
        self.id = None;
    }
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Some(id) = self.id {
            if let Ok(md) = std::fs::symlink_metadata(self.path) {
                if (md.dev(), md.ino()) == id {
                    let _ = std::fs::remove_file(self.path);
                }
            }
        }
    }
}

/// Without `--force`, an existing daxlink filesystem or another filesystem's
/// signature (ext4, xfs, btrfs, swap, ...) is not formatted over.
fn refuse_existing(media: &Media, path: &Path) -> Result<(), MkfsError> {
    if has_filesystem(media) {
        return Err(MkfsError::HasFilesystem {
            path: path.to_path_buf(),
        });
    }
    match crate::tools::signature::foreign(media) {
        Ok(Some(kind)) => Err(MkfsError::Foreign {
            path: path.to_path_buf(),
            kind,
        }),
        Ok(None) => Ok(()),
        Err(err) => Err(MkfsError::Map {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// [`mkfs_image`] with the error as a string and the warnings dropped. Used by tests.
pub fn mkfs_path(
    path: &Path,
    size: Option<u64>,
    force: bool,
    o: &MkfsOptions,
) -> Result<Superblock, String> {
    mkfs_image(path, size, force, o)
        .map(|m| m.sb)
        .map_err(|e| e.to_string())
}

/// Create (if missing) or size an image file, then mkfs it. The CLI's work.
///
/// A new image is created 0600 (`O_CREAT|O_EXCL|O_NOFOLLOW`: never through a
/// link, never a file someone put there first) and removed again if mkfs then
/// fails. An existing path is opened with `O_NOFOLLOW` and must be a device
/// or a regular file of the user running mkfs (see [`crate::tools::access`]). The
/// image is locked exclusively (see [`crate::media::lock`]) before anything is
/// checked or changed, so a mounted image is refused.
pub fn mkfs_image(
    path: &Path,
    size: Option<u64>,
    force: bool,
    o: &MkfsOptions,
) -> Result<Made, MkfsError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let p = || path.to_path_buf();
    let uid = nix::unistd::geteuid().as_raw();
    let mut created = Created { path, id: None };
    let (file, exists) = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if size.is_none() {
                return Err(MkfsError::NeedSize { path: p() });
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|err| MkfsError::Create { path: p(), err })?;
            let md = f
                .metadata()
                .map_err(|err| MkfsError::Create { path: p(), err })?;
            created.id = Some((md.dev(), md.ino()));
            (f, false)
        }
        Err(err) => {
            return Err(MkfsError::Open {
                path: p(),
                err: err.into(),
            })
        }
        Ok(lmd) => {
            check_mkfs_target(path, &lmd, uid)?;
            let f =
                open_image(path, true, true).map_err(|err| MkfsError::Open { path: p(), err })?;
            // The file opened is the one checked (not swapped in between).
            let md = f.metadata().map_err(|err| MkfsError::Open {
                path: p(),
                err: err.into(),
            })?;
            if (md.dev(), md.ino()) != (lmd.dev(), lmd.ino()) {
                return Err(MkfsError::Changed { path: p() });
            }
            check_mkfs_target(path, &md, uid)?;
            (f, true)
        }
    };
    let locked = lock_file(file, true, path).map_err(|err| MkfsError::Open { path: p(), err })?;
    let file = locked.file();
    let md = file.metadata().map_err(|err| MkfsError::Open {
        path: p(),
        err: err.into(),
    })?;
    let warnings = mkfs_warnings(path, &md, exists);
    if md.is_file() && md.len() == 0 && size.is_none() {
        return Err(MkfsError::Empty { path: p() });
    }
    if md.is_file() {
        if let Some(sz) = size {
            if md.len() != sz {
                if exists && md.len() > 0 && !force {
                    // Resizing an existing non-empty file is allowed only with --force.
                    let dup = locked.try_clone().map_err(|err| MkfsError::Open {
                        path: p(),
                        err: err.into(),
                    })?;
                    let m = Media::map_locked(dup, None, true)
                        .map_err(|err| MkfsError::Map { path: p(), err })?;
                    refuse_existing(&m, path)?;
                }
                file.set_len(sz)
                    .map_err(|err| MkfsError::Size { path: p(), err })?;
            }
        }
    }
    if md.is_file() && !o.sparse && !crate::media::on_ram(file) {
        // Allocate every block of the image now: a store into a hole of a
        // mapped file needs a block allocation that msync alone may not make
        // durable, and could fail for want of space long after mkfs.
        let len = file
            .metadata()
            .map_err(|err| MkfsError::Size { path: p(), err })?
            .len();
        let pr = Progress::steps("mkfs", 1);
        pr.message("allocating the image's blocks");
        nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len as i64)
            .map_err(|err| MkfsError::Allocate { path: p(), err })?;
    }
    let media =
        Media::map_locked(locked, None, false).map_err(|err| MkfsError::Map { path: p(), err })?;
    if exists && !force {
        refuse_existing(&media, path)?;
    }
    let sb = mkfs(&media, o).map_err(|e| match e {
        FsError::Invalid | FsError::NoSpace => MkfsError::TooSmall { path: p() },
        err => MkfsError::Write { path: p(), err },
    })?;
    created.keep();
    Ok(Made { sb, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn opts() -> MkfsOptions {
        MkfsOptions::default()
    }

    #[test]
    fn a_new_image_is_0600_and_a_failed_one_is_removed() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = dir.path().join("img");
        let made = mkfs_image(&p, Some(8 << 20), false, &opts()).unwrap();
        assert!(made.warnings.is_empty(), "{:?}", made.warnings);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        // Too small: refused, and the file it created is gone.
        let small = dir.path().join("small");
        let e = mkfs_image(&small, Some(1 << 20), false, &opts())
            .err()
            .unwrap();
        assert!(matches!(e, MkfsError::TooSmall { .. }), "{e}");
        assert!(!small.exists());
        // No size for a missing file: nothing created.
        let e = mkfs_image(&small, None, false, &opts()).err().unwrap();
        assert!(matches!(e, MkfsError::NeedSize { .. }), "{e}");
        assert!(!small.exists());
    }

    #[test]
    fn links_and_other_users_files_are_refused() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // A dangling link: not followed to create its target.
        let e = mkfs_image(&link, Some(8 << 20), false, &opts())
            .err()
            .unwrap();
        assert!(
            matches!(e, MkfsError::Access(AccessError::Symlink { .. })),
            "{e}"
        );
        assert!(!target.exists());
        // A link to an image: not formatted through.
        mkfs_image(&target, Some(8 << 20), false, &opts()).unwrap();
        let e = mkfs_image(&link, None, true, &opts()).err().unwrap();
        assert!(e.to_string().contains(&link.display().to_string()), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
        // A directory is no image.
        let e = mkfs_image(dir.path(), None, true, &opts()).err().unwrap();
        assert!(
            matches!(e, MkfsError::Access(AccessError::NotImage { .. })),
            "{e}"
        );
        // Someone else's file (only root can make one here).
        if nix::unistd::geteuid().is_root() {
            let theirs = dir.path().join("theirs");
            std::fs::write(&theirs, b"").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = mkfs_image(&theirs, Some(8 << 20), true, &opts())
                .err()
                .unwrap();
            assert!(
                matches!(e, MkfsError::Access(AccessError::NotOwner { .. })),
                "{e}"
            );
            assert_eq!(std::fs::metadata(&theirs).unwrap().len(), 0);
        }
    }

    #[test]
    fn open_images_and_directories_are_warned_about() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let made = mkfs_image(&p, Some(8 << 20), false, &opts()).unwrap();
        assert_eq!(made.warnings.len(), 1, "{:?}", made.warnings);
        assert!(made.warnings[0].contains(&p.display().to_string()));
        // A directory anyone can write, without the sticky bit.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let q = dir.path().join("img2");
        let made = mkfs_image(&q, Some(8 << 20), false, &opts()).unwrap();
        assert_eq!(made.warnings.len(), 1, "{:?}", made.warnings);
        assert!(made.warnings[0].contains("sticky"), "{:?}", made.warnings);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::remove_file(&q).unwrap();
        let made = mkfs_image(&q, Some(8 << 20), false, &opts()).unwrap();
        assert!(made.warnings.is_empty(), "{:?}", made.warnings);
    }
}
