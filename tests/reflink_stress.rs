//! Reflink stress test: seeded random operations over several files and
//! threads through a real mount, checked against an in-memory model after
//! every operation and after every remount; fsck clean and free space as
//! expected at the end.
//!
//! Environment: DAXLINK_STRESS_SEED (default: from the clock, printed),
//! DAXLINK_STRESS_OPS (operations per thread, default 20000),
//! DAXLINK_STRESS_THREADS (default 3), DAXLINK_STRESS_ROUNDS (remounts, default 4).
//! On a terminal it shows a progress bar (with `--nocapture`). For an hour (3
//! threads x 1.2 million operations, about 1,000 a second on two busy cores;
//! the same recipe as docs/TESTING.md's):
//!
//!     DAXLINK_STRESS_OPS=1200000 DAXLINK_STRESS_ROUNDS=40 cargo test --release --test reflink_stress -- --nocapture

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use common::*;
use daxlink::tools::client;
use daxlink::util::progress;

const BS: u64 = 4096;
const MAX: u64 = 768 * 1024;
const FILES: usize = 4;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Worker {
    t: usize,
    root: PathBuf,
    model: Vec<Vec<u8>>,
    rng: Rng,
    ops: u64,
}

impl Worker {
    fn path(&self, i: usize) -> PathBuf {
        self.root.join(format!("t{}-f{}", self.t, i))
    }

    fn verify(&self, i: usize, what: &str) {
        let got = fs::read(self.path(i)).unwrap();
        if got != self.model[i] {
            let at = got.iter().zip(&self.model[i]).position(|(a, b)| a != b);
            panic!(
                "thread {} file {i} differs from the model after {what} (op {}): len {} vs {}, first difference at {at:?}",
                self.t,
                self.ops,
                got.len(),
                self.model[i].len()
            );
        }
    }

