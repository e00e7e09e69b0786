//! `daxlink demo --real`: the device is a real process. For a write pin the
//! scenario starts `daxlink-holder FILE` (crate `client/`, installed next to
//! `daxlink`), which maps the file's first block directly (a direct mmap:
//! the image's block itself, under a pin for the mapping's life) and, on
//! the scenario's word, stores into it; `unpin` is its munmap. Its pin is
//! a pin like the ioctl's, so the page models answer as in the simulation,
//! but the bytes come from another process's stores.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A running holder process and the pin its mapping holds.
pub(super) struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pin: u64,
}

/// `daxlink-holder`, next to this program.
fn program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .unwrap_or(Path::new("."))
        .join("daxlink-holder");
    if p.is_file() {
        Ok(p)
    } else {
        Err(io::Error::other(format!(
            "{} is missing (built by `cargo build --release --workspace`)",
            p.display()
        )))
    }
}

impl Holder {
    /// Start a holder mapping the first block of `file` read-write.
    pub(super) fn start(file: &Path) -> io::Result<Holder> {
        let mut child = Command::new(program()?)
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("stdin"))?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("stdout"))?,
        );
        let mut h = Holder {
            child,
            stdin,
            stdout,
            pin: 0,
        };
        let line = h.line()?;
        match line
            .strip_prefix("mapped ")
            .and_then(|n| n.trim().parse().ok())
        {
            Some(pin) => {
                h.pin = pin;
                Ok(h)
            }
            None => {
                h.kill();
                Err(io::Error::other(format!("daxlink-holder: {}", line.trim())))
            }
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        self.stdout.read_line(&mut s)?;
        Ok(s)
    }

    fn ask(&mut self, cmd: &str) -> io::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let l = self.line()?;
        if l.trim() == "ok" {
            Ok(())
        } else {
            Err(io::Error::other(format!("daxlink-holder: {}", l.trim())))
        }
    }

    /// "pid N (daxlink-holder)": who holds the pin, for the steps.
    pub(super) fn who(&self) -> String {
        format!("pid {} (daxlink-holder)", self.child.id())
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process stores `data` at the start of its mapping.
    pub(super) fn store(&mut self, data: &[u8]) -> io::Result<()> {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.ask(&format!("store {hex}"))
    }

    /// munmap, and the process's exit.
    pub(super) fn unmap(mut self) -> io::Result<()> {
        self.ask("unmap")?;
        self.child.wait()?;
        Ok(())
    }

    /// kill -9 (its pin ends when the kernel closes its files).
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
