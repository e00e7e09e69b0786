//! Tests of direct access run python under `daxlink run` with the shim's
//! debug lines on; each process's shim reports at exit what it served.

use std::process::Command;

use super::{run_deadline, shim, Out, DAXLINK};

/// What one process's shim said at exit: (direct reads, direct writes,
/// kernel-path reads/writes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub reads: u64,
    pub writes: u64,
    pub kernel: u64,
}

/// The exit lines of every process in `stderr`, by pid.
pub fn served(stderr: &str) -> Vec<(u32, Served)> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix("daxlink-direct[") else {
            continue;
        };
        let Some((pid, msg)) = rest.split_once("]: exit: ") else {
            continue;
        };
        let n: Vec<u64> = msg
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        out.push((
            pid.parse().unwrap(),
            Served {
                reads: n[0],
                writes: n[1],
                kernel: n[2],
            },
        ));
    }
    out
}

pub fn total(stderr: &str) -> Served {
    served(stderr)
        .into_iter()
        .fold(Served::default(), |a, (_, s)| Served {
            reads: a.reads + s.reads,
            writes: a.writes + s.writes,
            kernel: a.kernel + s.kernel,
        })
}

/// What the processes of `o` served, once it exited 0 (else the test fails
/// with its output).
pub fn served_ok(o: &Out) -> Served {
    assert_eq!(o.rc, 0, "{}\n{}", o.stdout, o.stderr);
    total(&o.stderr)
}

/// Python prelude: a pattern, and a kernel-path helper (a python3 without
/// the shim) for "another process".
pub const PRELUDE: &str = r#"
import os, sys, subprocess
import functools
@functools.lru_cache(maxsize=None)
def pat(seed, n):
    # tests/common's pattern(): one byte of xorshift64 per step.
    M = 0xFFFFFFFFFFFFFFFF
    x = (seed * 0x9E3779B97F4A7C15 | 1) & M
    b = bytearray(n)
    for i in range(n):
        x ^= (x << 13) & M; x ^= x >> 7; x ^= (x << 17) & M
        b[i] = x & 0xFF
    return bytes(b)
PLAIN = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', 'DAXLINK_DIRECT_DEBUG')}
def kernel(code, *args, data=None):
    # data: bytes on the child's stdin (arguments are limited to 128 KiB)
    r = subprocess.run([sys.executable, '-c', 'import os, sys\n' + code] + [str(a) for a in args],
                       env=PLAIN, capture_output=True, input=data)
    assert r.returncode == 0, r.stderr
    return r.stdout
def check(cond, what):
    if not cond:
        print('FAILED:', what, flush=True); sys.exit(1)
"#;

/// Run a python script under `daxlink run` with the shim's debug lines on.
pub fn py(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    py_under(&[], script, args)
}

/// `py` started through `prefix` (e.g. setpriv), which runs `daxlink run`.
pub fn py_under(prefix: &[&str], script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    shim();
    let mut c = match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest).arg(DAXLINK);
            c
        }
        None => Command::new(DAXLINK),
    };
    c.args(["run", "--", "python3", "-c"])
        .arg(format!("{PRELUDE}\n{script}"))
        .args(args.iter().map(|a| a.as_ref()))
        .env("DAXLINK_DIRECT_DEBUG", "1");
    run_deadline(c, 180)
}

pub fn py_ok(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    let o = py(script, args);
    assert_eq!(
        o.rc, 0,
        "python under daxlink run failed\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    o
}