    fn open_rw(&self, i: usize) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(i))
            .unwrap()
    }

    fn step(&mut self, base_data: &[u8]) {
        let base = self.root.join("base");
        let r = &mut self.rng;
        let a = r.below(FILES as u64) as usize;
        let b = r.below(FILES as u64) as usize;
        let kind = r.below(17);
        self.ops += 1;
        let sa = self.model[a].len() as u64;
        match kind {
            0..=3 => {
                let off = r.below(MAX - 1);
                let len = 1 + r.below((MAX - off).min(64 * 1024));
                let byte = (r.next() & 0xff) as u8;
                self.open_rw(a)
                    .write_all_at(&vec![byte; len as usize], off)
                    .unwrap();
                let end = (off + len) as usize;
                if self.model[a].len() < end {
                    self.model[a].resize(end, 0);
                }
                self.model[a][off as usize..end].fill(byte);
                self.verify(a, "write");
            }
            4 => {
                // Whole-file clone into another file (its longer tail stays).
                if a == b || sa == 0 {
                    return;
                }
                let sb = self.model[b].len() as u64;
                if !sa.is_multiple_of(BS) && sa < sb {
                    assert_eq!(
                        client::reflink(&self.path(a), &self.path(b), 0, 0, 0)
                            .unwrap_err()
                            .raw_os_error(),
                        Some(libc::EINVAL)
                    );
                    return;
                }
                client::reflink(&self.path(a), &self.path(b), 0, 0, 0).unwrap();
                let src = self.model[a].clone();
                if self.model[b].len() < src.len() {
                    self.model[b].resize(src.len(), 0);
                }
                self.model[b][..src.len()].copy_from_slice(&src);
                self.verify(b, "clone");
            }
            5 | 6 => {
                // Aligned range clone, maybe within one file.
                let nblk = sa / BS;
                if nblk == 0 {
                    return;
                }
                let s = r.below(nblk);
                let n = 1 + r.below((nblk - s).min(32));
                let d = r.below(MAX / BS - n);
                if a == b && d < s + n && s < d + n {
                    let e = client::reflink(&self.path(a), &self.path(b), s * BS, d * BS, n * BS);
                    assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EINVAL));
                    return;
                }
                client::reflink(&self.path(a), &self.path(b), s * BS, d * BS, n * BS).unwrap();
                let src = self.model[a][(s * BS) as usize..((s + n) * BS) as usize].to_vec();
                let end = ((d + n) * BS) as usize;
                if self.model[b].len() < end {
                    self.model[b].resize(end, 0);
                }
                self.model[b][(d * BS) as usize..end].copy_from_slice(&src);
                self.verify(b, "range clone");
            }
            7 => {
                // Clone from the read-only base file shared by all threads.
                let nblk = base_data.len() as u64 / BS;
                let s = r.below(nblk);
                let n = 1 + r.below((nblk - s).min(16));
                let d = r.below(MAX / BS - n);
                client::reflink(&base, &self.path(a), s * BS, d * BS, n * BS).unwrap();
                let end = ((d + n) * BS) as usize;
                if self.model[a].len() < end {
                    self.model[a].resize(end, 0);
                }
                self.model[a][(d * BS) as usize..end]
                    .copy_from_slice(&base_data[(s * BS) as usize..((s + n) * BS) as usize]);
                self.verify(a, "clone from base");
            }
            8 | 9 => {
                // copy_file_range, aligned (shares) or not (copies).
                if sa == 0 {
                    return;
                }
                let aligned = kind == 8;
                let mut soff = r.below(sa);
                let mut doff = r.below(MAX / 2);
                if aligned {
                    soff = soff / BS * BS;
                    doff = doff / BS * BS;
                }
                let len = 1 + r.below(128 * 1024);
                if a == b {
                    let l = len.min(sa - soff);
                    if doff < soff + l && soff < doff + l {
                        return;
                    }
                }
                let (fa, fb) = (File::open(self.path(a)).unwrap(), self.open_rw(b));
                let (mut i, mut o) = (soff as i64, doff as i64);
                let n = unsafe {
                    libc::copy_file_range(
                        fa.as_raw_fd(),
                        &mut i,
                        fb.as_raw_fd(),
                        &mut o,
                        len as usize,
                        0,
                    )
                };
                let expect = len.min(sa - soff);
                assert_eq!(n, expect as isize, "copy_file_range {soff} {doff} {len}");
                let src = self.model[a][soff as usize..(soff + expect) as usize].to_vec();
                let end = (doff + expect) as usize;
                if self.model[b].len() < end {
                    self.model[b].resize(end, 0);
                }
                self.model[b][doff as usize..end].copy_from_slice(&src);
                self.verify(b, "copy_file_range");
            }
            10 => {
                // Dedupe: often of a range made identical just before.
                if a == b || sa < BS {
                    return;
                }
                let nblk = sa / BS;
                let s = r.below(nblk);
                let n = 1 + r.below((nblk - s).min(8));
                let d = r.below(MAX / BS - n);
                let src = self.model[a][(s * BS) as usize..((s + n) * BS) as usize].to_vec();
                if r.chance(70) {
                    self.open_rw(b).write_all_at(&src, d * BS).unwrap();
                    let end = ((d + n) * BS) as usize;
                    if self.model[b].len() < end {
                        self.model[b].resize(end, 0);
                    }
                    self.model[b][(d * BS) as usize..end].copy_from_slice(&src);
                }
                let sb = self.model[b].len() as u64;
                if (d + n) * BS > sb {
                    return;
                }
                let same = self.model[b][(d * BS) as usize..((d + n) * BS) as usize] == src[..];
                let (ok, bytes) =
                    client::dedupe(&self.path(a), &self.path(b), s * BS, d * BS, n * BS).unwrap();
                assert_eq!(ok, same);
                assert_eq!(bytes, if same { n * BS } else { 0 });
                self.verify(b, "dedupe");
            }
            11 | 12 => {
                // Punch or zero-range.
                let off = r.below(MAX);
                let len = 1 + r.below(64 * 1024);
                let f = self.open_rw(a);
                let mode = if kind == 11 {
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                } else {
                    libc::FALLOC_FL_ZERO_RANGE
                };
                let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
                assert_eq!(
                    rc,
                    0,
                    "fallocate {mode:#x}: {}",
                    std::io::Error::last_os_error()
                );
                let end = (off + len) as usize;
                if kind == 12 && self.model[a].len() < end {
                    self.model[a].resize(end, 0);
                }
                let e = end.min(self.model[a].len());
                if (off as usize) < e {
                    self.model[a][off as usize..e].fill(0);
                }
                self.verify(a, "punch/zero");
            }
            13 => {
                let size = r.below(MAX);
                self.open_rw(a).set_len(size).unwrap();
                self.model[a].resize(size as usize, 0);
                self.verify(a, "truncate");
            }
            14 => {
                client::unshare(&self.path(a), 0, 0).unwrap();
                assert!(client::extents(&self.path(a))
                    .unwrap()
                    .iter()
                    .all(|e| e.refcount == 1));
                self.verify(a, "unshare");
                self.open_rw(a).sync_all().unwrap();
            }
            15 => {
                // Unlink (probably shared) and recreate empty.
                fs::remove_file(self.path(a)).unwrap();
                File::create(self.path(a)).unwrap();
                self.model[a].clear();
                self.verify(b, "unlink of another file");
            }
            _ => {
                // Swap two files by renames.
                if a == b {
                    return;
                }
                let tmp = self.root.join(format!("t{}-tmp", self.t));
                fs::rename(self.path(a), &tmp).unwrap();
                fs::rename(self.path(b), self.path(a)).unwrap();
                fs::rename(&tmp, self.path(b)).unwrap();
                self.model.swap(a, b);
                self.verify(a, "rename");
                self.verify(b, "rename");
            }
        }
    }
}

