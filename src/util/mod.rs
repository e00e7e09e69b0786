//! Helpers any layer may use, tied to none: standard output that ends
//! quietly on EPIPE ([`out`]), progress bars ([`progress`]), giving the heap
//! back to the kernel ([`heap`]) and the mountinfo parser ([`mountinfo`]).

pub mod heap;
pub mod mountinfo;
pub mod out;
pub mod progress;
