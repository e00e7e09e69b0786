//! daxlink: a persistent-memory filesystem served through FUSE.
//!
//! Layers, bottom up, one folder each (nothing below knows what is above;
//! `tests/layers.rs` checks it, ARCHITECTURE.md has one row per file):
//! - [`media`]: the mapping, the only code that stores into pmem.
//! - [`format`]: byte layout of every on-media structure, no I/O.
//! - [`check`]: the rules mount and fsck both apply to what they read, and
//!   the POSIX ACL rules ([`check::acl`]).
//! - [`journal`]: atomic metadata (redo journal).
//! - [`space`]: the allocation bitmap and free space.
//! - [`pages`]: the page model (DRAM only, given its ground truth by `fs`).
//! - [`fs`]: the core filesystem, usable without FUSE: transactions in
//!   [`fs::tx`], the DRAM maps in [`fs::index`]; [`error`]: its typed errors.
//! - [`fuse`]: the FUSE edge (adapter, transports, caller identity, in-flight
//!   requests, the ioctl numbers and payloads).
//! - [`tools`]: mkfs, fsck, the mount helper, the ioctl client, counters,
//!   crashtest, demo and its report.
//! - [`util`]: helpers any layer may use (tool output, progress bars, the heap,
//!   mountinfo).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod check;
pub mod error;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod journal;
pub mod media;
pub mod pages;
pub mod space;
pub mod tools;
pub mod util;

pub use error::{FsError, FsResult};
