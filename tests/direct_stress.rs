//! Reflink stress with direct clients: python processes under `daxlink run`
//! read and overwrite their own regions of shared files with loads and
//! stores into the image, while threads of this process (the kernel path)
//! overwrite, punch, zero, truncate, clone, dedupe, copy_file_range and
//! unshare the same files, with the direct regions as clone, copy and
//! dedupe sources and as dedupe destinations. Bounded by time, seeded.
//!
//! Every file has FILES x 64 blocks: blocks [16w, 16w+16) belong to direct
//! worker w (two workers), [32, 48) to kernel thread 0 and [48, 64) to
//! kernel thread 1, the only one that truncates (never below block 48).
//! Each owner keeps a model of its region and checks it:
//! - a worker writes whole blocks that describe themselves (header: file,
//!   block, worker, sequence, the write's first block and count, a crc32 of
//!   the body), checks every read against its model and its whole region
//!   every 300 operations, and at the end hands its model to this process;
//! - a kernel thread reads its region back after every operation. What it
//!   clones or copies out of a worker's region is checked block by block
//!   against the header (the same file and block, the owner, crc: no
//!   foreign or torn block) and as a snapshot (a block of a multi-block
//!   write appears only with every other block of that write at least as
//!   new), then becomes its model;
//! - after each round (umount, fsck -n clean, mount) every byte of every
//!   file is compared with the models; each worker must have served reads
//!   and writes directly (the shim's exit counts, DAXLINK_DIRECT_DEBUG=1).
//!
//! The same on each page model: leases are short-term pins, recalled the
//! same way under every model.
//!
//! Environment: DAXLINK_DSTRESS_SEED (default from the clock, printed),
//! DAXLINK_DSTRESS_SECS (per round, default 6), DAXLINK_DSTRESS_ROUNDS
//! (default 2). Needs the shim: `cargo build --release --workspace`.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use daxlink::tools::client;

const BS: u64 = 4096;
const FILES: usize = 3;
const BLOCKS: u64 = 64;
/// Blocks per region.
const REG: u64 = 16;
const WORKERS: u64 = 2;
const HDR: usize = 40;

/// A direct worker: argv root, worker, seed, secs, model file.
const WORKER: &str = r#"
import os, sys, random, struct, zlib, time
root, w, seed, secs, model_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
BS, REG, FILES, HDR = 4096, 16, 3, 40
base = w * REG
rng = random.Random(seed * 1000 + w)
fds = [os.open('%s/f%d' % (root, i), os.O_RDWR) for i in range(FILES)]
def fail(msg):
    print('FAILED worker %d seed %d: %s' % (w, seed, msg), flush=True); sys.exit(1)
if os.path.exists(model_path):
    raw = open(model_path, 'rb').read()
    seq = struct.unpack('<Q', raw[:8])[0]
    model = [bytearray(raw[8 + i * REG * BS: 8 + (i + 1) * REG * BS]) for i in range(FILES)]
else:
    seq = 0
    model = [bytearray(os.pread(fd, REG * BS, base * BS)) for fd in fds]
def block(f, b, first, count):
    body = rng.randbytes(BS - HDR)
    return struct.pack('<4sIIIQIIII', b'DXST', f, b, w, seq, first, count, zlib.crc32(body), 0) + body
