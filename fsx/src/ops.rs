//! The operations: each picks its offsets and lengths (seeded, biased to
//! overlap recent ones, block-aligned or not), makes the calls, checks what
//! it can against the model and applies itself to the model.

use std::collections::VecDeque;
use std::path::PathBuf;

use libc::c_int;

use crate::model::{Model, Rng};
use crate::remap;
use crate::sys;
use crate::worker::Worker;

pub const PAGE: u64 = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Read,
    Write,
    ReadSeek,
    WriteSeek,
    ReadV,
    WriteV,
    Truncate,
    Falloc,
    Punch,
    Zero,
    Clone,
    Dedupe,
    Copy,
    Fsync,
    MapRead,
    MapWrite,
    Reopen,
    /// An operation made by the kernel-path worker (two-process mode).
    Kernel,
}

/// Every kind, its name (for `--no` and the summary) and its weight.
pub const KINDS: [(Kind, &str, u32); 18] = [
    (Kind::Read, "read", 10),
    (Kind::Write, "write", 10),
    (Kind::ReadSeek, "readseek", 4),
    (Kind::WriteSeek, "writeseek", 4),
    (Kind::ReadV, "readv", 4),
    (Kind::WriteV, "writev", 4),
    (Kind::Truncate, "truncate", 3),
    (Kind::Falloc, "falloc", 2),
    (Kind::Punch, "punch", 3),
    (Kind::Zero, "zero", 3),
    (Kind::Clone, "clone", 3),
    (Kind::Dedupe, "dedupe", 2),
    (Kind::Copy, "copy", 3),
    (Kind::Fsync, "fsync", 1),
    (Kind::MapRead, "mapread", 4),
    (Kind::MapWrite, "mapwrite", 4),
    (Kind::Reopen, "reopen", 1),
    (Kind::Kernel, "kernel", 0),
];

/// Why a run failed.
pub enum Fail {
    /// A read gave other bytes than the model holds.
    Mismatch {
        what: String,
        off: u64,
        expected: Vec<u8>,
        got: Vec<u8>,
    },
    /// A call failed.
    Errno { what: String, errno: i32 },
    /// Anything else that is not as the model says (a count, a size).
    Wrong(String),
}

pub type Res = Result<(), Fail>;

pub fn errno(what: impl Into<String>) -> impl FnOnce(i32) -> Fail {
    let what = what.into();
    move |errno| Fail::Errno { what, errno }
}

/// Compare what a read of `file` at `off` got with what the model expects.
pub fn compare(what: &str, off: u64, expected: &[u8], got: &[u8]) -> Res {
    if let Some(i) = (0..expected.len().min(got.len())).find(|&i| expected[i] != got[i]) {
        let e = (i + 16).min(expected.len()).min(got.len());
        return Err(Fail::Mismatch {
            what: what.to_string(),
            off: off + i as u64,
            expected: expected[i..e].to_vec(),
            got: got[i..e].to_vec(),
        });
    }
    if expected.len() != got.len() {
        return Err(Fail::Wrong(format!(
            "{what}: {} bytes read at {off:#x}, the model has {}",
            got.len(),
            expected.len()
        )));
    }
    Ok(())
}

pub struct Config {
    pub max_size: u64,
    pub max_len: u64,
    pub block: u64,
    pub weights: Vec<(Kind, u32)>,
}

/// One of the two files: its path, descriptor and model.
pub struct File {
    pub name: &'static str,
    pub path: PathBuf,
    pub fd: c_int,
    pub m: Model,
}

pub struct Fsx {
    pub cfg: Config,
    pub rng: Rng,
    /// The file under test and the second file (clone, dedupe, copy).
    pub f: [File; 2],
    /// Clone and dedupe through daxlink's private ioctls.
    pub daxlink: bool,
    pub log: VecDeque<String>,
    recent: VecDeque<(u64, u64)>,
    pub counts: Vec<u64>,
    pub worker: Option<Worker>,
    pub opno: u64,
}

