//! Crash states: which bytes may be on the media if power fails at some point
//! of a recorded trace.
//!
//! The model is x86 with ADR (the persistence domain is the memory controller):
//! the media is a sequence of 8-byte units, each stored atomically. A store is
//! guaranteed durable once a flush covering its cache line has been issued
//! after it and a fence has completed after that flush. A store that is not
//! yet guaranteed durable is *in flight*: the cache may have written it back
//! at any moment (eviction), so it may or may not be on the media, and a unit
//! stored several times may hold any of its values since the last guaranteed
//! one. Unflushed stores stay in flight across fences until a flush and a
//! fence make them durable.
//!
//! The [`Walker`] replays a trace and keeps two images: `cache` (what the CPU
//! sees) and `durable` (what is guaranteed on the media), plus, per unit in
//! flight, the list of its values in program order. At every fence it hands
//! out an [`Epoch`]: a crash between the previous fence and this one leaves
//! the durable image plus any choice of in-flight values (none, or one version
//! per unit). [`Epoch::choices`] enumerates those choices exhaustively when
//! there are few and otherwise yields a prioritized list: nothing in flight,
//! everything, every program-order prefix of the stores, each store alone,
//! each cache line alone, all but one line, then seeded random subsets (per
//! cache line, then per unit).

use std::collections::BTreeMap;

use super::rng::Rng;
use crate::media::CACHE_LINE;

/// Atomic unit of a store.
pub const UNIT: u64 = 8;
const UNITS_PER_LINE: u64 = CACHE_LINE / UNIT;

/// One value a unit held after a store (`seq` = index of that store in the trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub value: [u8; 8],
    pub seq: u32,
}

#[derive(Clone, Debug)]
struct Pending {
    versions: Vec<Version>,
    /// Versions [..flushed] are written back by a flush: durable at the next fence.
    flushed: usize,
}

/// A unit in flight at a crash point.
#[derive(Clone, Debug)]
pub struct EpochUnit {
    /// Unit index (byte offset / 8).
    pub unit: u64,
    pub versions: Vec<Version>,
}

/// The crash window between two fences.
#[derive(Clone, Debug)]
pub struct Epoch {
    /// Ordinal of this crash point in the workload (0-based; set by the caller).
    pub point: usize,
    /// Fences completed before this crash window (the window ends at fence
    /// `fences + 1`, or at the end of the last operation).
    pub fences: usize,
    /// Operation running when the previous fence completed.
    pub op_lo: usize,
    /// Operation running at this fence.
    pub op_hi: usize,
    pub units: Vec<EpochUnit>,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Zobrist hash term of one unit value (0 for zero bytes, so an all-zero image hashes to 0).
fn z(unit: u64, v: [u8; 8]) -> u64 {
    let v = u64::from_le_bytes(v);
    if v == 0 {
        0
    } else {
        mix(unit.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(v))
    }
}

fn unit_at(img: &[u8], u: u64) -> [u8; 8] {
    let o = (u * UNIT) as usize;
    img[o..o + 8].try_into().expect("8 bytes")
}

/// Replays a trace, tracking what is durable and what is in flight.
pub struct Walker {
    pub cache: Vec<u8>,
    pub durable: Vec<u8>,
    pending: BTreeMap<u64, Pending>,
    seq: u32,
    /// Hash of `durable`.
    hash: u64,
    fences: usize,
}

impl Walker {
    /// Start from an image that is entirely durable.
    pub fn new(image: Vec<u8>) -> Walker {
        let mut hash = 0;
        for (i, c) in image.chunks_exact(8).enumerate() {
            hash ^= z(i as u64, c.try_into().unwrap());
        }
        Walker {
            cache: image.clone(),
            durable: image,
            pending: BTreeMap::new(),
            seq: 0,
            hash,
            fences: 0,
        }
    }