def check_all(what):
    for f in range(FILES):
        got = os.pread(fds[f], REG * BS, base * BS)
        if got != model[f]:
            at = next(i for i in range(len(got)) if i >= len(model[f]) or got[i] != model[f][i]) if len(got) else 0
            fail('%s: file %d region differs at byte %d (block %d)' % (what, f, at, base + at // BS))
check_all('start')
ops = writes = reads = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    ops += 1
    f = rng.randrange(FILES)
    if rng.random() < 0.5:
        b = rng.randrange(REG)
        n = rng.randint(1, min(4, REG - b))
        seq += 1
        data = b''.join(block(f, base + b + i, base + b, n) for i in range(n))
        if os.pwrite(fds[f], data, (base + b) * BS) != len(data):
            fail('short write')
        model[f][b * BS:(b + n) * BS] = data
        writes += 1
    else:
        off = rng.randrange(REG * BS)
        n = rng.randint(1, min(3 * BS, REG * BS - off))
        got = os.pread(fds[f], n, base * BS + off)
        if got != model[f][off:off + n]:
            fail('read of file %d at %d+%d (block %d) differs from the model' % (f, base * BS + off, n, base + off // BS))
        reads += 1
    if ops % 100 == 0:
        os.fsync(fds[rng.randrange(FILES)])
    if ops % 300 == 0:
        check_all('op %d' % ops)
check_all('end')
for fd in fds:
    os.fsync(fd)
with open(model_path, 'wb') as out:
    out.write(struct.pack('<Q', seq))
    for m in model:
        out.write(m)
print('ok ops %d writes %d reads %d' % (ops, writes, reads), flush=True)
"#;

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
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// A block as a worker writes it (the initial content is sequence 0).
fn worker_block(f: u32, b: u32, w: u32, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(BS as usize);
    v.extend_from_slice(b"DXST");
    for x in [f, b, w] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&seq.to_le_bytes());
    for x in [b, 1, crc32fast::hash(body), 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(body);
    v
}

/// `data` was cloned or copied from worker blocks `src_block..` of file
/// `src_file`: every block must be one the worker wrote there, whole, and
/// the blocks together a snapshot (no write seen in part).
fn check_snapshot(data: &[u8], src_file: usize, src_block: u64) -> Result<(), String> {
    let w = (src_block / REG) as u32;
    let mut seqs = Vec::new();
    for (i, b) in data.chunks(BS as usize).enumerate() {
        let want = src_block + i as u64;
        let (f, blk, ow) = (u32_at(b, 4), u32_at(b, 8), u32_at(b, 12));
        let seq = u64::from_le_bytes(b[16..24].try_into().unwrap());
        let (first, count, crc) = (u32_at(b, 24), u32_at(b, 28), u32_at(b, 32));
        if &b[..4] != b"DXST" || (f, blk as u64, ow) != (src_file as u32, want, w) {
            return Err(format!(
                "block {i}: not worker {w}'s block {want} of file {src_file} (header {:02x?})",
                &b[..HDR]
            ));
        }
        if crc32fast::hash(&b[HDR..]) != crc {
            return Err(format!("block {i} (seq {seq}): torn (crc)"));
        }
        seqs.push((want, seq, first as u64, count as u64));
    }
    for &(blk, seq, first, count) in &seqs {
        for &(other, s2, _, _) in &seqs {
            if other >= first && other < first + count && s2 < seq {
                return Err(format!(
                    "block {blk} shows write {seq} (blocks {first}+{count}) but block {other} is older ({s2}): a torn write"
                ));
            }
        }
    }
    Ok(())
}

/// A kernel-path thread: its region [base, base + REG) of every file.
struct Kernel {
    t: u64,
    root: PathBuf,
    /// Per file, the region's bytes up to the file's end.
    model: Vec<Vec<u8>>,
    rng: Rng,
    ops: u64,
    /// The kind of the operation under way (for messages).
    kind: u64,
    seed: u64,
}

impl Kernel {
    fn base(&self) -> u64 {
        (WORKERS + self.t) * REG * BS
    }
    fn path(&self, f: usize) -> PathBuf {
        self.root.join(format!("f{f}"))
    }
    fn rw(&self, f: usize) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(f))
            .unwrap()
    }
    fn put(&mut self, f: usize, off: u64, data: &[u8]) {
        let (o, e) = (off as usize, off as usize + data.len());
        if self.model[f].len() < e {
            self.model[f].resize(e, 0);
        }
        self.model[f][o..e].copy_from_slice(data);
    }
    fn fail(&self, what: &str) -> ! {
        panic!(
            "kernel thread {} op {} (kind {}): {what} (DAXLINK_DSTRESS_SEED={})",
            self.t, self.ops, self.kind, self.seed
        )
    }
    fn verify(&self, f: usize, what: &str) {
        let len = self.model[f].len();
        // The last region also shows where the file ends.
        let mut got = vec![0u8; len + (self.t == 1) as usize];
        let n = File::open(self.path(f))
            .unwrap()
            .read_at(&mut got, self.base())
            .unwrap();
        if n != len || got[..len] != self.model[f][..] {
            let at = got.iter().zip(&self.model[f]).position(|(a, b)| a != b);
            self.fail(&format!(
                "file {f}: region differs after {what}: {n} bytes read, {len} expected, first difference at {at:?}"
            ));
        }
    }
    /// Read `n` blocks of file `f` from block `b` (kernel path).
    fn read_blocks(&self, f: usize, b: u64, n: u64) -> Vec<u8> {
        let mut v = vec![0u8; (n * BS) as usize];
        let file = File::open(self.path(f)).unwrap();
        if let Err(e) = file.read_exact_at(&mut v, b * BS) {
            // Whose size was short: the kernel's cached one or the daemon's.
            let cached = statx_size(&file, libc::AT_STATX_DONT_SYNC);
            let synced = statx_size(&file, libc::AT_STATX_FORCE_SYNC);
            let again = file.read_at(&mut v, b * BS).unwrap();
            self.fail(&format!(
                "read of file {f} blocks {b}+{n}: {e}: the kernel's cached size {cached}, the daemon's {synced}, the model's {}; read again: {again} bytes",
                self.base() + self.model[f].len() as u64
            ));
        }
        v
    }
    /// A random worker range (file, first block, blocks).
    fn worker_range(&mut self, max: u64) -> (usize, u64, u64) {
        let f = self.rng.below(FILES as u64) as usize;
        let w = self.rng.below(WORKERS);
        let s = self.rng.below(REG);
        let n = 1 + self.rng.below((REG - s).min(max));
        (f, w * REG + s, n)
    }
    /// A random range of blocks inside this region, below its end: (first
    /// block in the file, blocks); None if the region is shorter than a block.
    fn own_range(&mut self, f: usize, max: u64) -> Option<(u64, u64)> {
        let blocks = (self.model[f].len() as u64 / BS).min(REG);
        if blocks == 0 {
            return None;
        }
        let s = self.rng.below(blocks);
        let n = 1 + self.rng.below((blocks - s).min(max));
        Some((self.base() / BS + s, n))
    }

    fn step(&mut self) {
        self.ops += 1;
        let f = self.rng.below(FILES as u64) as usize;
        let g = self.rng.below(FILES as u64) as usize;
        let kind = self.rng.below(20);
        self.kind = kind;
        let base = self.base();
        match kind {
            0..=4 => {
                // Overwrite, anywhere in the region, any alignment.
                let off = self.rng.below(REG * BS - 1);
                let len = 1 + self.rng.below((REG * BS - off).min(20000));
                let data = pattern(self.rng.next(), len as usize);
                self.rw(f).write_all_at(&data, base + off).unwrap();
                self.put(f, off, &data);
            }
            5 | 6 => {
                // Punch (keeps the size) or zero range (may extend).
                let off = self.rng.below(REG * BS - 1);
                let len = 1 + self.rng.below((REG * BS - off).min(40000));
                let zero = kind == 6;
                let mode = if zero && self.t == 1 {
                    libc::FALLOC_FL_ZERO_RANGE
                } else if zero {
                    // Thread 0's region lies below EOF, so KEEP_SIZE changes
                    // nothing, but without it the kernel marks the size
                    // unstable for the call and ignores the size of every
                    // GETATTR reply meanwhile: a clone that extends the
                    // file then (thread 1's; the kernel learns of it only
                    // through the daemon's invalidation) is not seen, and
                    // thread 1 reads short. See the report of this test.
                    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
                } else {
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                };
                let file = self.rw(f);
                // SAFETY: fallocate(2) on an open descriptor.
                let rc = unsafe {
                    libc::fallocate(file.as_raw_fd(), mode, (base + off) as i64, len as i64)
                };
                if rc != 0 {
                    self.fail(&format!("fallocate: {}", std::io::Error::last_os_error()));
                }
                let cur = self.model[f].len() as u64;
                let end = if zero {
                    off + len
                } else {
                    (off + len).min(cur)
                };
                if end > off {
                    self.put(f, off, &vec![0; (end - off) as usize]);
                }
            }
            7..=10 => {
                // Clone (or aligned copy_file_range, which shares) out of
                // a worker's region: a snapshot of it.
                let (sf, sb, n) = self.worker_range(6);
                let d = self.rng.below(REG - n + 1);
                let doff = base + d * BS;
                if kind == 10 {
                    let (src, dst) = (File::open(self.path(sf)).unwrap(), self.rw(f));
                    let (mut i, mut o) = ((sb * BS) as i64, doff as i64);
                    // SAFETY: copy_file_range(2) between open descriptors.
                    let r = unsafe {
                        libc::copy_file_range(
                            src.as_raw_fd(),
                            &mut i,
                            dst.as_raw_fd(),
                            &mut o,
                            (n * BS) as usize,
                            0,
                        )
                    };
                    if r != (n * BS) as isize {
                        self.fail(&format!("copy_file_range: {r}"));
                    }
                } else if let Err(e) =
                    client::reflink(&self.path(sf), &self.path(f), sb * BS, doff, n * BS)
                {
                    self.fail(&format!("clone from worker: {e}"));
                }
                let got = self.read_blocks(f, doff / BS, n);
                if let Err(e) = check_snapshot(&got, sf, sb) {
                    self.fail(&format!(
                        "{} of file {sf} blocks {sb}+{n} into file {f}: {e}",
                        if kind == 10 {
                            "copy_file_range"
                        } else {
                            "clone"
                        }
                    ));
                }
                self.put(f, d * BS, &got);
            }
            11 => {
                // Clone from this region of another file.
                if f == g {
                    return;
                }
                let Some((s, n)) = self.own_range(g, 8) else {
                    return;
                };
                let d = self.rng.below(REG - n + 1);
                client::reflink(&self.path(g), &self.path(f), s * BS, base + d * BS, n * BS)
                    .unwrap_or_else(|e| self.fail(&format!("clone: {e}")));
                let src = self.model[g][(s * BS - base) as usize..((s + n) * BS - base) as usize]
                    .to_vec();
                self.put(f, d * BS, &src);
            }
            12 | 13 => {
                // copy_file_range inside this region of two files, any alignment.
                if f == g {
                    return;
                }
                let cur = self.model[g].len() as u64;
                if cur == 0 {
                    return;
                }
                let so = self.rng.below(cur);
                let len = 1 + self.rng.below(30000);
                let doff = self.rng.below(REG * BS - 1);
                let len = len.min(cur - so).min(REG * BS - doff);
                let (src, dst) = (File::open(self.path(g)).unwrap(), self.rw(f));
                let (mut i, mut o) = ((base + so) as i64, (base + doff) as i64);
                // SAFETY: copy_file_range(2) between open descriptors.
                let r = unsafe {
                    libc::copy_file_range(
                        src.as_raw_fd(),
                        &mut i,
                        dst.as_raw_fd(),
                        &mut o,
                        len as usize,
                        0,
                    )
                };
                if r != len as isize {
                    self.fail(&format!("copy_file_range {so} {doff} {len}: {r}"));
                }
                let data = self.model[g][so as usize..(so + len) as usize].to_vec();
                self.put(f, doff, &data);
            }
            14..=16 => {
                // Copy a worker's blocks here, then dedupe: from the worker's
                // blocks onto ours, or from ours onto the worker's (its
                // blocks then become shared). Either may find them changed.
                let (sf, sb, n) = self.worker_range(4);
                let d = self.rng.below(REG - n + 1);
                let doff = base + d * BS;
                let copy = self.read_blocks(sf, sb, n);
                self.rw(f).write_all_at(&copy, doff).unwrap();
                self.put(f, d * BS, &copy);
                let (a, b, ao, bo) = if kind == 14 {
                    (self.path(sf), self.path(f), sb * BS, doff)
                } else {
                    (self.path(f), self.path(sf), doff, sb * BS)
                };
                if let Err(e) = client::dedupe(&a, &b, ao, bo, n * BS) {
                    self.fail(&format!("dedupe: {e}"));
                }
            }
            17 => {
                // Unshare the whole file (the workers' blocks too).
                client::unshare(&self.path(f), 0, 0)
                    .unwrap_or_else(|e| self.fail(&format!("unshare: {e}")));
            }
            18 if self.t == 1 => {
                // Truncate, never below this region's start.
                let size = base + self.rng.below(REG * BS + 1);
                self.rw(f).set_len(size).unwrap();
                self.model[f].resize((size - base) as usize, 0);
            }
            _ => {
                self.rw(f).sync_all().unwrap();
            }
        }
        self.verify(f, &format!("op kind {kind}"));
    }
}

fn statx_size(f: &File, how: i32) -> u64 {
    // SAFETY: plain data, filled by the kernel.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) of an open descriptor into `st`.
    let rc = unsafe {
        libc::statx(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | how,
            libc::STATX_SIZE,
            &mut st,
        )
    };
    assert_eq!(rc, 0);
    st.stx_size
}

/// A worker process, killed if the test ends first (a failure elsewhere).
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a worker's shim said at exit: (direct reads, direct writes, kernel).
fn served(stderr: &str) -> Option<(u64, u64, u64)> {
    let l = stderr.lines().find_map(|l| l.split_once("]: exit: "))?.1;
    let n: Vec<u64> = l
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    Some((n[0], n[1], n[2]))
}

fn stress(model: &str) {
    shim();
    let seed = env(
        "DAXLINK_DSTRESS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let secs = env("DAXLINK_DSTRESS_SECS", 6);
    let rounds = env("DAXLINK_DSTRESS_ROUNDS", 2).max(1);
    eprintln!("direct_stress {model}: DAXLINK_DSTRESS_SEED={seed} secs={secs} rounds={rounds}");
    let opts = format!("page_model={model}");
    let img = Image::new(&format!("dstress-{model}"), 256 << 20);
    let mut m = Mounted::new(&img.path, &opts);
    let tmp = tempfile::tempdir().unwrap();
    // Initial content: workers' regions in their block format, sequence 0.
    let mut init = Vec::new();
    for f in 0..FILES {
        let mut v = pattern(seed ^ f as u64, (BLOCKS * BS) as usize);
        for b in 0..WORKERS * REG {
            let o = (b * BS) as usize;
            let blk = worker_block(
                f as u32,
                b as u32,
                (b / REG) as u32,
                0,
                &v[o + HDR..o + BS as usize],
            );
            v[o..o + BS as usize].copy_from_slice(&blk);
        }
        std::fs::write(m.path(&format!("f{f}")), &v).unwrap();
        init.push(v);
    }
    let mut kernels: Vec<Kernel> = (0..2)
        .map(|t| Kernel {
            t,
            root: m.root().to_path_buf(),
            model: (0..FILES)
                .map(|f| {
                    let o = ((WORKERS + t) * REG * BS) as usize;
                    init[f][o..o + (REG * BS) as usize].to_vec()
                })
                .collect(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(t + 1) | 1),
            ops: 0,
            kind: 0,
            seed,
        })
        .collect();
    let models: Vec<PathBuf> = (0..WORKERS)
        .map(|w| tmp.path().join(format!("w{w}")))
        .collect();
    let (mut direct_r, mut direct_w, mut worker_ops) = (0, 0, 0);
    for round in 0..rounds {
        let t0 = Instant::now();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let err = tempfile::NamedTempFile::new().unwrap();
            let mut c = Command::new(DAXLINK);
            c.args(["run", "--", "python3", "-c", WORKER])
                .arg(m.root())
                .arg(w.to_string())
                .arg((seed % 1_000_000_007 + round).to_string())
                .arg(secs.to_string())
                .arg(&models[w as usize])
                .env("DAXLINK_DIRECT_DEBUG", "1")
                .stdout(Stdio::piped())
                .stderr(err.reopen().unwrap());
            workers.push((Worker(c.spawn().unwrap()), err));
        }
        std::thread::scope(|s| {
            for k in kernels.iter_mut() {
                s.spawn(move || {
                    while t0.elapsed() < Duration::from_secs(secs) {
                        k.step();
                    }
                });
            }
        });
        for (w, (mut c, err)) in workers.into_iter().enumerate() {
            let t1 = Instant::now();
            let st = loop {
                if let Some(st) = c.0.try_wait().unwrap() {
                    break st;
                }
                // A hang fails (the guard kills it).
                assert!(
                    t1.elapsed() < Duration::from_secs(120),
                    "worker {w} hung (seed {seed})"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut out = String::new();
            std::io::Read::read_to_string(&mut c.0.stdout.take().unwrap(), &mut out).unwrap();
            let e = std::fs::read_to_string(err.path()).unwrap();
            let tail: String = e.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            assert!(st.success(), "worker {w} (seed {seed}): {out}\n{tail}");
            let (r, wr, k) =
                served(&e).unwrap_or_else(|| panic!("worker {w}: no exit line\n{tail}"));
            let ops: u64 = out.split_whitespace().nth(2).unwrap().parse().unwrap();
            eprintln!("round {round} worker {w}: {} / shim: {r} direct reads, {wr} direct writes, {k} kernel-path", out.trim());
            assert!(r > 0 && wr > 0, "worker {w}: no direct access\n{tail}");
            direct_r += r;
            direct_w += wr;
            worker_ops += ops;
        }
        eprintln!(
            "round {round}: kernel threads {} + {} operations",
            kernels[0].ops, kernels[1].ops
        );
        // Unmount, fsck -n clean, mount; then every byte against the models.
        m = m.cycle(&opts);
        for k in kernels.iter_mut() {
            k.root = m.root().to_path_buf();
        }
        check_all(m.root(), &kernels, &models, seed);
    }
    // Most worker accesses were direct (the rest: maps recalled three
    // times in a row, shared blocks written through the kernel).
    assert!(
        direct_r + direct_w >= worker_ops / 2,
        "{direct_r} + {direct_w} direct of {worker_ops} worker operations"
    );
    m.unmount();
    fsck_clean(&img.path);
    eprintln!("direct_stress {model}: seed {seed}: {worker_ops} worker operations ({direct_r} reads and {direct_w} writes direct), fsck clean");
}

fn check_all(root: &Path, kernels: &[Kernel], models: &[PathBuf], seed: u64) {
    for f in 0..FILES {
        let got = std::fs::read(root.join(format!("f{f}"))).unwrap();
        let mut want = Vec::new();
        for mp in models {
            let raw = std::fs::read(mp).unwrap();
            let r = (REG * BS) as usize;
            want.extend_from_slice(&raw[8 + f * r..8 + (f + 1) * r]);
        }
        for k in kernels {
            want.extend_from_slice(&k.model[f]);
        }
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "file {f} after remount (seed {seed}): {} bytes, {} expected, first difference at {at:?} (block {:?})",
                got.len(),
                want.len(),
                at.map(|a| a as u64 / BS)
            );
        }
    }
}

#[test]
fn direct_stress_proxy() {
    stress("proxy");
}

#[test]
fn direct_stress_upstream() {
    stress("upstream");
}

#[test]
fn direct_stress_legacy() {
    stress("legacy");
}
