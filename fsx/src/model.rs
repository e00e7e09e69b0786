//! The seeded generator and the in-memory model of a file's bytes.

/// xorshift64*: small, fast and the same on every machine for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A file as it must be: its bytes, as many as its size.
#[derive(Clone, Default)]
pub struct Model {
    pub data: Vec<u8>,
}

impl Model {
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Bytes `off..off+len` as a read sees them (short at EOF).
    pub fn read(&self, off: u64, len: usize) -> &[u8] {
        let n = self.data.len();
        let s = (off as usize).min(n);
        let e = (off as usize).saturating_add(len).min(n);
        &self.data[s..e]
    }

    pub fn resize(&mut self, size: u64) {
        self.data.resize(size as usize, 0);
    }

    /// A write: extends the file (zeros between the old EOF and `off`);
    /// an empty one changes nothing.
    pub fn write(&mut self, off: u64, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let end = off as usize + buf.len();
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[off as usize..end].copy_from_slice(buf);
    }

    /// Zero `off..off+len` below EOF (a punch, a zero range keeping the size).
    pub fn zero(&mut self, off: u64, len: u64) {
        let n = self.data.len() as u64;
        let (s, e) = (off.min(n), off.saturating_add(len).min(n));
        self.data[s as usize..e as usize].fill(0);
    }
}