    pub fn fences(&self) -> usize {
        self.fences
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn store(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        self.cache[off as usize..end as usize].copy_from_slice(data);
        self.seq += 1;
        for u in off / UNIT..end.div_ceil(UNIT) {
            let v = Version {
                value: unit_at(&self.cache, u),
                seq: self.seq,
            };
            self.pending
                .entry(u)
                .or_insert_with(|| Pending {
                    versions: Vec::new(),
                    flushed: 0,
                })
                .versions
                .push(v);
        }
    }

    pub fn flush(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = off / CACHE_LINE * UNITS_PER_LINE;
        let end = (off + len).div_ceil(CACHE_LINE) * UNITS_PER_LINE;
        for (_, p) in self.pending.range_mut(first..end) {
            p.flushed = p.versions.len();
        }
    }

    /// The crash window ending at this fence (call before [`Walker::fence`]).
    pub fn epoch(&self, op_lo: usize, op_hi: usize) -> Epoch {
        Epoch {
            point: 0,
            fences: self.fences,
            op_lo,
            op_hi,
            units: self
                .pending
                .iter()
                .map(|(u, p)| EpochUnit {
                    unit: *u,
                    versions: p.versions.clone(),
                })
                .collect(),
        }
    }

    pub fn fence(&mut self) {
        self.fences += 1;
        let mut done = Vec::new();
        for (u, p) in self.pending.iter_mut() {
            if p.flushed == 0 {
                continue;
            }
            let v = p.versions[p.flushed - 1].value;
            let o = (*u * UNIT) as usize;
            let old: [u8; 8] = self.durable[o..o + 8].try_into().unwrap();
            self.hash ^= z(*u, old) ^ z(*u, v);
            self.durable[o..o + 8].copy_from_slice(&v);
            p.versions.drain(..p.flushed);
            p.flushed = 0;
            if p.versions.is_empty() {
                done.push(*u);
            }
        }
        for u in done {
            self.pending.remove(&u);
        }
    }

    /// Hash of the image `durable + choice`.
    pub fn state_hash(&self, ep: &Epoch, choice: &[u16]) -> u64 {
        let mut h = self.hash;
        for (eu, c) in ep.units.iter().zip(choice) {
            if *c > 0 {
                let v = eu.versions[*c as usize - 1].value;
                h ^= z(eu.unit, unit_at(&self.durable, eu.unit)) ^ z(eu.unit, v);
            }
        }
        h
    }

    /// The crash image `durable + choice`.
    pub fn image(&self, ep: &Epoch, choice: &[u16]) -> Vec<u8> {
        let mut img = self.durable.clone();
        apply_choice(&mut img, ep, choice);
        img
    }
}

pub fn apply_choice(img: &mut [u8], ep: &Epoch, choice: &[u16]) {
    for (eu, c) in ep.units.iter().zip(choice) {
        if *c > 0 {
            let o = (eu.unit * UNIT) as usize;
            img[o..o + 8].copy_from_slice(&eu.versions[*c as usize - 1].value);
        }
    }
}

impl Epoch {
    /// Number of distinct choices (saturating).
    pub fn full_count(&self) -> u64 {
        let mut n: u64 = 1;
        for u in &self.units {
            n = n.saturating_mul(u.versions.len() as u64 + 1);
        }
        n
    }

    /// How many crash states this epoch wants under a per-epoch cap.
    pub fn wanted(&self, cap: u64) -> u64 {
        self.full_count().min(cap.max(1))
    }

    fn latest(&self) -> Vec<u16> {
        self.units.iter().map(|u| u.versions.len() as u16).collect()
    }

