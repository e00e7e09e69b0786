//! Standard output for the tools. `println!` panics when the reader has gone
//! away (`daxlink crashtest --list | head`: EPIPE, since Rust ignores
//! SIGPIPE); [`outln!`](crate::outln) and [`out!`](crate::out) end the
//! program quietly instead, as SIGPIPE ends a C tool: no message, exit
//! status 141 (128 + SIGPIPE, what a shell reports for one). Any other
//! failure to write is one line on stderr and exit 1.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

/// The exit status after the reader of standard output went away.
pub const EXIT_PIPE: i32 = 128 + libc::SIGPIPE;

/// Write `args` to standard output and flush it (see the module).
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_PIPE);
        }
        let _ = writeln!(
            std::io::stderr(),
            "{}: writing to standard output: {e}",
            invoked_name("daxlink")
        );
        std::process::exit(1);
    }
}

/// Prints a tool's status line on stderr as "PROG: line" (PROG as invoked);
/// given to `media::lock::on_wait` at start-up.
pub fn stderr_notice(msg: &str) {
    eprintln!("{}: {msg}", invoked_name("daxlink"));
}

/// The name a tool was invoked by (the basename of argv[0], e.g. `mkfs.daxlink`
/// through the installed name, `mkfs-daxlink` from the build directory), for its
/// usage and error lines; `default` when argv[0] is missing or empty.
pub fn invoked_name(default: &str) -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `println!` that stops the program quietly when the reader has gone away.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::util::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::util::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that stops the program quietly when the reader has gone away.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::util::out::write(format_args!($($arg)*))
    };
}