impl Fsx {
    pub fn new(cfg: Config, seed: u64, f: [File; 2], worker: Option<Worker>) -> Fsx {
        let daxlink = sys::is_fuse(f[0].fd);
        Fsx {
            cfg,
            rng: Rng::new(seed),
            f,
            daxlink,
            log: VecDeque::new(),
            recent: VecDeque::new(),
            counts: vec![0; KINDS.len()],
            worker,
            opno: 0,
        }
    }

    pub fn note(&mut self, s: String) {
        if self.log.len() == 50 {
            self.log.pop_front();
        }
        self.log.push_back(format!("{:>8} {s}", self.opno));
    }

    fn remember(&mut self, off: u64, len: u64) {
        if self.recent.len() == 8 {
            self.recent.pop_front();
        }
        self.recent.push_back((off, len));
    }

    fn aligned(&mut self) -> bool {
        self.rng.one_in(3)
    }

    /// An offset in `0..limit` (limit >= 1): half the time near the start
    /// or end of a recent operation.
    fn pick_off(&mut self, limit: u64, aligned: bool) -> u64 {
        let bs = self.cfg.block;
        let mut off = if !self.recent.is_empty() && self.rng.one_in(2) {
            let (o, l) = self.recent[self.rng.below(self.recent.len() as u64) as usize];
            let base = if self.rng.one_in(2) { o } else { o + l };
            let d = self.rng.below(2 * bs);
            if self.rng.one_in(2) {
                base.saturating_sub(d)
            } else {
                base + d
            }
        } else {
            self.rng.below(limit)
        };
        off = off.min(limit.saturating_sub(1));
        if aligned {
            off -= off % bs;
        }
        off
    }

    /// A length in `1..=max_len`: whole blocks, a few bytes, or anything.
    fn pick_len(&mut self, aligned: bool) -> u64 {
        let bs = self.cfg.block;
        let max = self.cfg.max_len.max(1);
        if aligned && max >= bs {
            self.rng.between(1, max / bs) * bs
        } else if self.rng.one_in(4) {
            self.rng.between(1, 64.min(max))
        } else {
            self.rng.between(1, max)
        }
    }

    /// A range for a write: inside max_size.
    fn write_range(&mut self) -> (u64, u64) {
        let al = self.aligned();
        let len = self.pick_len(al).min(self.cfg.max_size);
        let off = self.pick_off(self.cfg.max_size - len + 1, al);
        self.remember(off, len);
        (off, len)
    }

    /// A range for a read of file `i`: starts at or below EOF, may cross it.
    fn read_range(&mut self, i: usize) -> (u64, u64) {
        let al = self.aligned();
        let size = self.f[i].m.size();
        let off = self.pick_off(size + 1, al);
        let len = self.pick_len(al);
        self.remember(off, len);
        (off, len)
    }

    fn data(&mut self, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.rng.fill(&mut v);
        v
    }

    /// Cut points for a vectored call on `len` bytes (one to four pieces).
    fn cuts(&mut self, len: u64) -> Vec<usize> {
        let mut c: Vec<usize> = (0..self.rng.below(4))
            .map(|_| self.rng.below(len + 1) as usize)
            .collect();
        c.sort_unstable();
        c
    }

    pub fn pick(&mut self) -> Kind {
        let total: u64 = self.cfg.weights.iter().map(|w| w.1 as u64).sum();
        let mut r = self.rng.below(total);
        for &(k, w) in &self.cfg.weights {
            if r < w as u64 {
                return k;
            }
            r -= w as u64;
        }
        unreachable!("weights sum to total")
    }

    pub fn step(&mut self, k: Kind) -> Res {
        self.opno += 1;
        self.counts[KINDS.iter().position(|x| x.0 == k).unwrap()] += 1;
        match k {
            Kind::Read => self.op_read(),
            Kind::Write => self.op_write(),
            Kind::ReadSeek => self.op_read_seek(),
            Kind::WriteSeek => self.op_write_seek(),
            Kind::ReadV => self.op_readv(),
            Kind::WriteV => self.op_writev(),
            Kind::Truncate => self.op_truncate(),
            Kind::Falloc => self.op_falloc(),
            Kind::Punch => self.op_punch(),
            Kind::Zero => self.op_zero(),
            Kind::Clone => self.op_clone(),
            Kind::Dedupe => self.op_dedupe(),
            Kind::Copy => self.op_copy(),
            Kind::Fsync => self.op_fsync(),
            Kind::MapRead => self.op_map_read(),
            Kind::MapWrite => self.op_map_write(),
            Kind::Reopen => self.op_reopen(),
            Kind::Kernel => self.op_kernel(),
        }
    }

