//! Typed errors of the core filesystem and their errno mapping (the FUSE edge).

#![forbid(unsafe_code)]

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("no space left on device")]
    NoSpace,
    #[error("cannot allocate memory")]
    NoMemory,
    #[error("file too large")]
    FileTooBig,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("invalid cross-device link")]
    CrossDev,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not permitted")]
    Perm,
    #[error("permission denied")]
    Access,
    #[error("no such attribute")]
    NoData,
    #[error("result too large")]
    Range,
    #[error("too many links")]
    TooManyLinks,
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not supported")]
    NotSupported,
    #[error("device or resource busy")]
    Busy,
    #[error("no such device or address")]
    NoSuchAddr,
    #[error("bad file descriptor")]
    BadFd,
    #[error("inappropriate ioctl for device")]
    NotTty,
    #[error("resource deadlock avoided: a lock was requested again by its holder")]
    Reentrant,
    /// A lock was busy and the thread may not wait (`fs::no_wait`): the
    /// request changed nothing and goes to a thread that may wait. Never
    /// reaches a user (the io_uring transport bridges the request).
    #[error("a lock is busy and this thread may not wait")]
    WouldBlock,
    /// A long operation stopped between two steps because its caller was
    /// killed (`fs::stop`); everything before the stop is committed.
    #[error("interrupted")]
    Interrupted,
    #[error("filesystem corrupted: {0}")]
    Corrupt(String),
    /// An intact image of a format version this code does not read.
    #[error("{0}")]
    Version(String),
    /// Neither superblock copy carries daxlink's magic: another filesystem,
    /// or no filesystem at all (fsck cannot make it one).
    #[error(
        "not a daxlink filesystem (no daxlink magic in superblock copy A or B, blocks 0 and 1)"
    )]
    NotDaxlink,
    /// The superblock mount and fsck trust (`fs::newest_superblock`) carries
    /// read-only-compatible feature bits this code does not know: the image
    /// may be mounted read-only, and nothing here may write it (as e2fsck,
    /// fsck refuses it, `-n` as `-y`, exit 8, and writes nothing).
    #[error(
        "unknown read-only-compatible features {0:#x}: this daxlink may only mount the image \
         read-only (-o ro); it cannot write, check or repair it"
    )]
    RoCompat(u32),
    #[error("I/O error: {0}")]
    Io(String),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoSpace => libc::ENOSPC,
            FsError::NoMemory => libc::ENOMEM,
            FsError::FileTooBig => libc::EFBIG,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::CrossDev => libc::EXDEV,
            FsError::Invalid => libc::EINVAL,
            FsError::Perm => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::Busy => libc::EBUSY,
            FsError::NoSuchAddr => libc::ENXIO,
            FsError::BadFd => libc::EBADF,
            FsError::NotTty => libc::ENOTTY,
            FsError::Reentrant => libc::EDEADLK,
            FsError::WouldBlock => libc::EAGAIN,
            FsError::Interrupted => libc::EINTR,
            // A checksum or structure error reaches the caller as EIO (docs/REQUIREMENTS.md §3).
            FsError::Corrupt(_) => libc::EIO,
            FsError::Version(_) | FsError::NotDaxlink => libc::EINVAL,
            FsError::RoCompat(_) => libc::EROFS,
            FsError::Io(_) => libc::EIO,
        }
    }
}

impl From<crate::media::MediaError> for FsError {
    fn from(e: crate::media::MediaError) -> Self {
        FsError::Io(e.to_string())
    }
}

impl From<crate::format::FormatError> for FsError {
    fn from(e: crate::format::FormatError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}

impl From<crate::journal::JournalError> for FsError {
    fn from(e: crate::journal::JournalError) -> Self {
        match e {
            crate::journal::JournalError::Format(f) => FsError::Corrupt(f.to_string()),
            other => FsError::Io(other.to_string()),
        }
    }
}

impl From<crate::space::SpaceError> for FsError {
    fn from(e: crate::space::SpaceError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}

pub type FsResult<T> = Result<T, FsError>;
