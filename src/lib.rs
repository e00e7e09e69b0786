//! daxlink: a persistent-memory filesystem served through FUSE.
//!
//! Layers, bottom up (nothing below knows what is above; ARCHITECTURE.md
//! has one row per file):
//! - [`media`]: the mapping, the only code that stores into pmem.
//! - [`format`]: byte layout of every on-media structure, no I/O; [`acl`]:
//!   POSIX ACL values and their rules.
//! - [`check`]: the rules mount and fsck both apply to what they read.
//! - [`journal`]: atomic metadata (redo journal).
//! - [`space`]: the allocation bitmap and free space.
//! - [`pages`]: the page model (DRAM only, given its ground truth by `fs`).
//! - [`fs`]: the core filesystem, usable without FUSE; [`error`]: its typed
//!   errors.
//! - [`fuse`]: the FUSE edge (adapter, transports, [`caller`] identity,
//!   [`inflight`] requests, [`ioctl`] numbers and payloads).
//! - tools: [`mkfs`], [`fsck`], [`mount`], [`kmount`], [`remount`],
//!   [`cli`] (the ioctl client), [`counters`], [`crash`] (crashtest),
//!   [`demo`] and [`report`]; with [`access`] (image ownership rules),
//!   [`mountinfo`], [`signature`], [`progress`], [`out`] and [`heap`].

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod check;
pub mod error;
pub mod format;
pub mod fs;
pub mod journal;
pub mod media;
pub mod space;
pub mod tools;
pub mod util;

pub use error::{FsError, FsResult};
pub mod fuse;
pub mod pages;
