//! Progress bars for the long-running tools: mkfs of a large image, fsck,
//! `daxlink crashtest` and the reflink stress test.
//!
//! A tool turns them on with [`enable_on_terminal`] at start-up; they are drawn
//! on stderr (with indicatif) only when stderr is a terminal, so a run whose
//! output goes to a file, a pipe or a test harness prints nothing extra. The
//! library code that does the work creates a [`Progress`] and advances it; while
//! progress is off (the default, and always in the mount daemon) that is a
//! no-op. `DAXLINK_PROGRESS=0` turns them off on a terminal too.
//!
//! [`plural`] words counts in the tools' output ("1 range", "2 ranges").

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// One bar at a time: a bar created while another is drawn stays hidden (fsck
/// of every crash state inside `daxlink crashtest`, say).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Turn progress bars on if stderr is a terminal and `DAXLINK_PROGRESS` is not
/// `0`. Returns whether they are on.
pub fn enable_on_terminal() -> bool {
    let off = std::env::var_os("DAXLINK_PROGRESS").is_some_and(|v| v == "0");
    let on = !off && std::io::stderr().is_terminal();
    ENABLED.store(on, Ordering::Relaxed);
    on
}

/// Are progress bars on?
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What a bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Items (steps, workloads, operations): "12/40".
    Items,
    /// Bytes: "1.50 GiB/16.00 GiB" with a rate and an estimate.
    Bytes,
}

/// One progress bar on stderr, or nothing when progress is off. Cleared from the
/// terminal when dropped. `&Progress` may be shared between threads.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar of `total` units labelled `prefix` (e.g. "fsck").
    pub fn new(prefix: &str, total: u64, unit: Unit) -> Progress {
        if !enabled()
            || ACTIVE
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Progress { bar: None };
        }
        let template = match unit {
            Unit::Items => "{prefix}: [{bar:20}] {pos}/{len} {msg} ({elapsed})",
            Unit::Bytes => {
                "{prefix}: [{bar:20}] {bytes}/{total_bytes} {msg} ({elapsed}, eta {eta})"
            }
        };
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix.to_string());
        // Draw once now (a short job still shows), then keep the clock moving
        // while one step takes long.
        bar.tick();
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// A bar of `total` named steps.
    pub fn steps(prefix: &str, total: u64) -> Progress {
        Progress::new(prefix, total, Unit::Items)
    }

    /// A bar of `total` bytes.
    pub fn bytes(prefix: &str, total: u64) -> Progress {
        Progress::new(prefix, total, Unit::Bytes)
    }

    /// Is anything drawn?
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// Advance by `n` units.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Change the total.
    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// Set the text after the counts.
    pub fn message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    /// Start the next named step: count the previous one done and show `name`.
    pub fn step(&self, name: &str) {
        if let Some(b) = &self.bar {
            if b.message().is_empty() && b.position() == 0 {
                b.set_message(name.to_string());
            } else {
                b.inc(1);
                b.set_message(name.to_string());
            }
        }
    }

    /// Print a line above the bar (or plainly on stderr when there is no bar).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            ACTIVE.store(false, Ordering::Release);
        }
    }
}

/// "1 range", "2 ranges": `n` and the noun in the right number.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural(0, "range", "ranges"), "0 ranges");
        assert_eq!(plural(1, "range", "ranges"), "1 range");
        assert_eq!(plural(2, "inode", "inodes"), "2 inodes");
    }

    #[test]
    fn off_by_default_is_a_no_op() {
        let p = Progress::steps("test", 3);
        assert!(!p.is_drawn());
        p.step("a");
        p.inc(1);
        p.message("b");
    }
}
