//! daxlink: a persistent-memory filesystem served through FUSE.
//!
//! Layers, bottom up: [`media`] (the only code that stores into pmem),
//! [`format`] (byte layout), [`check`] (the rules mount and fsck share),
//! [`journal`] (atomic metadata), [`space`]
//! (free space), [`fs`] (the core filesystem), `fuse` (the FUSE adapter),
//! and the tools ([`mkfs`], [`fsck`]).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod access;
pub mod acl;
pub mod caller;
pub mod check;
pub mod cli;
pub mod counters;
pub mod crash;
pub mod demo;
pub mod error;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod heap;
pub mod inflight;
pub mod journal;
pub mod kmount;
pub mod media;
pub mod mkfs;
pub mod mountinfo;
pub mod out;
pub mod progress;
pub mod signature;
pub mod space;

pub use error::{FsError, FsResult};
pub mod fuse;
pub mod ioctl;
pub mod mount;
pub mod pages;
pub mod remount;
pub mod report;
