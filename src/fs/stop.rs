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
//!
//! Some operations cannot stop halfway: a truncate has set the new size in
//! its first step, and the blocks past it must be freed before anything
//! else may be written there. Their step boundaries call [`past_return`]
//! instead: once everything the caller can see is done (a truncate's new
//! size, times and mode), and the condition holds, the code that started
//! the operation answers its caller at once with those attributes
//! ([`detaching`]: the killed caller is free to go) and the operation runs
//! on to its end (freeing blocks) with nobody waiting for it.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::error::{FsError, FsResult};
use crate::fs::Attr;

type Cond = Box<dyn Fn() -> bool>;
type Detach = Box<dyn FnOnce(&Attr)>;

thread_local! {
    static STOP: RefCell<Option<Cond>> = const { RefCell::new(None) };
    static DETACH: RefCell<Option<Detach>> = const { RefCell::new(None) };
}

/// Run `f` with `value` in the thread-local `slot`, the old value put
/// back when `f` returns or unwinds.
fn with_slot<T: 'static, R>(
    slot: &'static LocalKey<RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static>(&'static LocalKey<RefCell<Option<T>>>, Option<T>);
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let old = self.1.take();
            self.0.with(|s| *s.borrow_mut() = old);
        }
    }
    let old = slot.with(|s| s.borrow_mut().replace(value));
    let _restore = Restore(slot, old);
    f()
}

/// Run `f` with `stop` as this thread's stop condition.
pub fn stopping_when<R>(stop: impl Fn() -> bool + 'static, f: impl FnOnce() -> R) -> R {
    with_slot(&STOP, Box::new(stop) as Cond, f)
}

/// Run `f` with `detach` as the answer to give its caller early (with the
/// attributes the caller would have got) if the stop condition holds at
/// one of `f`'s [`past_return`] points. `detach` runs at most once; if it
/// never runs, it is dropped when `f` returns.
pub fn detaching<R>(detach: impl FnOnce(&Attr) + 'static, f: impl FnOnce() -> R) -> R {
    with_slot(&DETACH, Box::new(detach) as Detach, f)
}

fn stop_holds() -> bool {
    STOP.with(|s| s.borrow().as_ref().is_some_and(|c| c()))
}

/// A step boundary: Err(Interrupted) if this thread's stop condition holds.
pub(crate) fn between_steps() -> FsResult<()> {
    if stop_holds() {
        return Err(FsError::Interrupted);
    }
    Ok(())
}

/// A step boundary of an operation that must run to its end, after the
/// part its caller sees: if this thread's stop condition holds, answer the
/// caller now with `attr()` (the `detaching` callback, once) and go on;
/// the condition is not asked again.
pub(crate) fn past_return(attr: impl FnOnce() -> Attr) {
    let pending = DETACH.with(|d| d.borrow().is_some());
    if pending && stop_holds() {
        if let Some(answer) = DETACH.with(|d| d.borrow_mut().take()) {
            answer(&attr());
        }
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

    #[test]
    fn past_return_answers_once_and_goes_on() {
        use std::cell::Cell;
        use std::rc::Rc;
        let answered = Rc::new(Cell::new(0));
        let asked = Rc::new(Cell::new(0));
        let (a, q) = (answered.clone(), asked.clone());
        let steps = stopping_when(
            move || {
                q.set(q.get() + 1);
                true
            },
            || {
                detaching(
                    move |at: &Attr| a.set(a.get() + at.size as i32),
                    || {
                        for _ in 0..3 {
                            past_return(|| Attr {
                                size: 1,
                                ..Attr::default()
                            });
                        }
                        7
                    },
                )
            },
        );
        assert_eq!(steps, 7);
        assert_eq!(answered.get(), 1);
        assert_eq!(asked.get(), 1);
        // Outside, nothing is left to answer.
        past_return(Attr::default);
        assert_eq!(answered.get(), 1);
    }
}