#[test]
fn reflink_stress() {
    let seed = env(
        "DAXLINK_STRESS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let ops = env("DAXLINK_STRESS_OPS", 20000);
    let threads = env("DAXLINK_STRESS_THREADS", 3) as usize;
    let rounds = env("DAXLINK_STRESS_ROUNDS", 4).max(1);
    eprintln!("reflink_stress: DAXLINK_STRESS_SEED={seed} ops/thread={ops} threads={threads} rounds={rounds}");
    // A progress bar on a terminal (e.g. with --nocapture); nothing otherwise.
    progress::enable_on_terminal();
    let p = progress::Progress::steps("reflink_stress", ops * threads as u64);
    let t0 = std::time::Instant::now();
    let img = Image::new("stress", 512 << 20);
    let mut m = Mounted::new(&img.path, "threads=4");
    let initial = client::stat(m.root()).unwrap();
    let base = m.path("base");
    let base_data = pattern(seed, 256 * BS as usize);
    fs::write(&base, &base_data).unwrap();
    let mut workers: Vec<Worker> = (0..threads)
        .map(|t| Worker {
            t,
            root: m.root().to_path_buf(),
            model: vec![Vec::new(); FILES],
            rng: Rng(seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(t as u64 * 7919)
                | 1),
            ops: 0,
        })
        .collect();
    for w in &workers {
        for i in 0..FILES {
            File::create(w.path(i)).unwrap();
        }
    }
    p.message(&format!("round 1/{rounds}"));
    for round in 0..rounds {
        let n = ops / rounds + if round == 0 { ops % rounds } else { 0 };
        std::thread::scope(|s| {
            for w in workers.iter_mut() {
                let base_data = &base_data;
                let p = &p;
                s.spawn(move || {
                    for _ in 0..n {
                        w.step(base_data);
                        p.inc(1);
                    }
                });
            }
        });
        // Unmount, fsck, remount; everything must still match the model.
        m = m.cycle("threads=4");
        for w in workers.iter_mut() {
            w.root = m.root().to_path_buf();
            for i in 0..FILES {
                w.verify(i, "remount");
            }
        }
        assert_eq!(fs::read(m.path("base")).unwrap(), base_data);
        p.println(&format!(
            "round {round}: {} ops done, {:?}",
            (round + 1) * ops / rounds * threads as u64,
            t0.elapsed()
        ));
        if round + 1 < rounds {
            p.message(&format!("round {}/{rounds}", round + 2));
        }
    }
    // Delete everything: every data block returns (record blocks stay).
    for w in &workers {
        for i in 0..FILES {
            fs::remove_file(w.path(i)).unwrap();
        }
    }
    fs::remove_file(m.path("base")).unwrap();
    let end = client::stat(m.root()).unwrap();
    assert_eq!(end.shared_bytes, 0);
    assert_eq!(
        end.free_bytes + end.metadata_bytes,
        initial.free_bytes + initial.metadata_bytes,
        "space leaked: {initial:?} -> {end:?}"
    );
    m.cycle("");
    drop(p);
    eprintln!(
        "reflink_stress: seed {seed}: {} operations in {:?}, fsck clean",
        ops * threads as u64,
        t0.elapsed()
    );
}
