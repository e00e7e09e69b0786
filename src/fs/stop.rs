//! Stopping a long operation between its steps.
//!
//! A long operation (a remap batch after batch, a dedupe comparing its
//! ranges) calls [`between_steps`] at each point where everything before
//! is committed and consistent. The code that started the operation may
//! have set a stop condition for this thread ([`stopping_when`]); when it
//! holds there, the operation ends with [`FsError::Interrupted`] (EINTR),
//! as XFS's remap and the VFS's dedupe compare end when their caller has a
//! fatal signal pending. What the condition looks at is the caller's
//! business (the FUSE edge: whether the requesting thread was killed); the
//! core only offers the points.

use std::cell::RefCell;

use crate::error::{FsError, FsResult};

type Cond = Box<dyn Fn() -> bool>;

thread_local! {
    static STOP: RefCell<Option<Cond>> = const { RefCell::new(None) };
}

/// Run `f` with `stop` as this thread's stop condition.
pub fn stopping_when<R>(stop: impl Fn() -> bool + 'static, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Cond>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let old = self.0.take();
            STOP.with(|s| *s.borrow_mut() = old);
        }
    }
    let old = STOP.with(|s| s.borrow_mut().replace(Box::new(stop)));
    let _restore = Restore(old);
    f()
}

/// A step boundary: Err(Interrupted) if this thread's stop condition holds.
pub(crate) fn between_steps() -> FsResult<()> {
    let stop = STOP.with(|s| s.borrow().as_ref().map(|c| c()));
    match stop {
        Some(true) => Err(FsError::Interrupted),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_holds_only_inside() {
        assert!(between_steps().is_ok());
        let r = stopping_when(|| true, between_steps);
        assert_eq!(r, Err(FsError::Interrupted));
        assert!(stopping_when(|| false, between_steps).is_ok());
        assert!(between_steps().is_ok());
    }
}