    fn op_read(&mut self) -> Res {
        let (off, len) = self.read_range(0);
        self.note(format!("pread  {off:#x} len {len:#x}"));
        let mut buf = vec![0u8; len as usize];
        let n = sys::pread(self.f[0].fd, &mut buf, off).map_err(errno("pread"))?;
        compare("pread", off, self.f[0].m.read(off, len as usize), &buf[..n])
    }

    fn op_write(&mut self) -> Res {
        let (off, len) = self.write_range();
        self.note(format!("pwrite {off:#x} len {len:#x}"));
        let d = self.data(len);
        let n = sys::pwrite(self.f[0].fd, &d, off).map_err(errno("pwrite"))?;
        self.wrote("pwrite", off, &d, n)
    }

    fn wrote(&mut self, what: &str, off: u64, d: &[u8], n: usize) -> Res {
        if n != d.len() {
            return Err(Fail::Wrong(format!(
                "{what}: wrote {n} of {} bytes",
                d.len()
            )));
        }
        self.f[0].m.write(off, d);
        Ok(())
    }

    fn seek(&mut self, off: u64) -> Res {
        let at = sys::lseek(self.f[0].fd, off as i64, libc::SEEK_SET).map_err(errno("lseek"))?;
        if at != off {
            return Err(Fail::Wrong(format!("lseek to {off:#x} gave {at:#x}")));
        }
        Ok(())
    }

    /// After read/write at the file offset: it moved by `n`.
    fn moved(&mut self, what: &str, off: u64, n: usize) -> Res {
        let at = sys::lseek(self.f[0].fd, 0, libc::SEEK_CUR).map_err(errno("lseek"))?;
        if at != off + n as u64 {
            return Err(Fail::Wrong(format!(
                "{what} of {n} bytes from {off:#x} left the file offset at {at:#x}"
            )));
        }
        Ok(())
    }

    fn op_read_seek(&mut self) -> Res {
        let (off, len) = self.read_range(0);
        let vec = self.rng.one_in(2);
        let what = if vec { "readv" } else { "read" };
        self.note(format!("lseek+{what} {off:#x} len {len:#x}"));
        self.seek(off)?;
        let mut buf = vec![0u8; len as usize];
        let n = if vec {
            let c = self.cuts(len);
            let iov = sys::pieces(buf.as_mut_ptr(), buf.len(), &c);
            sys::readv(self.f[0].fd, &iov)
        } else {
            sys::read(self.f[0].fd, &mut buf)
        }
        .map_err(errno(what))?;
        self.moved(what, off, n)?;
        compare(what, off, self.f[0].m.read(off, len as usize), &buf[..n])
    }

    fn op_write_seek(&mut self) -> Res {
        let (off, len) = self.write_range();
        let vec = self.rng.one_in(2);
        let what = if vec { "writev" } else { "write" };
        self.note(format!("lseek+{what} {off:#x} len {len:#x}"));
        let mut d = self.data(len);
        self.seek(off)?;
        let n = if vec {
            let c = self.cuts(len);
            let iov = sys::pieces(d.as_mut_ptr(), d.len(), &c);
            sys::writev(self.f[0].fd, &iov)
        } else {
            sys::write(self.f[0].fd, &d)
        }
        .map_err(errno(what))?;
        self.moved(what, off, n)?;
        self.wrote(what, off, &d, n)
    }

    fn op_readv(&mut self) -> Res {
        let (off, len) = self.read_range(0);
        let c = self.cuts(len);
        self.note(format!("preadv {off:#x} len {len:#x} cut at {c:?}"));
        let mut buf = vec![0u8; len as usize];
        let iov = sys::pieces(buf.as_mut_ptr(), buf.len(), &c);
        let n = sys::preadv(self.f[0].fd, &iov, off).map_err(errno("preadv"))?;
        compare(
            "preadv",
            off,
            self.f[0].m.read(off, len as usize),
            &buf[..n],
        )
    }

