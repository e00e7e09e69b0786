//! `daxlink run [--] CMD ARGS...`: run CMD with the direct-access shim
//! (`libdaxlink_client.so`, the crate `client/`) preloaded, so that its
//! reads and overwrites of files on a daxlink mount that offers direct
//! access are served by loads and stores into the image. The shim is looked
//! for next to this executable, then in `../lib` from it; an LD_PRELOAD
//! already set is kept after it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

pub const SHIM: &str = "libdaxlink_client.so";

/// Where the shim is, if installed beside `daxlink`.
fn shim() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find its own executable: {e}"))?;
    let dir = exe.parent().unwrap_or(&exe).to_path_buf();
    let candidates = [dir.join(SHIM), dir.join("../lib").join(SHIM)];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "{SHIM} not found next to {} nor in {} (build it with `cargo build --release --workspace`, install it with scripts/install.sh)",
        dir.display(),
        dir.join("../lib").display()
    ))
}

/// Exec `cmd` with the shim preloaded; returns only on failure (the exit
/// status: 127 if the shim or the command is missing, 126 otherwise).
pub fn run(cmd: &[OsString]) -> i32 {
    let Some((prog, args)) = cmd.split_first() else {
        eprintln!("daxlink run: no command given (daxlink run [--] CMD ARGS...)");
        return 127;
    };
    let lib = match shim() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("daxlink run: {e}");
            return 127;
        }
    };
    // ld.so splits LD_PRELOAD at spaces and colons.
    if lib
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|&b| b == b' ' || b == b':')
    {
        eprintln!("daxlink run: the shim's path {} holds a space or a colon, which LD_PRELOAD cannot carry", lib.display());
        return 127;
    }
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(OsStr::new(":"));
        preload.push(old);
    }
    let e = std::process::Command::new(prog)
        .args(args)
        .env("LD_PRELOAD", preload)
        .exec();
    eprintln!("daxlink run: {}: {e}", prog.to_string_lossy());
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
