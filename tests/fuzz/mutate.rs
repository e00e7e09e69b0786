//! The corruptions: bit flips and scribbles in metadata areas, extreme field
//! values written back with valid checksums, zeroed blocks, truncation.
//! Each returns a line saying what it did (printed with a failing case).

use daxlink::format::{
    self, DirentRec, ExtentRec, InodeRec, JournalHdr, OrphanRec, RecBlockHdr, RecKind, RefcountRec,
    Roots, Superblock, TxState, INODE_SIZE,
};
use daxlink::fs::journal_geometry;
use daxlink::journal::Journal;

use crate::images::{all_slots, mem, put, Base, BS};

/// xorshift64* seeded through splitmix64 (any seed, 0 included, is fine).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len() as u64) as usize])
        }
    }
}

/// A value from the edges of a u64 field's range, or near the image's limits.
fn extreme(rng: &mut Rng, sb: &Superblock) -> u64 {
    let v = [
        0,
        1,
        2,
        u64::MAX,
        u64::MAX - 1,
        u64::MAX / 2,
        1 << 32,
        u32::MAX as u64,
        1 << 46,
        (1 << 46) + 1,
        sb.total_blocks,
        sb.total_blocks - 1,
        sb.total_blocks + 1,
        sb.data_start,
        sb.data_start - 1,
        sb.inode_count,
        sb.inode_count + 1,
        sb.journal_start,
        sb.bitmap_start,
    ];
    v[rng.below(v.len() as u64) as usize]
}

/// One corruption of `b` (a copy of `base`, maybe corrupted already), chosen
/// by `rng`. Truncation is separate ([`truncate`]): it comes last.
pub fn corrupt(b: &mut [u8], rng: &mut Rng, base: &Base) -> String {
    match rng.below(19) {
        0..=4 => bit_flips(b, rng, base),
        5..=6 => scribble(b, rng, base),
        7..=15 => semantic(b, rng, &base.sb),
        _ => zero_block(b, rng, base),
    }
}

fn area(rng: &mut Rng, base: &Base) -> (String, u64, u64) {
    base.areas[rng.below(base.areas.len() as u64) as usize].clone()
}

fn bit_flips(b: &mut [u8], rng: &mut Rng, base: &Base) -> String {
    let (name, start, len) = area(rng, base);
    let n = 1 + rng.below(8);
    let mut at = Vec::new();
    for _ in 0..n {
        let bit = rng.below(len * 8);
        let i = (start + bit / 8) as usize;
        if i < b.len() {
            b[i] ^= 1 << (bit % 8);
            at.push(format!("{:#x}.{}", i, bit % 8));
        }
    }
    format!("{n} bit flips in {name}: {}", at.join(" "))
}

fn scribble(b: &mut [u8], rng: &mut Rng, base: &Base) -> String {
    let (name, start, len) = area(rng, base);
    let n = 1 + rng.below(24);
    let off = start + rng.below(len.saturating_sub(n).max(1));
    for k in 0..n {
        let i = (off + k) as usize;
        if i < b.len() {
            b[i] = rng.next() as u8;
        }
    }
    format!("{n} random bytes in {name} at {off:#x}")
}

fn zero_block(b: &mut [u8], rng: &mut Rng, base: &Base) -> String {
    let sb = &base.sb;
    let (what, blocks): (String, Vec<u64>) = match rng.below(9) {
        0 => ("superblock A".into(), vec![0]),
        1 => ("superblock B".into(), vec![1]),
        2 => ("both superblocks".into(), vec![0, 1]),
        3 => ("roots block".into(), vec![2]),
        4 => ("journal header".into(), vec![sb.journal_start]),
        5 => {
            let k = rng.below(8);
            (format!("inode block {k}"), vec![sb.inode_start + k])
        }
        6 => ("bitmap block".into(), vec![sb.bitmap_start]),
        _ => {
            let (name, start, len) = area(rng, base);
            let first = start / BS;
            let n = len.div_ceil(BS).max(1);
            (
                format!("the block(s) of {name}"),
                (first..first + n).collect(),
            )
        }
    };
    for blk in &blocks {
        put(b, blk * BS, &[0u8; BS as usize]);
    }
    format!("zeroed {what} ({blocks:?})")
}