    /// Choices in priority order (see the module comment). Endless when the
    /// epoch is large (random subsets at the end): the caller takes what it needs.
    pub fn choices(&self, seed: u64) -> Box<dyn Iterator<Item = Vec<u16>> + '_> {
        let n = self.units.len();
        let full = self.full_count();
        if n == 0 {
            return Box::new(std::iter::once(Vec::new()));
        }
        if full <= 4096 {
            // Exhaustive: none, all, then every mixed-radix combination.
            let radix: Vec<u64> = self
                .units
                .iter()
                .map(|u| u.versions.len() as u64 + 1)
                .collect();
            let all = self.latest();
            let head = vec![vec![0u16; n], all];
            let rest = (1..full).map(move |mut i| {
                let mut c = vec![0u16; radix.len()];
                for (k, r) in radix.iter().enumerate() {
                    c[k] = (i % r) as u16;
                    i /= r;
                }
                c
            });
            return Box::new(head.into_iter().chain(rest));
        }
        let mut fixed: Vec<Vec<u16>> = vec![vec![0u16; n], self.latest()];
        // Program-order prefixes and single stores.
        let mut seqs: Vec<u32> = self
            .units
            .iter()
            .flat_map(|u| u.versions.iter().map(|v| v.seq))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        for s in &seqs {
            fixed.push(
                self.units
                    .iter()
                    .map(|u| u.versions.iter().take_while(|v| v.seq <= *s).count() as u16)
                    .collect(),
            );
        }
        for s in &seqs {
            fixed.push(
                self.units
                    .iter()
                    .map(|u| {
                        u.versions
                            .iter()
                            .position(|v| v.seq == *s)
                            .map_or(0, |i| i as u16 + 1)
                    })
                    .collect(),
            );
        }
        // Cache lines: each alone, all but each.
        let mut lines: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            let l = u.unit / UNITS_PER_LINE;
            match lines.last_mut() {
                Some((ll, v)) if *ll == l => v.push(i),
                _ => lines.push((l, vec![i])),
            }
        }
        let latest = self.latest();
        let mut line_states = Vec::new();
        for (_, idx) in &lines {
            let mut only = vec![0u16; n];
            let mut but = latest.clone();
            for &i in idx {
                only[i] = latest[i];
                but[i] = 0;
            }
            line_states.push(only);
            line_states.push(but);
        }
        let mut rng = Rng::new(seed);
        let units = &self.units;
        let random = std::iter::from_fn(move || {
            let mut c = vec![0u16; n];
            let per_unit = rng.below(4) == 0;
            for (_, idx) in &lines {
                if per_unit || rng.below(2) == 0 {
                    for &i in idx {
                        if !per_unit || rng.below(2) == 0 {
                            let nv = units[i].versions.len() as u64;
                            // Mostly the latest value, sometimes an older one.
                            c[i] = if nv > 1 && rng.below(4) == 0 {
                                rng.below(nv) as u16 + 1
                            } else {
                                nv as u16
                            };
                        }
                    }
                }
            }
            Some(c)
        });
        // Interleave line states with random ones so a small budget sees both.
        let mut ls = line_states.into_iter();
        let mut rnd = random;
        let mut tick = 0u64;
        let mixed = std::iter::from_fn(move || {
            // Two line states, then one random, until the line states run out.
            tick += 1;
            if !tick.is_multiple_of(3) {
                if let Some(s) = ls.next() {
                    return Some(s);
                }
            }
            rnd.next()
        });
        Box::new(fixed.into_iter().chain(mixed))
    }

    /// The reproducer form of a choice: `none`, `all`, or runs
    /// `OFFSET+UNITS[/VERSION]` (hex byte offset of the first unit, unit count,
    /// version number when not the latest) joined by commas.
    pub fn encode(&self, choice: &[u16]) -> String {
        if choice.iter().all(|c| *c == 0) {
            return "none".into();
        }
        if choice
            .iter()
            .zip(&self.units)
            .all(|(c, u)| *c as usize == u.versions.len())
        {
            return "all".into();
        }
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < choice.len() {
            if choice[i] == 0 {
                i += 1;
                continue;
            }
            let ver = |k: usize| -> Option<u16> {
                let c = choice[k];
                if c as usize == self.units[k].versions.len() {
                    None
                } else {
                    Some(c)
                }
            };
            let v0 = ver(i);
            let mut j = i + 1;
            while j < choice.len()
                && choice[j] != 0
                && self.units[j].unit == self.units[j - 1].unit + 1
                && ver(j) == v0
            {
                j += 1;
            }
            let mut s = format!("{:x}+{}", self.units[i].unit * UNIT, j - i);
            if let Some(v) = v0 {
                s.push_str(&format!("/{v}"));
            }
            out.push(s);
            i = j;
        }
        out.join(",")
    }

