//! What another user of the machine can do to daxlink's images, mounts and
//! tools. Run as root (mounts, setpriv); one module per subject.

#[path = "../common/mod.rs"]
mod common;

mod images;