/// Cut the end off the image (as a failed copy would).
pub fn truncate(b: &mut Vec<u8>, rng: &mut Rng, sb: &Superblock) -> String {
    let len = b.len() as u64;
    let new = match rng.below(4) {
        0 => len - BS * (1 + rng.below(64)),
        1 => len - 1 - rng.below(BS - 1),
        2 => len / 2,
        _ => (sb.data_start + rng.below(40)) * BS,
    };
    b.truncate(new as usize);
    format!("truncated from {len} to {new} bytes")
}

/// One field set to an extreme or wrong value, with every checksum valid.
fn semantic(b: &mut [u8], rng: &mut Rng, sb: &Superblock) -> String {
    let sb = sb.clone();
    let ds = sb.data_start;
    let tb = sb.total_blocks;
    let block = |rng: &mut Rng| -> u64 {
        match rng.below(7) {
            0 => ds + rng.below(20),
            1 => tb - 1 - rng.below(3),
            2 => rng.below(ds),
            3 => tb + rng.below(4),
            4 => ds + rng.below(tb - ds),
            5 => extreme(rng, &sb),
            _ => u64::MAX - rng.below(3),
        }
    };
    let ino = |rng: &mut Rng| -> u64 {
        match rng.below(9) {
            0 => 0,
            1 => sb.inode_count + rng.below(3),
            2 => extreme(rng, &sb),
            _ => 1 + rng.below(64),
        }
    };
    match rng.below(14) {
        0 | 1 => {
            let i = 1 + rng.below(80);
            let o = sb.inode_offset(i) as usize;
            let mut r = InodeRec::decode(&b[o..o + INODE_SIZE]).unwrap_or_default();
            let what = match rng.below(9) {
                0 => {
                    let types = [
                        libc::S_IFREG,
                        libc::S_IFDIR,
                        libc::S_IFLNK,
                        libc::S_IFIFO,
                        libc::S_IFCHR,
                        libc::S_IFSOCK,
                        0,
                    ];
                    r.mode = types[rng.below(types.len() as u64) as usize] | 0o644;
                    if r.mode & libc::S_IFMT == 0 {
                        r.mode = 0;
                    }
                    "mode"
                }
                1 => {
                    r.nlink = [0, 1, 2, 5, 65000, 65001, u32::MAX][rng.below(7) as usize];
                    "nlink"
                }
                2 => {
                    r.size = [0, 1, 4095, 4096, 100_000, 1 << 46, extreme(rng, &sb)]
                        [rng.below(7) as usize]
                        .min(1 << 46);
                    "size"
                }
                3 => {
                    r.xattr_block = block(rng);
                    "xattr_block"
                }
                4 => {
                    r.xattr_blocks = [0, 1, 2, 3, 300, u32::MAX][rng.below(6) as usize];
                    r.xattr_len = [0u32, 10, 4096, 5000, 1 << 20, u32::MAX][rng.below(6) as usize];
                    "xattr_len"
                }
                5 => {
                    r.xattr_crc ^= 1;
                    "xattr_crc"
                }
                6 => {
                    r.flags = [1u32 << 4, 1 << 5, 1 << 7, 1 << 12, u32::MAX][rng.below(5) as usize];
                    "flags"
                }
                7 => {
                    r.atime.sec = i64::MIN;
                    r.mtime.sec = i64::MAX;
                    r.uid = u32::MAX;
                    r.rdev = u32::MAX;
                    "times, uid and rdev"
                }
                _ => {
                    r = InodeRec {
                        mode: libc::S_IFREG | 0o644,
                        nlink: 1,
                        ..Default::default()
                    };
                    "new file"
                }
            };
            put(b, sb.inode_offset(i), &r.encode());
            format!("inode {i} {what} -> {r:?}")
        }
        2 | 3 => {
            let slots = all_slots(b, RecKind::Extent);
            let Some((off, s)) = rng.pick(&slots).cloned() else {
                return "nothing".into();
            };
            let mut x = ExtentRec::decode(&s).ok().flatten().unwrap_or(ExtentRec {
                ino: 2,
                logical: 0,
                phys: ds,
                len: 1,
            });
            match rng.below(4) {
                0 => x.ino = ino(rng).max(1),
                1 => {
                    x.logical =
                        [0, 1, 2, 5, 1 << 34, (1 << 34) - 1, u64::MAX / 2][rng.below(7) as usize]
                }
                2 => x.phys = block(rng).min(u64::MAX - u32::MAX as u64),
                _ => x.len = [1u32, 2, 3, 50, 1 << 20, u32::MAX][rng.below(6) as usize],
            }
            put(b, off, &x.encode());
            format!("extent at {off:#x} -> {x:?}")
        }
        4 | 5 => {
            let slots = all_slots(b, RecKind::Dirent);
            let names: Vec<Vec<u8>> = slots
                .iter()
                .filter_map(|(_, s)| DirentRec::decode(s).ok().flatten().map(|d| d.name))
                .collect();
            let Some((off, s)) = rng.pick(&slots).cloned() else {
                return "nothing".into();
            };
            let mut d = DirentRec::decode(&s).ok().flatten().unwrap_or(DirentRec {
                parent: 1,
                child: 2,
                ftype: 8,
                name: b"new".to_vec(),
            });
            match rng.below(5) {
                0 => d.parent = ino(rng).max(1),
                1 => d.child = ino(rng).max(1),
                2 => d.ftype = rng.below(16) as u8,
                3 => d.name = vec![b'n'; 255],
                _ => {
                    if let Some(n) = rng.pick(&names) {
                        d.name = n.clone();
                    }
                }
            }
            put(b, off, &d.encode());
            format!("dirent at {off:#x} -> {d:?}")
        }
        6 => {
            let slots = all_slots(b, RecKind::Orphan);
            let Some((off, _)) = rng.pick(&slots).cloned() else {
                return "nothing".into();
            };
            let o = match rng.below(3) {
                0 => OrphanRec::Inode(ino(rng)),
                1 => OrphanRec::Blocks {
                    phys: block(rng),
                    len: [1, 2, 4, 1 << 20, u64::MAX / 2][rng.below(5) as usize],
                },
                _ => OrphanRec::Truncate {
                    ino: ino(rng),
                    from: [0, 1, 3, 1 << 34, u64::MAX][rng.below(5) as usize],
                },
            };
            put(b, off, &o.encode());
            format!("orphan at {off:#x} -> {o:?}")
        }
        7 => {
            let k = format::REC_KINDS[rng.below(4) as usize];
            let slots = all_slots(b, k);
            let mut blocks: Vec<u64> = slots.iter().map(|(o, _)| o / BS).collect();
            blocks.dedup();
            let Some(&blk) = rng.pick(&blocks) else {
                return "nothing".into();
            };
            let next = if rng.below(2) == 0 {
                *rng.pick(&blocks).unwrap()
            } else {
                block(rng)
            };
            let kind = if rng.below(4) == 0 {
                format::REC_KINDS[rng.below(4) as usize]
            } else {
                k
            };
            put(b, blk * BS, &RecBlockHdr { kind, next }.encode());
            format!("record block {blk} -> kind {kind:?} next {next}")
        }
        8 => {
            let off = (sb.bitmap_start * BS) as usize;
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let bit = rng.below(tb - ds + 64);
                b[off + (bit / 8) as usize] ^= 1 << (bit % 8);
            }
            let all = rng.below(8) == 0;
            if all {
                b[off..off + format::BITMAP_BYTES].fill(0xff);
            }
            let c = format::bitmap_crc(&b[off..off + BS as usize]);
            put(b, sb.bitmap_start * BS + 4088, &c.to_le_bytes());
            format!(
                "{n} bitmap bits flipped{}",
                if all { ", all set" } else { "" }
            )
        }
        9 => {
            let slots = all_slots(b, RecKind::Refcount);
            let Some((off, s)) = rng.pick(&slots).cloned() else {
                return "nothing".into();
            };
            let mut x = RefcountRec::decode(&s)
                .ok()
                .flatten()
                .unwrap_or(RefcountRec {
                    phys: ds + rng.below(tb - ds),
                    len: 1,
                    count: 2,
                });
            match rng.below(3) {
                0 => x.phys = block(rng).min(u64::MAX / 2),
                1 => x.len = [1u64, 2, 3, 50, u64::MAX / 4][rng.below(5) as usize],
                _ => x.count = [2u32, 3, 4, 1000, u32::MAX][rng.below(5) as usize],
            }
            put(b, off, &x.encode());
            format!("refcount at {off:#x} -> {x:?}")
        }
        10 => {
            // A superblock field: in one copy or both (then mount has no good copy).
            let mut s = sb.clone();
            let v = extreme(rng, &sb);
            let what = match rng.below(10) {
                0 => {
                    s.total_blocks = v;
                    "total_blocks"
                }
                1 => {
                    s.journal_blocks = v;
                    "journal_blocks"
                }
                2 => {
                    s.inode_start = v;
                    "inode_start"
                }
                3 => {
                    s.inode_count = v;
                    "inode_count"
                }
                4 => {
                    s.bitmap_start = v;
                    "bitmap_start"
                }
                5 => {
                    s.bitmap_blocks = v;
                    "bitmap_blocks"
                }
                6 => {
                    s.data_start = v;
                    "data_start"
                }
                7 => {
                    s.generation = v;
                    "generation"
                }
                8 => {
                    s.ro_compat = 1 << rng.below(32);
                    "ro_compat"
                }
                _ => {
                    s.incompat = 1 << rng.below(32);
                    "incompat"
                }
            };
            let v = match what {
                "ro_compat" => s.ro_compat as u64,
                "incompat" => s.incompat as u64,
                _ => v,
            };
            let copies: &[u64] = match rng.below(3) {
                0 => &[0],
                1 => &[1],
                _ => &[0, 1],
            };
            for c in copies {
                put(b, c * BS, &s.encode());
            }
            format!("superblock copies {copies:?}: {what} = {v:#x}")
        }
        11 => {
            let mut r = Roots::decode(&b[(2 * BS) as usize..]).unwrap_or_default();
            let k = rng.below(4) as usize;
            r.heads[k] = block(rng);
            put(b, 2 * BS, &r.encode());
            format!("roots head {k} -> {}", r.heads[k])
        }
        12 => {
            let v = extreme(rng, &sb);
            put(
                b,
                sb.journal_start * BS,
                &JournalHdr { applied_seq: v }.encode(),
            );
            format!("journal applied_seq -> {v:#x}")
        }
        _ => {
            // A committed journal transaction with random (maybe invalid) entries.
            let geo = journal_geometry(&sb, b.len() as u64);
            let m = mem(b);
            let (applied, _) = Journal::inspect(&m, geo).unwrap_or((0, TxState::None));
            let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let off = match rng.below(5) {
                    0 => sb.inode_offset(1 + rng.below(64)),
                    1 => 2 * BS,
                    2 => rng.below(sb.journal_start * BS + 2 * BS),
                    3 => sb.bitmap_start * BS + rng.below(BS),
                    _ => block(rng).min(tb - 1) * BS,
                };
                let data: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
                entries.push((off, data));
            }
            entries.sort();
            entries.dedup_by(|a, b| a.0 < b.0 + b.1.len() as u64);
            let enc = format::encode_tx(
                applied.wrapping_add(1),
                entries.iter().map(|(o, d)| (*o, d.as_slice())),
            );
            put(b, (geo.start_block + 1) * BS, &enc);
            format!(
                "journal transaction storing at {:?}",
                entries.iter().map(|e| e.0).collect::<Vec<_>>()
            )
        }
    }
}
