//! Two-process mode: a worker process on the kernel path (started without
//! LD_PRELOAD, so no shim serves it) makes part of the operations on the
//! file under test, strictly in turn with the main process (one request,
//! one answer over pipes), so that the model stays exact. Its changes are
//! the ones a direct client's map must not survive: writes, truncates,
//! punches, zero ranges; its reads check what the kernel path sees after
//! the main process's direct writes.
//!
//! The worker opens the file and answers once ({0, 0}, or {-1, errno})
//! before the main process makes its first access: its open file predates
//! any direct-access lease, as a long-running reader's would. A request is
//! five little-endian u64s {op, a, b, c, 0}; the answer two i64s {result,
//! errno}, then for a read `result` bytes.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use libc::c_int;

use crate::model::Rng;
use crate::ops::{compare, Fail, Fsx, Kind, Res};
use crate::sys;

const QUIT: u64 = 0;
const WRITE: u64 = 1;
const TRUNCATE: u64 = 2;
const FALLOCATE: u64 = 3;
const READ: u64 = 4;
const REOPEN: u64 = 5;

pub struct Worker {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
}

impl Worker {
    /// This program again, as `--worker FILE`, without LD_PRELOAD.
    pub fn start(file: &Path) -> std::io::Result<Worker> {
        let mut child = Command::new("/proc/self/exe")
            .arg("--worker")
            .arg(file)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let to = child.stdin.take().unwrap();
        let mut from = child.stdout.take().unwrap();
        // Its answer to nothing: the file is open (before the main
        // process's first access, so before any direct-access lease).
        let mut a = [0u8; 16];
        from.read_exact(&mut a)?;
        if i64::from_le_bytes(a[..8].try_into().unwrap()) != 0 {
            let _ = child.wait();
            return Err(std::io::Error::from_raw_os_error(i64::from_le_bytes(
                a[8..].try_into().unwrap(),
            ) as i32));
        }
        Ok(Worker { child, to, from })
    }

    /// One request; the answer (result, errno) and the data a read returns.
    fn call(&mut self, req: [u64; 4]) -> Result<(i64, Vec<u8>), Fail> {
        let mut b = [0u8; 40];
        for (i, v) in req.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let lost = |e: std::io::Error| Fail::Wrong(format!("the kernel-path worker is gone: {e}"));
        self.to.write_all(&b).map_err(lost)?;
        let mut a = [0u8; 16];
        self.from.read_exact(&mut a).map_err(lost)?;
        let r = i64::from_le_bytes(a[..8].try_into().unwrap());
        let e = i64::from_le_bytes(a[8..].try_into().unwrap());
        if r < 0 {
            return Err(Fail::Errno {
                what: format!("kernel-path worker, request {}", req[0]),
                errno: e as i32,
            });
        }
        let mut data = Vec::new();
        if req[0] == READ {
            data.resize(r as usize, 0);
            self.from.read_exact(&mut data).map_err(lost)?;
        }
        Ok((r, data))
    }

    pub fn read(&mut self, off: u64, len: u64) -> Result<Vec<u8>, Fail> {
        Ok(self.call([READ, off, len, 0])?.1)
    }

    pub fn stop(mut self) {
        let _ = self.call([QUIT, 0, 0, 0]);
        let _ = self.child.wait();
    }
}