    fn op_writev(&mut self) -> Res {
        let (off, len) = self.write_range();
        let c = self.cuts(len);
        self.note(format!("pwritev {off:#x} len {len:#x} cut at {c:?}"));
        let mut d = self.data(len);
        let iov = sys::pieces(d.as_mut_ptr(), d.len(), &c);
        let n = sys::pwritev(self.f[0].fd, &iov, off).map_err(errno("pwritev"))?;
        self.wrote("pwritev", off, &d, n)
    }

    fn op_truncate(&mut self) -> Res {
        let size = self.f[0].m.size();
        let mut to = if self.rng.one_in(2) {
            self.rng.below(size + 1)
        } else {
            self.rng.between(size, self.cfg.max_size)
        };
        if self.aligned() {
            to -= to % self.cfg.block;
        }
        self.note(format!("ftruncate {size:#x} -> {to:#x}"));
        self.remember(to, 0);
        sys::ftruncate(self.f[0].fd, to).map_err(errno("ftruncate"))?;
        self.f[0].m.resize(to);
        self.check_size(0, "after ftruncate")
    }

    /// fstat's size of file `i` is the model's.
    pub fn check_size(&self, i: usize, when: &str) -> Res {
        let f = &self.f[i];
        let s = sys::fsize(f.fd).map_err(errno("fstat"))?;
        if s != f.m.size() {
            return Err(Fail::Wrong(format!(
                "{} {when}: fstat says size {s:#x}, the model {:#x}",
                f.name,
                f.m.size()
            )));
        }
        Ok(())
    }

    /// A range for fallocate: inside max_size.
    fn falloc_range(&mut self) -> (u64, u64) {
        let al = self.aligned();
        let size = self.f[0].m.size();
        let limit = if self.rng.one_in(3) {
            self.cfg.max_size
        } else {
            size.max(1)
        };
        let off = self.pick_off(limit, al);
        let len = self.pick_len(al).min(self.cfg.max_size - off).max(1);
        self.remember(off, len);
        (off, len)
    }

    fn op_falloc(&mut self) -> Res {
        let (off, len) = self.falloc_range();
        let keep = self.rng.one_in(2);
        let mode = if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
        self.note(format!(
            "fallocate{} {off:#x} len {len:#x}",
            if keep { " keep-size" } else { "" }
        ));
        sys::fallocate(self.f[0].fd, mode, off, len).map_err(errno("fallocate"))?;
        if !keep && off + len > self.f[0].m.size() {
            self.f[0].m.resize(off + len);
        }
        Ok(())
    }

    fn op_punch(&mut self) -> Res {
        let (off, len) = self.falloc_range();
        self.note(format!("punch hole {off:#x} len {len:#x}"));
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        sys::fallocate(self.f[0].fd, mode, off, len).map_err(errno("punch hole"))?;
        self.f[0].m.zero(off, len);
        Ok(())
    }

    fn op_zero(&mut self) -> Res {
        let (off, len) = self.falloc_range();
        let keep = self.rng.one_in(2);
        self.note(format!(
            "zero range{} {off:#x} len {len:#x}",
            if keep { " keep-size" } else { "" }
        ));
        let mode = libc::FALLOC_FL_ZERO_RANGE | if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
        sys::fallocate(self.f[0].fd, mode, off, len).map_err(errno("zero range"))?;
        if !keep && off + len > self.f[0].m.size() {
            self.f[0].m.resize(off + len);
        }
        self.f[0].m.zero(off, len);
        Ok(())
    }

    /// Source and destination for clone, dedupe and copy: the second file
    /// into the file under test, or the other way.
    fn direction(&mut self) -> (usize, usize) {
        if self.rng.one_in(2) {
            (1, 0)
        } else {
            (0, 1)
        }
    }

