//! Which FUSE transport a mount serves on (`transport=dev|uring`) and what
//! FUSE_INIT granted; the running io_uring transport is kept here so that
//! FUSE destroy can stop it. The handlers both transports share are in
//! `serve.rs`, the rings in `uring/`.

use parking_lot::Mutex;

use super::uring;

/// The FUSE transport (`transport=dev|uring`, see `uring`).
#[derive(Default)]
pub struct Transport {
    /// `transport=uring` was asked for and its rings could be made.
    pub want_uring: bool,
    /// FUSE_INIT: the kernel's offer (capabilities, ABI major, minor) and
    /// whether it granted FUSE_OVER_IO_URING.
    pub offer: std::sync::OnceLock<(u64, u32, u32)>,
    pub granted: std::sync::atomic::AtomicBool,
    /// The running io_uring transport, stopped at FUSE destroy.
    pub running: Mutex<Option<uring::Running>>,
}
