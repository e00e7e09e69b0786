//! Standard output for the tools. `println!` panics when the reader has gone
//! away (`daxlink crashtest --list | head`: EPIPE, since Rust ignores
//! SIGPIPE); [`outln!`](crate::outln) and [`out!`](crate::out) end the
//! program quietly instead, as SIGPIPE ends a C tool: no message, exit
//! status 141 (128 + SIGPIPE, what a shell reports for one). Any other
//! failure to write is one line on stderr and exit 1.

#![forbid(unsafe_code)]

use std::io::Write;

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
            crate::cli::invoked_name("daxlink")
        );
        std::process::exit(1);
    }
}

/// `println!` that stops the program quietly when the reader has gone away.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that stops the program quietly when the reader has gone away.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}