    fn op_clone(&mut self) -> Res {
        let bs = self.cfg.block;
        let (s, d) = self.direction();
        let (ssize, dsize) = (self.f[s].m.size(), self.f[d].m.size());
        if ssize == 0 {
            self.note("clone skipped: empty source".into());
            return Ok(());
        }
        let soff = self.rng.below(ssize.div_ceil(bs)) * bs;
        let rem = ssize - soff;
        let mut len = (self.rng.between(1, (self.cfg.max_len / bs).max(1)) * bs).min(rem);
        let doff_limit = (self.cfg.max_size - len) / bs + 1;
        let doff = self.pick_off(doff_limit * bs, true);
        // An unaligned length (the source's tail) may not end inside the
        // destination (FICLONERANGE's rule).
        if !len.is_multiple_of(bs) && doff + len < dsize {
            len -= len % bs;
        }
        if len == 0 {
            self.note("clone skipped: no whole block".into());
            return Ok(());
        }
        self.remember(doff, len);
        let (sn, dn) = (self.f[s].name, self.f[d].name);
        self.note(format!(
            "clone {sn} {soff:#x} -> {dn} {doff:#x} len {len:#x}"
        ));
        let n = remap::clone(self.daxlink, self.f[s].fd, soff, self.f[d].fd, doff, len)
            .map_err(errno("clone"))?;
        if n != len {
            return Err(Fail::Wrong(format!("clone: {n} bytes cloned of {len}")));
        }
        let src = self.f[s].m.read(soff, len as usize).to_vec();
        self.f[d].m.write(doff, &src);
        self.check_size(d, "after clone")
    }

    fn op_dedupe(&mut self) -> Res {
        let bs = self.cfg.block;
        let (s, d) = self.direction();
        let (sb, db) = (self.f[s].m.size() / bs, self.f[d].m.size() / bs);
        if sb == 0 || db == 0 {
            self.note("dedupe skipped: no whole block".into());
            return Ok(());
        }
        let (soff, doff) = (self.rng.below(sb) * bs, self.rng.below(db) * bs);
        let most = (sb - soff / bs)
            .min(db - doff / bs)
            .min((self.cfg.max_len / bs).max(1));
        let len = self.rng.between(1, most) * bs;
        let (sn, dn) = (self.f[s].name, self.f[d].name);
        let src = self.f[s].m.read(soff, len as usize).to_vec();
        if self.rng.one_in(2) {
            // Make the ranges equal first, so that some dedupes share.
            self.note(format!(
                "pwrite {dn} {doff:#x} len {len:#x} (the bytes of {sn} {soff:#x})"
            ));
            let n = sys::pwrite(self.f[d].fd, &src, doff).map_err(errno("pwrite"))?;
            if n != src.len() {
                return Err(Fail::Wrong(format!("pwrite: wrote {n} of {len} bytes")));
            }
            self.f[d].m.write(doff, &src);
        }
        self.remember(doff, len);
        let same = self.f[d].m.read(doff, len as usize) == &src[..];
        self.note(format!(
            "dedupe {sn} {soff:#x} -> {dn} {doff:#x} len {len:#x} (model: {})",
            if same { "same" } else { "differs" }
        ));
        let (got_same, n) =
            remap::dedupe(self.daxlink, self.f[s].fd, soff, self.f[d].fd, doff, len)
                .map_err(errno("dedupe"))?;
        if got_same != same || (same && n != len) {
            return Err(Fail::Wrong(format!(
                "dedupe said {} ({n} bytes deduped); the model says {}",
                if got_same { "same" } else { "differs" },
                if same { "same" } else { "differs" }
            )));
        }
        Ok(())
    }

