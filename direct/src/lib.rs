//! The direct-access protocol of daxlink, shared by the daemon (which
//! grants leases and recalls them) and the client library (which loads and
//! stores into the image under them). One definition of each word both
//! sides read or write:
//!
//! - [`control`]: the control page, a small shared mapping the daemon owns:
//!   one layout generation per bucket of inodes, one in-access slot per
//!   client thread, the daemon's heartbeat and state. Its access protocol
//!   (`enter`/`exit` on the client side, `recall` on the daemon's) is the
//!   rule that lets the daemon change a file's layout without missing an
//!   access that began under the old one.
//! - [`wire`]: the ioctl numbers and payloads (HELLO, MAP, TOUCH) and the
//!   messages on the daemon's socket.
//! - [`persist`]: cache-line write-back and fences, the only way either side
//!   makes a store to the image durable.
//!
//! This crate does no I/O of its own beyond what its callers hand it.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod control;
pub mod persist;
pub mod wire;