/// The worker's side: serve requests on stdin until QUIT or end of input.
pub fn serve(file: &Path) -> i32 {
    let (mut inp, mut out) = (std::io::stdin().lock(), std::io::stdout().lock());
    let opened = sys::open(file, libc::O_RDWR);
    let mut a = [0u8; 16];
    if let Err(e) = opened {
        a[..8].copy_from_slice(&(-1i64).to_le_bytes());
        a[8..].copy_from_slice(&(e as i64).to_le_bytes());
    }
    if out.write_all(&a).and_then(|_| out.flush()).is_err() {
        return 1;
    }
    let Ok(mut fd) = opened else { return 1 };
    let mut b = [0u8; 40];
    while inp.read_exact(&mut b).is_ok() {
        let v: Vec<u64> = (0..5)
            .map(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
            .collect();
        let mut data = Vec::new();
        let r: sys::R<usize> = match v[0] {
            QUIT => break,
            WRITE => {
                let mut d = vec![0u8; v[2] as usize];
                Rng::new(v[3]).fill(&mut d);
                sys::pwrite(fd, &d, v[1])
            }
            TRUNCATE => sys::ftruncate(fd, v[1]).map(|_| 0),
            FALLOCATE => sys::fallocate(fd, v[3] as c_int, v[1], v[2]).map(|_| 0),
            READ => {
                data.resize(v[2] as usize, 0);
                sys::pread(fd, &mut data, v[1]).inspect(|&n| data.truncate(n))
            }
            REOPEN => sys::close(fd)
                .and_then(|_| sys::open(file, libc::O_RDWR))
                .map(|f| {
                    fd = f;
                    0
                }),
            _ => Err(libc::EINVAL),
        };
        let (res, err) = match r {
            Ok(n) => (n as i64, 0i64),
            Err(e) => (-1, e as i64),
        };
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&res.to_le_bytes());
        a[8..].copy_from_slice(&err.to_le_bytes());
        if out
            .write_all(&a)
            .and_then(|_| out.write_all(&data))
            .and_then(|_| out.flush())
            .is_err()
        {
            return 1;
        }
    }
    0
}

impl Fsx {
    fn kcall(&mut self, req: [u64; 4]) -> Result<(i64, Vec<u8>), Fail> {
        self.worker
            .as_mut()
            .expect("the kernel op needs the worker")
            .call(req)
    }

    /// One operation by the kernel-path worker, on the file under test:
    /// writes 30%, truncates 5%, punches and zero ranges 10%, reopens 5%,
    /// reads (what sees a stale page) 50%.
    pub fn op_kernel(&mut self) -> Res {
        let which = self.rng.below(20);
        let size = self.f[0].m.size();
        let max = self.cfg.max_size;
        let bs = self.cfg.block;
        match which {
            0..=5 => {
                let len = self.rng.between(1, self.cfg.max_len.min(max));
                let off = if self.rng.one_in(2) {
                    self.rng.below(size.max(1)).min(max - len)
                } else {
                    self.rng.below(max - len + 1)
                };
                let seed = self.rng.next();
                self.note(format!("kernel pwrite {off:#x} len {len:#x}"));
                let (n, _) = self.kcall([WRITE, off, len, seed])?;
                if n as u64 != len {
                    return Err(Fail::Wrong(format!("kernel pwrite: wrote {n} of {len}")));
                }
                let mut d = vec![0u8; len as usize];
                Rng::new(seed).fill(&mut d);
                self.f[0].m.write(off, &d);
                Ok(())
            }
            6 => {
                let mut to = self.rng.below(size + 1);
                if self.rng.one_in(2) {
                    to -= to % bs;
                }
                self.note(format!("kernel ftruncate {size:#x} -> {to:#x}"));
                self.kcall([TRUNCATE, to, 0, 0])?;
                self.f[0].m.resize(to);
                Ok(())
            }
            7 | 8 => {
                let off = self.rng.below(size.max(1));
                let len = self.rng.between(1, self.cfg.max_len).min(max - off).max(1);
                let zero = self.cfg.weights.iter().any(|w| w.0 == Kind::Zero);
                let (mode, what) = if which == 7 || !zero {
                    (
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        "punch hole",
                    )
                } else {
                    (
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        "zero range",
                    )
                };
                self.note(format!("kernel {what} {off:#x} len {len:#x}"));
                self.kcall([FALLOCATE, off, len, mode as u64])?;
                self.f[0].m.zero(off, len);
                Ok(())
            }
            9 => {
                self.note("kernel close and reopen".into());
                self.kcall([REOPEN, 0, 0, 0])?;
                Ok(())
            }
            _ => {
                let off = self.rng.below(size + 1);
                let len = self.rng.between(1, self.cfg.max_len);
                self.note(format!("kernel pread {off:#x} len {len:#x}"));
                let got = self.kcall([READ, off, len, 0])?.1;
                compare(
                    "kernel pread",
                    off,
                    self.f[0].m.read(off, len as usize),
                    &got,
                )
            }
        }
    }
}