    fn op_copy(&mut self) -> Res {
        let (s, d) = self.direction();
        let al = self.aligned();
        let ssize = self.f[s].m.size();
        let soff = self.pick_off(ssize + 1, al);
        let len = self.pick_len(al).min(self.cfg.max_size);
        let doff = self.pick_off(self.cfg.max_size - len + 1, al);
        self.remember(doff, len);
        let (sn, dn) = (self.f[s].name, self.f[d].name);
        self.note(format!(
            "copy_file_range {sn} {soff:#x} -> {dn} {doff:#x} len {len:#x}"
        ));
        let n = sys::copy_file_range(self.f[s].fd, soff, self.f[d].fd, doff, len as usize)
            .map_err(errno("copy_file_range"))?;
        let want = ssize.saturating_sub(soff).min(len) as usize;
        if n > want || (n == 0 && want > 0) {
            return Err(Fail::Wrong(format!(
                "copy_file_range copied {n} bytes; the model has {want} to copy"
            )));
        }
        let src = self.f[s].m.read(soff, n).to_vec();
        self.f[d].m.write(doff, &src);
        Ok(())
    }

    fn op_fsync(&mut self) -> Res {
        if self.rng.one_in(2) {
            self.note("fsync".into());
            sys::fsync(self.f[0].fd).map_err(errno("fsync"))
        } else {
            self.note("fdatasync".into());
            sys::fdatasync(self.f[0].fd).map_err(errno("fdatasync"))
        }
    }

    /// The bytes of the page holding EOF past EOF, in a mapping of
    /// `pg..pg+map.len`, are zero.
    fn eof_page(&self, map: &sys::Map, pg: u64) -> Res {
        let size = self.f[0].m.size();
        let end = pg + map.len as u64;
        if size >= end || size < pg {
            return Ok(());
        }
        // SAFETY: the mapping is live and map.len bytes long.
        let tail = unsafe { std::slice::from_raw_parts(map.ptr, map.len) };
        let past = &tail[(size - pg) as usize..];
        compare("mapped page past EOF", size, &vec![0u8; past.len()], past)
    }

    fn op_map_read(&mut self) -> Res {
        let size = self.f[0].m.size();
        if size == 0 {
            self.note("mapread skipped: empty file".into());
            return Ok(());
        }
        let al = self.aligned();
        let off = self.pick_off(size, al);
        let len = self.pick_len(al).min(size - off);
        self.remember(off, len);
        let pg = off - off % PAGE;
        let mlen = ((off + len).div_ceil(PAGE) * PAGE - pg) as usize;
        self.note(format!("mapread {off:#x} len {len:#x}"));
        let map = sys::Map::new(self.f[0].fd, pg, mlen, false).map_err(errno("mmap"))?;
        // SAFETY: the mapping is live and mlen bytes long.
        let got =
            unsafe { std::slice::from_raw_parts(map.ptr.add((off - pg) as usize), len as usize) }
                .to_vec();
        compare("mapread", off, self.f[0].m.read(off, len as usize), &got)?;
        self.eof_page(&map, pg)?;
        map.unmap().map_err(errno("munmap"))
    }

    fn op_map_write(&mut self) -> Res {
        let (off, len) = self.write_range();
        self.note(format!("mapwrite {off:#x} len {len:#x}"));
        if off + len > self.f[0].m.size() {
            sys::ftruncate(self.f[0].fd, off + len).map_err(errno("ftruncate (mapwrite)"))?;
            self.f[0].m.resize(off + len);
        }
        let d = self.data(len);
        let pg = off - off % PAGE;
        let mlen = ((off + len).div_ceil(PAGE) * PAGE - pg) as usize;
        let map = sys::Map::new(self.f[0].fd, pg, mlen, true).map_err(errno("mmap"))?;
        // SAFETY: the mapping is live, writable and covers off..off+len.
        unsafe {
            std::ptr::copy_nonoverlapping(d.as_ptr(), map.ptr.add((off - pg) as usize), d.len())
        };
        self.f[0].m.write(off, &d);
        self.eof_page(&map, pg)?;
        map.msync().map_err(errno("msync"))?;
        map.unmap().map_err(errno("munmap"))
    }

    fn op_reopen(&mut self) -> Res {
        let i = if self.rng.one_in(4) { 1 } else { 0 };
        self.note(format!("close and reopen {}", self.f[i].name));
        sys::close(self.f[i].fd).map_err(errno("close"))?;
        self.f[i].fd = sys::open(&self.f[i].path, libc::O_RDWR).map_err(errno("open"))?;
        self.check_size(i, "after reopen")
    }
}
