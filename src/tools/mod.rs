//! The programs over the filesystem, each above the FUSE edge and the core:
//! [`mkfs`], [`fsck`], the mount helper ([`mount`]: mount(8), remount, the
//! kernel mount), the ioctl [`client`] behind `daxlink reflink|dedupe|...`,
//! [`counters`], [`crash`] (crashtest), [`demo`] and its [`report`], [`run`]
//! (`daxlink run`: a command with the direct-access library preloaded); with
//! [`access`] (image ownership rules) and [`signature`] (foreign-image
//! detection).

#![forbid(unsafe_code)]

pub mod access;
pub mod client;
pub mod counters;
pub mod crash;
pub mod demo;
pub mod fsck;
pub mod mkfs;
pub mod mount;
pub mod report;
pub mod run;
pub mod signature;