    /// Parse [`Epoch::encode`]'s form back into a choice for this epoch.
    pub fn decode(&self, s: &str) -> Result<Vec<u16>, String> {
        let n = self.units.len();
        match s {
            "none" => return Ok(vec![0; n]),
            "all" => return Ok(self.latest()),
            _ => {}
        }
        let mut c = vec![0u16; n];
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (range, ver) = match part.split_once('/') {
                Some((r, v)) => (r, Some(v.parse::<u16>().map_err(|e| e.to_string())?)),
                None => (part, None),
            };
            let (off, cnt) = range
                .split_once('+')
                .ok_or_else(|| format!("bad subset run {part:?}"))?;
            let off = u64::from_str_radix(off, 16).map_err(|e| e.to_string())?;
            let cnt: u64 = cnt
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())?;
            for k in 0..cnt {
                let u = off / UNIT + k;
                let i = self
                    .units
                    .binary_search_by_key(&u, |x| x.unit)
                    .map_err(|_| {
                        format!("unit at {:#x} is not in flight at this fence", u * UNIT)
                    })?;
                let nv = self.units[i].versions.len() as u16;
                let v = ver.unwrap_or(nv);
                if v == 0 || v > nv {
                    return Err(format!("unit at {:#x} has no version {v}", u * UNIT));
                }
                c[i] = v;
            }
        }
        Ok(c)
    }

    /// Byte ranges persisted beyond the durable image, for humans.
    pub fn persisted_ranges(&self, choice: &[u16]) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (u, c) in self.units.iter().zip(choice) {
            if *c == 0 {
                continue;
            }
            let off = u.unit * UNIT;
            match out.last_mut() {
                Some((o, l)) if *o + *l == off => *l += UNIT,
                _ => out.push((off, UNIT)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushed_and_fenced_stores_become_durable() {
        let mut w = Walker::new(vec![0u8; 256]);
        w.store(0, &[1u8; 16]);
        w.store(64, &[2u8; 8]);
        w.flush(0, 16);
        let ep = w.epoch(1, 1);
        assert_eq!(ep.units.len(), 3);
        assert_eq!(ep.full_count(), 8);
        w.fence();
        // The flushed line is durable, the unflushed one stays in flight.
        assert_eq!(&w.durable[..16], &[1u8; 16]);
        assert_eq!(w.in_flight(), 1);
        let ep = w.epoch(1, 1);
        assert_eq!(ep.units[0].unit, 8);
        // A store after the flush but before the fence stays in flight.
        w.store(0, &[3u8; 8]);
        w.flush(0, 8);
        w.store(0, &[4u8; 8]);
        w.fence();
        assert_eq!(&w.durable[..8], &[3u8; 8]);
        assert_eq!(w.in_flight(), 2);
    }

    #[test]
    fn choices_encode_and_decode() {
        let mut w = Walker::new(vec![0u8; 4096]);
        for i in 0..40u64 {
            w.store(i * 64, &[i as u8 + 1; 24]);
        }
        w.store(8, &[9u8; 8]);
        let ep = w.epoch(1, 1);
        assert!(ep.full_count() > 4096);
        let mut seen = std::collections::HashSet::new();
        for c in ep.choices(7).take(300) {
            let s = ep.encode(&c);
            assert_eq!(ep.decode(&s).unwrap(), c, "{s}");
            seen.insert(w.state_hash(&ep, &c));
            let img = w.image(&ep, &c);
            let mut h = 0;
            for (i, ch) in img.chunks_exact(8).enumerate() {
                h ^= z(i as u64, ch.try_into().unwrap());
            }
            assert_eq!(h, w.state_hash(&ep, &c));
        }
        assert!(seen.len() > 200);
        // Small epochs are enumerated exhaustively.
        let mut w = Walker::new(vec![0u8; 256]);
        w.store(0, &[1u8; 16]);
        w.store(0, &[2u8; 8]);
        let ep = w.epoch(1, 1);
        assert_eq!(ep.full_count(), 6);
        let all: std::collections::HashSet<Vec<u16>> = ep.choices(1).collect();
        assert_eq!(all.len(), 6);
    }
}
