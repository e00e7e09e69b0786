//! fsck tests: the reference and corrupted images in images/, the CLI, a fresh
//! mkfs, crash states made through the core API, and targeted corruptions.
//! Random corruption of realistic images is the fuzzer's (tests/fuzz/).
//!
//! The images are regenerated with
//! `cargo test --test fsck -- --ignored regenerate_images`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use daxlink::format::{
    self, ExtentRec, InodeRec, JournalHdr, RecKind, Roots, Superblock, TxState, BLOCK_SIZE,
    INODE_SIZE, ROOT_INO,
};
use daxlink::fs::{journal_geometry, read_superblock, walk_chain, Cred, Fs, FsOptions};
use daxlink::fsck::{self, Report};
use daxlink::journal::Journal;
use daxlink::media::{Media, PersistMode};
use daxlink::mkfs::{geometry as mkfs_geometry, mkfs, MkfsOptions};
use daxlink::FsError;

const BS: u64 = BLOCK_SIZE;
/// 2 MiB: the smallest filesystem mkfs makes.
const IMG_BLOCKS: u64 = 512;
const C: Cred = Cred::ROOT;

// ---------------------------------------------------------------------------
// The images and what fsck and mount must say about them
// ---------------------------------------------------------------------------

struct Case {
    file: &'static str,
    corruption: &'static str,
    /// Finding codes of `fsck -n` (sorted, distinct).
    codes: &'static [&'static str],
    /// A note `fsck -n` prints (informational), if any.
    note: Option<&'static str>,
    exit_n: i32,
    exit_y: i32,
    /// None: mount succeeds; Some(s): mount fails with Corrupt containing s.
    mount_err: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        file: "v2-reference.img.gz",
        corruption: "none: files, a directory, a symlink, an xattr, a hard link, a sparse file, a fifo, a reflinked clone (made through the core Fs API)",
        codes: &[],
        note: None,
        exit_n: 0,
        exit_y: 0,
        mount_err: None,
    },
    Case {
        file: "sb-a-bad.img.gz",
        corruption: "superblock copy A (block 0): one byte flipped (checksum mismatch)",
        codes: &["superblock-bad"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "sb-both-bad.img.gz",
        corruption: "both superblock copies: one byte flipped",
        codes: &["superblock-bad"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: Some("no valid superblock"),
    },
    Case {
        file: "dirent-free-inode.img.gz",
        corruption: "inode of /empty freed; its directory entry left in place",
        codes: &["dirent-free-inode"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: Some("points at free inode"),
    },
    Case {
        file: "extent-beyond-device.img.gz",
        corruption: "the extent record of /dir/nested.txt points past the end of the device (its real block leaks)",
        codes: &["block-leaked", "extent-range"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: Some("lies beyond the device"),
    },
    Case {
        file: "wrong-nlink.img.gz",
        corruption: "link count of /hello.txt set to 5 (it has 2 names)",
        codes: &["nlink-wrong"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "torn-journal.img.gz",
        corruption: "crash while committing `mkdir /torn-dir`: transaction written, commit record torn, nothing applied",
        codes: &[],
        note: Some("journal-torn"),
        exit_n: 0,
        exit_y: 0,
        mount_err: None,
    },
    Case {
        file: "journal-replay.img.gz",
        corruption: "crash after committing `mkdir /replayed-dir`, before applying it in place",
        codes: &["journal-replay"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "leaked-block.img.gz",
        corruption: "the last data block marked used in the bitmap, referenced by nothing",
        codes: &["block-leaked"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "orphan-pending.img.gz",
        corruption: "crash with /doomed (3 blocks) unlinked but still open: orphan record pending",
        codes: &["orphan-reclaim"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "dup-block.img.gz",
        corruption: "the extent of /dir/nested.txt points at the xattr blob of /hello.txt (its own block leaks)",
        codes: &["block-dup", "block-leaked"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "refcount-wrong.img.gz",
        corruption: "the refcount record of the blocks /data.bin shares with /data-clone.bin says 3 (they are mapped twice)",
        codes: &["refcount-wrong"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "unrecorded-share.img.gz",
        corruption: "the extent of /dir/nested.txt points at the first block of /data.bin, with no refcount record (its own block leaks)",
        codes: &["block-leaked", "refcount-wrong"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
    Case {
        file: "inode-bad-crc.img.gz",
        corruption: "one byte of the inode of /hello.txt flipped (its 2 names, extent and xattr blob dangle)",
        codes: &["block-leaked", "dirent-free-inode", "extent-orphan", "inode-bad"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: Some("checksum mismatch"),
    },
    Case {
        file: "sb-ro-compat-newer.img.gz",
        corruption: "superblock copy B (the newer: generation + 1) carries the unknown ro_compat bit 0x2; copy A has none",
        codes: &[],
        note: None,
        exit_n: 8,
        exit_y: 8,
        mount_err: Some("unknown read-only-compatible features 0x2"),
    },
    Case {
        file: "sb-ro-compat-both.img.gz",
        corruption: "both superblock copies carry the unknown ro_compat bit 0x2",
        codes: &[],
        note: None,
        exit_n: 8,
        exit_y: 8,
        mount_err: Some("unknown read-only-compatible features 0x2"),
    },
    Case {
        file: "xattr-ptr-overflow.img.gz",
        corruption: "the xattr blob pointer of /hello.txt is block 2^64 - 1 (+1 block): its end overflows (its real blob leaks)",
        codes: &["block-leaked", "xattr-bad"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: Some("inode 2: xattr blob: blob lies outside the data area"),
    },
    Case {
        file: "dir-detached.img.gz",
        corruption: "the directory entry of /dir zeroed: the directory and its contents are unreachable",
        codes: &["dir-unreachable"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: None,
    },
];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(path: &Path, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap();
}

fn mem(bytes: &[u8]) -> Media {
    let m = Media::anonymous(bytes.len() as u64).unwrap();
    m.write_at(0, bytes).unwrap();
    m
}

fn bytes_of(m: &Media) -> Vec<u8> {
    m.read_vec(0, m.len() as usize).unwrap()
}

fn mount_bytes(bytes: &[u8]) -> Result<Fs, FsError> {
    Fs::mount(mem(bytes), FsOptions::default())
}

/// Unmount and hand back the media.
fn into_media(fs: Fs) -> Media {
    let Fs { media, .. } = fs;
    Arc::try_unwrap(media)
        .ok()
        .expect("sole owner of the media")
}

fn sb_of(bytes: &[u8]) -> Superblock {
    Superblock::decode(&bytes[BS as usize..], bytes.len() as u64)
        .or_else(|_| Superblock::decode(bytes, bytes.len() as u64))
        .unwrap()
}

fn put(bytes: &mut [u8], off: u64, data: &[u8]) {
    bytes[off as usize..off as usize + data.len()].copy_from_slice(data);
}

fn inode_of(bytes: &[u8], ino: u64) -> InodeRec {
    let sb = sb_of(bytes);
    let o = sb.inode_offset(ino) as usize;
    InodeRec::decode(&bytes[o..o + INODE_SIZE]).unwrap()
}

fn put_inode(bytes: &mut [u8], ino: u64, r: &InodeRec) {
    let sb = sb_of(bytes);
    put(bytes, sb.inode_offset(ino), &r.encode());
}

/// Every record of a kind: (slot offset, slot bytes).
fn records(bytes: &[u8], kind: RecKind) -> Vec<(u64, Vec<u8>)> {
    let m = mem(bytes);
    let sb = sb_of(bytes);
    let roots = Roots::decode(&bytes[(2 * BS) as usize..]).unwrap();
    let mut out = Vec::new();
    walk_chain(&m, &sb, kind, roots.heads[kind.index()], |off, b| {
        if b.iter().any(|&x| x != 0) {
            out.push((off, b.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    out
}

fn extent_of(bytes: &[u8], ino: u64) -> (u64, ExtentRec) {
    records(bytes, RecKind::Extent)
        .into_iter()
        .filter_map(|(o, b)| ExtentRec::decode(&b).unwrap().map(|r| (o, r)))
        .find(|(_, r)| r.ino == ino)
        .expect("extent record")
}

#[allow(clippy::needless_update)]
fn lookup(bytes: &[u8], path: &[&str]) -> u64 {
    let fs = Fs::mount(
        mem(bytes),
        FsOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ino = ROOT_INO;
    for p in path {
        ino = fs.lookup(ino, p.as_bytes()).unwrap().ino;
    }
    ino
}

// ---------------------------------------------------------------------------
// Image generation
// ---------------------------------------------------------------------------

fn reference() -> Vec<u8> {
    let m = Media::anonymous(IMG_BLOCKS * BS).unwrap();
    mkfs(
        &m,
        &MkfsOptions {
            label: "v2-reference".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    let hello = fs
        .mknod(ROOT_INO, b"hello.txt", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(hello.ino, 0, b"hello, daxlink\n", false).unwrap();
    fs.setxattr(hello.ino, b"user.comment", Some(b"reference image"), 0)
        .unwrap();
    let data = fs
        .mknod(ROOT_INO, b"data.bin", libc::S_IFREG | 0o600, 0, C)
        .unwrap();
    let pattern: Vec<u8> = (0..14000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs.write(data.ino, 0, &pattern, false).unwrap();
    let dir = fs.mkdir(ROOT_INO, b"dir", 0o755, C).unwrap();
    let nested = fs
        .mknod(dir.ino, b"nested.txt", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(nested.ino, 0, b"nested file\n", false).unwrap();
    fs.symlink(dir.ino, b"link", b"../hello.txt", C).unwrap();
    fs.link(hello.ino, dir.ino, b"hello-hardlink").unwrap();
    fs.mknod(ROOT_INO, b"empty", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    let sparse = fs
        .mknod(ROOT_INO, b"sparse", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(sparse.ino, 16 * BS, b"after a hole", false)
        .unwrap();
    fs.mknod(ROOT_INO, b"fifo", libc::S_IFIFO | 0o644, 0, C)
        .unwrap();
    let clone = fs
        .mknod(ROOT_INO, b"data-clone.bin", libc::S_IFREG | 0o600, 0, C)
        .unwrap();
    fs.clone_range(data.ino, 0, clone.ino, 0, 0).unwrap();
    fs.unmount().unwrap();
    bytes_of(&into_media(fs))
}

/// The state after a crash right after `op`'s commit record was persisted and
/// before its stores were applied in place (torn: the commit record is broken).
fn crash_after_commit(base: &[u8], op: impl FnOnce(&Fs), torn: bool) -> Vec<u8> {
    let fs = mount_bytes(base).unwrap();
    let geo = journal_geometry(&fs.sb, fs.media.len());
    let before = bytes_of(&fs.media);
    let (a0, _) = Journal::inspect(&fs.media, geo).unwrap();
    op(&fs);
    let (a1, _) = Journal::inspect(&fs.media, geo).unwrap();
    assert_eq!(a1, a0 + 1, "the operation must be exactly one transaction");
    let mut img = bytes_of(&fs.media);
    let area_off = (geo.start_block + 1) * BS;
    let area_len = ((geo.blocks - 1) * BS) as usize;
    let area = img[area_off as usize..area_off as usize + area_len].to_vec();
    let TxState::Committed { entries, .. } = format::decode_tx(&area, a1) else {
        panic!("no committed transaction in the journal");
    };
    for e in &entries {
        let (s, n) = (e.off as usize, e.data.len());
        img[s..s + n].copy_from_slice(&before[s..s + n]);
    }
    put(
        &mut img,
        geo.start_block * BS,
        &JournalHdr { applied_seq: a0 }.encode(),
    );
    if torn {
        let payload = u64::from_le_bytes(area[16..24].try_into().unwrap());
        let commit = area_off + format::TX_HDR_SIZE as u64 + payload;
        put(&mut img, commit, &[0u8; 4]);
    }
    img
}

fn make_image(file: &str, r: &[u8]) -> Vec<u8> {
    let mut b = r.to_vec();
    match file {
        "v2-reference.img.gz" => {}
        "sb-a-bad.img.gz" => b[130] ^= 0x40,
        "sb-both-bad.img.gz" => {
            b[130] ^= 0x40;
            b[BS as usize + 130] ^= 0x40;
        }
        "dirent-free-inode.img.gz" => {
            let ino = lookup(r, &["empty"]);
            let g = inode_of(r, ino).generation;
            put_inode(
                &mut b,
                ino,
                &InodeRec {
                    generation: g + 1,
                    ..Default::default()
                },
            );
        }
        "extent-beyond-device.img.gz" => {
            let ino = lookup(r, &["dir", "nested.txt"]);
            let (off, mut x) = extent_of(r, ino);
            x.phys = sb_of(r).total_blocks + 100;
            put(&mut b, off, &x.encode());
        }
        "wrong-nlink.img.gz" => {
            let ino = lookup(r, &["hello.txt"]);
            let mut i = inode_of(r, ino);
            assert_eq!(i.nlink, 2);
            i.nlink = 5;
            put_inode(&mut b, ino, &i);
        }
        "torn-journal.img.gz" => {
            b = crash_after_commit(
                r,
                |fs| {
                    fs.mkdir(ROOT_INO, b"torn-dir", 0o755, C).unwrap();
                },
                true,
            )
        }
        "journal-replay.img.gz" => {
            b = crash_after_commit(
                r,
                |fs| {
                    fs.mkdir(ROOT_INO, b"replayed-dir", 0o755, C).unwrap();
                },
                false,
            )
        }
        "leaked-block.img.gz" => {
            let sb = sb_of(r);
            let bit = sb.total_blocks - 1 - sb.data_start;
            let off = (sb.bitmap_start * BS) as usize;
            b[off + (bit / 8) as usize] |= 1 << (bit % 8);
            let c = format::bitmap_crc(&b[off..off + BS as usize]);
            put(&mut b, sb.bitmap_start * BS + 4088, &c.to_le_bytes());
        }
        "orphan-pending.img.gz" => {
            let fs = mount_bytes(r).unwrap();
            let a = fs
                .mknod(ROOT_INO, b"doomed", libc::S_IFREG | 0o644, 0, C)
                .unwrap();
            fs.write(a.ino, 0, &vec![0x5a; 3 * BS as usize], false)
                .unwrap();
            fs.open(a.ino).unwrap();
            fs.unlink(ROOT_INO, b"doomed").unwrap();
            // Crash: no release, no unmount.
            b = bytes_of(&fs.media);
        }
        "dup-block.img.gz" => {
            let hello = lookup(r, &["hello.txt"]);
            let nested = lookup(r, &["dir", "nested.txt"]);
            let (off, mut x) = extent_of(r, nested);
            x.phys = inode_of(r, hello).xattr_block;
            put(&mut b, off, &x.encode());
        }
        "unrecorded-share.img.gz" => {
            let data = lookup(r, &["data.bin"]);
            let nested = lookup(r, &["dir", "nested.txt"]);
            let (_, d) = extent_of(r, data);
            let (off, mut x) = extent_of(r, nested);
            x.phys = d.phys;
            put(&mut b, off, &x.encode());
        }
        "refcount-wrong.img.gz" => {
            let recs = records(r, RecKind::Refcount);
            assert_eq!(recs.len(), 1, "the clone shares one range");
            let (off, s) = &recs[0];
            let mut x = format::RefcountRec::decode(s).unwrap().unwrap();
            assert_eq!(x.count, 2);
            x.count = 3;
            put(&mut b, *off, &x.encode());
        }
        "inode-bad-crc.img.gz" => {
            let ino = lookup(r, &["hello.txt"]);
            let o = sb_of(r).inode_offset(ino) as usize;
            b[o + 4] ^= 0x01;
        }
        "sb-ro-compat-newer.img.gz" => {
            let mut sb = sb_of(r);
            sb.ro_compat = 0x2;
            sb.generation += 1;
            put(&mut b, BS, &sb.encode());
        }
        "sb-ro-compat-both.img.gz" => {
            let mut sb = sb_of(r);
            sb.ro_compat = 0x2;
            put(&mut b, 0, &sb.encode());
            put(&mut b, BS, &sb.encode());
        }
        "xattr-ptr-overflow.img.gz" => {
            let ino = lookup(r, &["hello.txt"]);
            let mut i = inode_of(r, ino);
            assert_eq!(i.xattr_blocks, 1);
            i.xattr_block = u64::MAX;
            put_inode(&mut b, ino, &i);
        }
        "dir-detached.img.gz" => {
            let dir = lookup(r, &["dir"]);
            let (off, _) = records(r, RecKind::Dirent)
                .into_iter()
                .find(|(_, s)| {
                    format::DirentRec::decode(s)
                        .unwrap()
                        .is_some_and(|d| d.child == dir)
                })
                .unwrap();
            put(&mut b, off, &[0u8; format::DIRENT_SIZE]);
        }
        other => panic!("no recipe for {other}"),
    }
    b
}

fn mount_text(bytes: &[u8]) -> String {
    match mount_bytes(bytes) {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("Err: {e}"),
    }
}

#[test]
#[ignore]
fn regenerate_images() {
    let dir = images_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Images already stored are kept (so adding a case does not change the
    // others) unless DAXLINK_REGENERATE_ALL=1, which makes a new reference
    // and every image from it; a new image is made from the stored reference.
    let all = std::env::var("DAXLINK_REGENERATE_ALL").is_ok_and(|v| v == "1");
    let stored_ref = dir.join("v2-reference.img.gz");
    let r = if all || !stored_ref.exists() {
        reference()
    } else {
        gunzip(&stored_ref)
    };
    let mut table = String::new();
    for c in CASES {
        let path = dir.join(c.file);
        let img = if all || !path.exists() {
            let img = make_image(c.file, &r);
            gzip(&path, &img);
            img
        } else {
            gunzip(&path)
        };
        let rep = fsck::check(&mem(&img), false);
        let m = mem(&img);
        let fixed = fsck::check(&m, true);
        let codes = if rep.codes().is_empty() {
            match c.note {
                Some(n) => format!("none (note `{n}`)"),
                None => "none".to_string(),
            }
        } else {
            rep.codes()
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let after = if fixed.exit_code() == 8 {
            assert_eq!(bytes_of(&m), img, "{}: -y refused but wrote", c.file);
            "unchanged by `-y`".to_string()
        } else {
            mount_text(&bytes_of(&m))
        };
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            c.file,
            c.corruption,
            codes,
            rep.exit_code(),
            fixed.exit_code(),
            mount_text(&img).replace('|', "\\|"),
            after,
        ));
    }
    let readme = format!(
        "# Reference and corrupted images\n\n\
Small (2 MiB, 512-block) daxlink format v2 images, gzip-compressed, for `tests/fsck.rs`.\n\
Each is made from `v2-reference.img.gz` by `tests/fsck.rs` (`make_image`). Make the images of new cases\n\
(and this table) with\n\n\
```\ncargo test --test fsck -- --ignored regenerate_images\n```\n\n\
which keeps the stored ones; `DAXLINK_REGENERATE_ALL=1` regenerates them all from a new reference\n\
(uuids and timestamps change then; the layout and the expectations do not).\n\
`v1-reference.img.gz` is the format v1 reference image, kept (not regenerated) to show that fsck and\n\
mount refuse a v1 image with one line (`format_v1_is_refused_with_one_line`).\n\
The reference image is made through the core `Fs` API on in-memory media: `/hello.txt` (15 bytes,\n\
xattr `user.comment`, hard link `/dir/hello-hardlink`), `/data.bin` (14000 bytes, 4 blocks),\n\
`/dir/nested.txt`, `/dir/link` -> `../hello.txt`, `/empty`, `/sparse` (one block after a\n\
16-block hole), `/fifo`, `/data-clone.bin` (a reflink clone of `/data.bin`: one refcount record).\n\n\
Columns: finding codes of `fsck-daxlink -n` (see `daxlink::fsck::CODES`), exit status of\n\
`fsck-daxlink -n` and of `fsck-daxlink -y` on a fresh copy, what `Fs::mount` says about the image\n\
as it is, and after `-y`. After `-y`, `-n` exits 0 on every image (with both superblock copies\n\
bad, fsck recovers the geometry: `src/fsck/geometry.rs`), except where `-n` and `-y` both refuse\n\
(exit 8) and `-y` writes nothing: unknown read-only-compatible features in the superblock copy mount\n\
trusts, which fsck, as e2fsck, neither checks nor repairs, and mount mounts only read-only (`-o ro`).\n\
A torn transaction is informational (a note, exit 0): it is the normal trace of a crash\n\
during a commit; `-y` clears it.\n\n\
| image | corruption | `-n` finds | `-n` exit | `-y` exit | mount before | mount after `-y` |\n\
|---|---|---|---|---|---|---|\n{table}"
    );
    std::fs::write(dir.join("README.md"), readme).unwrap();
}

// ---------------------------------------------------------------------------
// The images
// ---------------------------------------------------------------------------

fn temp_copy(file: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(file.trim_end_matches(".gz"));
    std::fs::write(&p, gunzip(&images_dir().join(file))).unwrap();
    (d, p)
}

fn mount_path(p: &Path) -> Result<Fs, FsError> {
    Fs::mount(
        Media::open(p, Some(PersistMode::Msync), false).unwrap(),
        FsOptions::default(),
    )
}

fn assert_case(c: &Case, rep: &Report, what: &str) {
    assert_eq!(
        rep.codes(),
        c.codes.to_vec(),
        "{}: {what}: {rep:#?}",
        c.file
    );
    assert_eq!(rep.exit_code(), c.exit_n, "{}: {what}: {rep:#?}", c.file);
    if let Some(n) = c.note {
        assert!(
            rep.notes.iter().any(|x| x.contains(n)),
            "{}: note {n} missing: {rep:#?}",
            c.file
        );
    }
    assert!(
        rep.error.as_deref().is_none_or(|e| !e.contains("internal")),
        "{rep:?}"
    );
}

#[test]
fn every_image_checks_repairs_and_mounts() {
    let listed: Vec<&str> = CASES.iter().map(|c| c.file).collect();
    for e in std::fs::read_dir(images_dir()).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        // The v1 image has its own test (format_v1_is_refused_with_one_line).
        if n.ends_with(".gz") && n != "v1-reference.img.gz" {
            assert!(listed.contains(&n.as_str()), "images/{n} has no test case");
        }
    }
    for c in CASES {
        let (_d, p) = temp_copy(c.file);
        // Mount behaviour of the image as it is (on its own copy).
        {
            let (_d2, p2) = temp_copy(c.file);
            match (mount_path(&p2), c.mount_err) {
                (Ok(_), None) => {}
                (Err(e @ (FsError::Corrupt(_) | FsError::RoCompat(_))), Some(s)) => {
                    let m = e.to_string();
                    assert!(m.contains(s), "{}: mount said {m:?}", c.file)
                }
                (Ok(_), Some(s)) => panic!("{}: mount succeeded, expected {s:?}", c.file),
                (Err(e), _) => panic!("{}: mount failed: {e}", c.file),
            }
        }
        let before = std::fs::read(&p).unwrap();
        let rep_n = fsck::check_path(&p, false);
        assert_case(c, &rep_n, "-n");
        assert_eq!(std::fs::read(&p).unwrap(), before, "-n changed the image");
        let rep = fsck::check_path(&p, true);
        assert_eq!(rep.exit_code(), c.exit_y, "{}: -y: {rep:#?}", c.file);
        // -n's verdict predicts -y's: both refuse with the same reason, or
        // -y fixes what -n found.
        assert_eq!(rep_n.error, rep.error, "{}: -n and -y disagree", c.file);
        if c.exit_y == 8 {
            // A refusal writes nothing.
            assert_eq!(
                std::fs::read(&p).unwrap(),
                before,
                "{}: -y refused but wrote",
                c.file
            );
            continue;
        }
        assert!(rep.findings.iter().all(|f| f.fixed), "{rep:#?}");
        let rep = fsck::check_path(&p, false);
        assert_eq!(rep.exit_code(), 0, "{}: -n after -y: {rep:#?}", c.file);
        assert!(rep.notes.iter().all(|n| !n.contains("journal-torn")));
        let fs = mount_path(&p).unwrap_or_else(|e| panic!("{}: mount after -y: {e}", c.file));
        // What the repair must have preserved or restored.
        match c.file {
            "journal-replay.img.gz" => {
                fs.lookup(ROOT_INO, b"replayed-dir").unwrap();
            }
            "torn-journal.img.gz" => {
                assert_eq!(fs.lookup(ROOT_INO, b"torn-dir"), Err(FsError::NotFound));
            }
            "dir-detached.img.gz" => {
                let lf = fs.lookup(ROOT_INO, b"lost+found").unwrap();
                let d = fs.lookup(lf.ino, b"#4").or_else(|_| {
                    let e = fs.readdir(lf.ino, 0, 100).unwrap();
                    fs.lookup(lf.ino, &e[2].name)
                });
                let d = d.unwrap();
                let n = fs.lookup(d.ino, b"nested.txt").unwrap();
                assert_eq!(fs.read(n.ino, 0, 100).unwrap(), b"nested file\n");
            }
            "sb-a-bad.img.gz"
            | "sb-both-bad.img.gz"
            | "wrong-nlink.img.gz"
            | "leaked-block.img.gz" => {
                let h = fs.lookup(ROOT_INO, b"hello.txt").unwrap();
                assert_eq!(fs.read(h.ino, 0, 100).unwrap(), b"hello, daxlink\n");
                assert_eq!(h.nlink, 2);
                assert_eq!(
                    fs.getxattr(h.ino, b"user.comment").unwrap(),
                    b"reference image"
                );
            }
            "xattr-ptr-overflow.img.gz" => {
                // The pointer is cleared, the file kept.
                let h = fs.lookup(ROOT_INO, b"hello.txt").unwrap();
                assert_eq!(fs.read(h.ino, 0, 100).unwrap(), b"hello, daxlink\n");
                assert_eq!(fs.getxattr(h.ino, b"user.comment"), Err(FsError::NoData));
            }
            _ => {}
        }
        fs.unmount().unwrap();
        drop(fs);
        let rep = fsck::check_path(&p, false);
        assert!(rep.is_clean(), "{}: after mount+unmount: {rep:#?}", c.file);
    }
}

/// `images/v1-reference.img.gz` is a format v1 image (kept, not regenerated):
/// fsck and mount refuse it with one line naming the version, and change nothing.
#[test]
fn format_v1_is_refused_with_one_line() {
    const LINE: &str = "format version 1 of this image is not supported by this daxlink";
    let (d, p) = temp_copy("v1-reference.img.gz");
    let before = std::fs::read(&p).unwrap();
    for args in [&["-n"][..], &["-y"][..]] {
        let (code, out) = run_cli(args, &p);
        assert_eq!(code, 8, "{out}");
        assert!(out.contains(LINE), "{out}");
        assert_eq!(out.trim().lines().count(), 1, "{out}");
    }
    match mount_path(&p) {
        Err(FsError::Version(m)) => assert!(m.contains(LINE), "{m}"),
        Err(e) => panic!("v1 image: {e}"),
        Ok(_) => panic!("a v1 image mounted"),
    }
    // The daemon's one line, without the fsck hint.
    let dir = d.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_daxlink"))
        .arg("mount")
        .arg(&p)
        .arg(&dir)
        .output()
        .unwrap();
    if out.status.success() {
        let _ = Command::new("umount").arg(&dir).status();
        panic!("a v1 image mounted");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(LINE) && !err.contains("fsck"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

/// Unknown read-only-compatible features in the superblock copy mount trusts
/// (the newer one, or both): `fsck -n` and `fsck -y` refuse alike with one
/// line (exit 8) and write nothing, the daemon's mount refuses read-write with
/// the same line and no fsck advice, and a read-only mount works.
#[test]
fn unknown_ro_compat_is_refused_alike_by_fsck_and_mount() {
    let line = FsError::RoCompat(0x2).to_string();
    for file in ["sb-ro-compat-newer.img.gz", "sb-ro-compat-both.img.gz"] {
        let (d, p) = temp_copy(file);
        let before = std::fs::read(&p).unwrap();
        let mut said = Vec::new();
        for args in [&["-n"][..], &["-y"][..], &["-p", "-f"][..]] {
            let (code, out) = run_cli(args, &p);
            assert_eq!(code, 8, "{file} {args:?}: {out}");
            assert_eq!(out.trim().lines().count(), 1, "{file} {args:?}: {out}");
            assert!(out.contains(&line) && !out.contains("-y"), "{out}");
            assert_eq!(std::fs::read(&p).unwrap(), before, "{file} {args:?} wrote");
            said.push(out);
        }
        assert!(said.windows(2).all(|w| w[0] == w[1]), "{said:#?}");
        let dir = d.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_daxlink"))
            .arg("mount")
            .arg(&p)
            .arg(&dir)
            .output()
            .unwrap();
        if out.status.success() {
            let _ = Command::new("umount").arg(&dir).status();
            panic!("{file}: mounted read-write");
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&line) && !err.contains("fsck"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), before, "{file}: mount wrote");
        let ro = FsOptions {
            read_only: true,
            ..Default::default()
        };
        let fs = Fs::mount(Media::open(&p, None, true).unwrap(), ro).unwrap();
        let h = fs.lookup(ROOT_INO, b"hello.txt").unwrap();
        assert_eq!(fs.read(h.ino, 0, 100).unwrap(), b"hello, daxlink\n");
        drop(fs);
        assert_eq!(std::fs::read(&p).unwrap(), before, "{file}: ro mount wrote");
    }
}

/// A superblock generation at 2^64 - 1 (both copies, valid checksums; found
/// by the fuzzer after a repair): fsck finds nothing, so mount must work and
/// rewrite the superblock without overflowing (it saturates).
#[test]
fn superblock_generation_at_the_limit_mounts() {
    let mut b = gunzip(&images_dir().join("v2-reference.img.gz"));
    let mut sb = sb_of(&b);
    sb.generation = u64::MAX;
    sb.mount_count = u64::MAX;
    put(&mut b, 0, &sb.encode());
    put(&mut b, BS, &sb.encode());
    assert!(fsck::check(&mem(&b), false).is_clean());
    let fs = mount_bytes(&b).unwrap();
    fs.mknod(ROOT_INO, b"new", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.unmount().unwrap();
    let m = into_media(fs);
    let (sb, _) = read_superblock(&m).unwrap();
    assert_eq!((sb.generation, sb.mount_count), (u64::MAX, u64::MAX));
    assert!(fsck::check(&m, false).is_clean());
}

/// `-n`'s advice tells what `-y` will do: repair everything, or not all.
#[test]
fn advice_predicts_the_repair() {
    let f = |fixable| fsck::Finding {
        code: "refcount-wrong",
        message: "m".into(),
        fixed: false,
        fixable,
    };
    let mut r = Report {
        findings: vec![f(true)],
        ..Default::default()
    };
    assert_eq!(
        r.advice("img", "fsck.daxlink").unwrap(),
        "img: run fsck.daxlink -y to repair"
    );
    r.findings.push(f(false));
    assert_eq!(
        r.advice("img", "fsck.daxlink").unwrap(),
        "img: run fsck.daxlink -y to repair what it can; it cannot repair 1 problem"
    );
    r.error = Some("refused".into());
    assert_eq!(r.advice("img", "fsck.daxlink"), None);
}

fn run_cli(args: &[&str], p: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fsck-daxlink"))
        .args(args)
        .arg(p)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn cli_exit_codes_and_json() {
    for c in CASES.iter().filter(|c| {
        [
            "v2-reference.img.gz",
            "sb-both-bad.img.gz",
            "wrong-nlink.img.gz",
            "extent-beyond-device.img.gz",
            "torn-journal.img.gz",
        ]
        .contains(&c.file)
    }) {
        let (_d, p) = temp_copy(c.file);
        let (code, out) = run_cli(&["-n", "--json"], &p);
        assert_eq!(code, c.exit_n, "{}: {out}", c.file);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        assert_eq!(v["exit_code"], c.exit_n);
        // Notes (a torn transaction) do not make an image unclean.
        assert_eq!(v["clean"], c.exit_n == 0);
        let mut codes: Vec<String> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_string())
            .collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes, c.codes.to_vec(), "{}: {out}", c.file);
        // -y repairs every one of them, and -n says so.
        assert!(
            v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["fixable"] == true),
            "{out}"
        );
        let (_, text) = run_cli(&["-n"], &p);
        assert_eq!(
            text.contains("-y to repair\n"),
            c.exit_n == 4 && c.exit_y == 1,
            "{}: {text}",
            c.file
        );
        if c.exit_n != 8 {
            // The data area of mkfs's geometry for 512 blocks (also what fsck
            // recovers when both superblock copies are bad).
            let ds = mkfs_geometry(512, &MkfsOptions::default())
                .unwrap()
                .data_start;
            assert_eq!(v["blocks_total"], 512 - ds);
        }
        // Default mode checks only, like -n.
        let (code, _) = run_cli(&[], &p);
        assert_eq!(code, c.exit_n, "{}", c.file);
        // fsck(8) preen mode repairs.
        let (code, out) = run_cli(&["-p", "-f"], &p);
        assert_eq!(code, c.exit_y, "{}: {out}", c.file);
        if c.exit_y != 8 {
            let (code, out) = run_cli(&["-n"], &p);
            assert_eq!(code, 0, "{}: {out}", c.file);
            assert!(out.contains(": clean, "), "{out}");
        } else {
            assert!(out.contains("no valid superblock"), "{out}");
        }
    }
    // No superblock and nothing else of a filesystem: exit 8, saying why.
    let d = tempfile::tempdir().unwrap();
    let zeros = d.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 512 * BS as usize]).unwrap();
    for mode in [&["-n"][..], &["-p", "-f"][..]] {
        let (code, out) = run_cli(mode, &zeros);
        assert_eq!(code, 8, "{out}");
        assert!(out.contains("no valid superblock"), "{out}");
    }
    // Usage errors and a missing image.
    let (code, _) = run_cli(&["-n", "-y"], Path::new("x"));
    assert_eq!(code, 16);
    let (code, out) = run_cli(&["-n"], Path::new("/nonexistent/image"));
    assert_eq!(code, 8, "{out}");
}

// ---------------------------------------------------------------------------
// Fresh filesystems, crashes through the API
// ---------------------------------------------------------------------------

#[test]
fn fresh_mkfs_is_clean() {
    for blocks in [512u64, 4096, 40000] {
        let m = Media::anonymous(blocks * BS).unwrap();
        mkfs(&m, &MkfsOptions::default()).unwrap();
        let r = fsck::check(&m, false);
        assert!(r.is_clean(), "{blocks}: {r:#?}");
        assert_eq!(r.counts.inodes, 1);
        assert_eq!(r.counts.blocks_used, 0);
        let r = fsck::check(&m, true);
        assert_eq!(r.exit_code(), 0);
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fresh.img");
    daxlink::mkfs::mkfs_path(&p, Some(4 << 20), false, &MkfsOptions::default()).unwrap();
    let (code, out) = run_cli(&["-n"], &p);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn open_unlinked_file_then_crash() {
    let m = Media::anonymous(2048 * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    let keep = fs
        .mknod(ROOT_INO, b"keep", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(keep.ino, 0, &vec![1u8; 50_000], false).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap();
    let gone = fs
        .mknod(d.ino, b"gone", libc::S_IFREG | 0o644, 0, C)
        .unwrap();
    fs.write(gone.ino, 0, &vec![2u8; 300_000], false).unwrap();
    fs.setxattr(gone.ino, b"user.a", Some(&[3u8; 5000]), 0)
        .unwrap();
    fs.open(gone.ino).unwrap();
    fs.unlink(d.ino, b"gone").unwrap();
    // While it is open the blocks are still in use; crash now (no release, no unmount).
    let bytes = bytes_of(&into_media(fs));

    // fsck before the next mount: the orphan is reported, and -y reclaims it.
    let m = mem(&bytes);
    let r = fsck::check(&m, false);
    assert_eq!(r.codes(), vec!["orphan-reclaim"], "{r:#?}");
    assert_eq!(r.exit_code(), 4);
    let used_before = r.counts.blocks_used;
    let r = fsck::check(&m, true);
    assert_eq!(r.exit_code(), 1, "{r:#?}");
    assert!(r.counts.blocks_used < used_before - 70, "{r:#?}");
    let r = fsck::check(&m, false);
    assert!(r.is_clean(), "{r:#?}");
    let free_after_fsck = {
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        fs.free_blocks()
    };

    // Or the next mount reclaims it, and fsck is clean afterwards.
    let fs = mount_bytes(&bytes).unwrap();
    assert_eq!(fs.free_blocks(), free_after_fsck);
    assert_eq!(fs.read(keep.ino, 0, 10).unwrap(), vec![1u8; 10]);
    let m = into_media(fs); // crash again, right after mount
    let r = fsck::check(&m, false);
    assert!(r.is_clean(), "{r:#?}");
    assert!(r.notes.iter().any(|n| n.contains("not cleanly unmounted")));
}

#[test]
fn repair_of_many_problems_at_once() {
    let r = reference();
    let mut b = make_image("inode-bad-crc.img.gz", &r);
    // Add: a wrong nlink, a leaked block, a dirent ftype and a bad bitmap crc elsewhere.
    let data = lookup(&r, &["data.bin"]);
    let mut i = inode_of(&b, data);
    i.nlink = 3;
    put_inode(&mut b, data, &i);
    let m = mem(&b);
    let rep = fsck::check(&m, false);
    assert!(rep.codes().contains(&"nlink-wrong"), "{rep:#?}");
    let rep = fsck::check(&m, true);
    assert_eq!(rep.exit_code(), 1, "{rep:#?}");
    assert!(fsck::check(&m, false).is_clean());
    let fs = Fs::mount(m, FsOptions::default()).unwrap();
    // The file whose inode was lost is gone; everything else is intact.
    assert_eq!(fs.lookup(ROOT_INO, b"hello.txt"), Err(FsError::NotFound));
    let d = fs.lookup(ROOT_INO, b"data.bin").unwrap();
    assert_eq!(d.nlink, 1);
    assert_eq!(fs.read(d.ino, 0, 14000).unwrap().len(), 14000);
}

// ---------------------------------------------------------------------------
// A seeded PRNG (the image fuzzer, with random scribbles and semantic
// corruptions of realistic images, is tests/fuzz/)
// ---------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn read_superblock_agrees_with_fsck_on_copies() {
    // fsck rewrites a bad copy from the good one; read_superblock then sees no problem.
    let r = reference();
    let b = make_image("sb-a-bad.img.gz", &r);
    let m = mem(&b);
    assert_eq!(read_superblock(&m).unwrap().1.len(), 1);
    assert_eq!(fsck::check(&m, true).exit_code(), 1);
    assert!(read_superblock(&m).unwrap().1.is_empty());
}

/// Finding 7c: with both superblock copies unusable, fsck -y finds the
/// geometry again (mkfs's for the media size, or by a scan when mkfs was
/// given another journal or inode count) and keeps every file; a truncated
/// image is refused with exit 8, saying so.
#[test]
fn geometry_is_recovered_without_superblocks() {
    for (journal, inodes) in [(None, None), (Some(40), Some(2048))] {
        let m = Media::anonymous(1024 * BS).unwrap();
        let opts = MkfsOptions {
            label: "lost-sb".into(),
            journal_blocks: journal,
            inodes,
            ..Default::default()
        };
        let want = mkfs(&m, &opts).unwrap();
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap();
        let f = fs.mknod(d.ino, b"f", libc::S_IFREG | 0o644, 0, C).unwrap();
        fs.write(f.ino, 0, &[7u8; 9000], false).unwrap();
        fs.unmount().unwrap();
        let mut b = bytes_of(&into_media(fs));
        let intact = b.clone();
        // Both copies: one zeroed, one with a field changed (bad crc).
        b[..BS as usize].fill(0);
        b[BS as usize + 130] ^= 1;
        let m = mem(&b);
        assert!(Fs::mount(mem(&b), FsOptions::default()).is_err());
        let r = fsck::check(&m, false);
        assert_eq!(r.codes(), vec!["superblock-bad"], "{r:#?}");
        assert_eq!(r.exit_code(), 4);
        let r = fsck::check(&m, true);
        assert_eq!(r.exit_code(), 1, "{r:#?}");
        assert!(fsck::check(&m, false).is_clean());
        let (sb, _) = read_superblock(&m).unwrap();
        assert_eq!(
            (sb.journal_blocks, sb.inode_count, sb.data_start, sb.uuid),
            (
                want.journal_blocks,
                want.inode_count,
                want.data_start,
                want.uuid
            ),
            "journal {journal:?} inodes {inodes:?}"
        );
        let fs = Fs::mount(m, FsOptions::default()).unwrap();
        let d = fs.lookup(ROOT_INO, b"d").unwrap();
        let f = fs.lookup(d.ino, b"f").unwrap();
        assert_eq!(fs.read(f.ino, 0, 9000).unwrap(), vec![7u8; 9000]);
        fs.unmount().unwrap();
        // Truncated: the copies are intact but claim more than the image holds.
        let mut t = intact.clone();
        t.truncate(t.len() - 8 * BS as usize);
        for repair in [false, true] {
            let r = fsck::check(&mem(&t), repair);
            assert_eq!(r.exit_code(), 8, "{r:#?}");
            assert!(r.error.as_deref().unwrap().contains("truncated"), "{r:#?}");
        }
    }
}

/// Mount and fsck share their record rules (src/rules.rs): an extent past
/// the largest file is refused by mount and repaired by fsck, and mount
/// accepts what fsck leaves.
#[test]
fn mount_and_fsck_share_extent_rules() {
    let r = reference();
    for past in [1u64 << 34, 1] {
        let mut b = r.clone();
        let ino = lookup(&b, &["data.bin"]);
        let (off, mut x) = extent_of(&b, ino);
        // The extent ends `past` blocks after the largest file's last block.
        let logical = (1u64 << 34) + past - x.len as u64;
        x.logical = logical;
        put(&mut b, off, &x.encode());
        match mount_bytes(&b) {
            Err(FsError::Corrupt(m)) => assert!(m.contains("largest file size"), "{m}"),
            other => panic!("mount of an extent at logical {logical}: {:?}", other.err()),
        }
        let m = mem(&b);
        let rep = fsck::check(&m, false);
        assert!(rep.codes().contains(&"extent-range"), "{rep:#?}");
        assert_eq!(fsck::check(&m, true).exit_code(), 1);
        assert!(fsck::check(&m, false).is_clean());
        Fs::mount(m, FsOptions::default())
            .unwrap()
            .unmount()
            .unwrap();
    }
}

// ---------------------------------------------------------------------------
// Record slots
// ---------------------------------------------------------------------------

/// Every slot of a kind, free or not: (slot offset, slot bytes).
fn all_slots(bytes: &[u8], kind: RecKind) -> Vec<(u64, Vec<u8>)> {
    let m = mem(bytes);
    let sb = sb_of(bytes);
    let roots = Roots::decode(&bytes[(2 * BS) as usize..]).unwrap();
    let mut out = Vec::new();
    let _ = walk_chain(&m, &sb, kind, roots.heads[kind.index()], |off, b| {
        out.push((off, b.to_vec()));
        Ok(())
    });
    out
}

// ---------------------------------------------------------------------------
// The core and fsck agree: random workloads through the Fs API stay clean
// ---------------------------------------------------------------------------

#[test]
fn core_workloads_stay_clean() {
    let seed: u64 = std::env::var("FSCK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        // A fixed default, so that CI runs the same cases every time (and a
        // failure reproduces); FSCK_SEED explores others.
        .unwrap_or(0x5eed_0001);
    let ops: u64 = std::env::var("FSCK_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    println!("core_workloads_stay_clean: seed = {seed} (rerun with FSCK_SEED={seed})");
    let mut rng = Rng(seed);
    let m = Media::anonymous(4096 * BS).unwrap();
    mkfs(&m, &MkfsOptions::default()).unwrap();
    let mut fs = Fs::mount(m, FsOptions::default()).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    let names: Vec<Vec<u8>> = (0..6).map(|i| format!("f{i}").into_bytes()).collect();
    let mut open_held: Vec<u64> = Vec::new();
    let mut last = String::new();
    for op in 0..ops {
        let n = &names[rng.below(names.len() as u64) as usize];
        let parent = if rng.below(2) == 0 { ROOT_INO } else { d };
        let ino = fs.lookup(parent, n).ok().map(|a| a.ino);
        let other = fs
            .lookup(ROOT_INO, &names[rng.below(names.len() as u64) as usize])
            .ok()
            .map(|a| a.ino);
        let off = rng.below(40) * if rng.below(3) == 0 { 1000 } else { BS };
        let len = 1 + rng.below(12) * BS + rng.below(2) * rng.below(BS);
        let what = match (rng.below(12), ino) {
            (_, None) => {
                let _ = fs.mknod(parent, n, libc::S_IFREG | 0o644, 0, C);
                "create"
            }
            (0..=2, Some(i)) => {
                let data = vec![(op % 251) as u8; len as usize];
                let _ = fs.write(i, off, &data, false);
                "write"
            }
            (3, Some(i)) => {
                let _ = fs.truncate(i, rng.below(30) * 1500);
                "truncate"
            }
            (4, Some(i)) => {
                let _ = fs.fallocate(
                    i,
                    off,
                    len,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                );
                "punch"
            }
            (5 | 6, Some(i)) => {
                if let Some(o) = other {
                    let _ = fs.clone_range(o, 0, i, rng.below(8) * BS, 0);
                }
                "clone"
            }
            (7, Some(i)) => {
                if let Some(o) = other {
                    let _ = fs.copy_range(o, rng.below(3) * 1000, i, off, len);
                }
                "copy_range"
            }
            (8, Some(i)) => {
                let _ = fs.unshare(i, 0, 0);
                "unshare"
            }
            (9, Some(i)) => {
                if rng.below(3) == 0 {
                    fs.open(i).unwrap();
                    open_held.push(i);
                }
                let _ = fs.unlink(parent, n);
                "unlink"
            }
            (10, Some(i)) => {
                let _ = fs.link(i, if parent == d { ROOT_INO } else { d }, n);
                let _ = fs.setxattr(i, b"user.x", Some(&vec![1u8; len as usize % 9000]), 0);
                "link+xattr"
            }
            (_, Some(_)) => {
                if let Some(i) = open_held.pop() {
                    fs.close(i).unwrap();
                }
                "release"
            }
        };
        last = format!("{last} {what}");
        if op % 25 == 24 {
            // A snapshot of the media as a crash would leave it: after mount it is clean.
            let snap = bytes_of(&fs.media);
            let ctx = format!("seed {seed} op {op}:{last}");
            let r = fsck::check(&mem(&snap), false);
            assert!(
                r.codes().iter().all(|c| *c == "orphan-reclaim"),
                "{ctx}: {r:#?}"
            );
            let after = into_media(mount_bytes(&snap).unwrap());
            let r = fsck::check(&after, false);
            assert!(r.is_clean(), "{ctx}: after mount: {r:#?}");
            last.clear();
        }
        if op % 100 == 99 {
            for i in open_held.drain(..) {
                fs.close(i).unwrap();
            }
            fs.unmount().unwrap();
            let m = into_media(fs);
            let r = fsck::check(&m, false);
            assert!(r.is_clean(), "seed {seed} op {op}: after unmount: {r:#?}");
            fs = Fs::mount(m, FsOptions::default()).unwrap();
        }
    }
    let st = fs.share_stats();
    println!(
        "core_workloads_stay_clean: {} free blocks, {} shared blocks, {} refcount records",
        fs.free_blocks(),
        st.shared_blocks,
        st.refcount_records
    );
}

/// Makes a large populated image for timing the checker:
/// `FSCK_LARGE_IMAGE=/tmp/big.img FSCK_LARGE_MB=4096 cargo test --test fsck -- --ignored large_image`,
/// then `time target/release/fsck-daxlink -n /tmp/big.img`.
#[test]
#[ignore]
fn large_image() {
    let path = PathBuf::from(
        std::env::var("FSCK_LARGE_IMAGE").unwrap_or_else(|_| "/tmp/fsck-large.img".into()),
    );
    let mb: u64 = std::env::var("FSCK_LARGE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let files: u64 = std::env::var("FSCK_LARGE_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let _ = std::fs::remove_file(&path);
    daxlink::mkfs::mkfs_path(&path, Some(mb << 20), true, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(
        Media::open(&path, Some(PersistMode::None), false).unwrap(),
        FsOptions::default(),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let mut dir = ROOT_INO;
    let mut prev = None;
    for i in 0..files {
        if i % 1000 == 0 {
            dir = fs
                .mkdir(ROOT_INO, format!("d{i}").as_bytes(), 0o755, C)
                .unwrap()
                .ino;
        }
        let f = fs
            .mknod(dir, format!("f{i}").as_bytes(), libc::S_IFREG | 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(f, 0, &vec![i as u8; (1 + i % 7) as usize * 4096], false)
            .unwrap();
        if i % 10 == 0 {
            if let Some(p) = prev {
                fs.clone_range(p, 0, f, 64 * BS, 0).unwrap();
            }
        }
        prev = Some(f);
    }
    fs.unmount().unwrap();
    drop(fs);
    println!("populated in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let r = fsck::check_path(&path, false);
    println!(
        "fsck -n (debug build) in {:?}: {}",
        t.elapsed(),
        r.summary("big")
    );
    assert!(r.is_clean(), "{r:#?}");
}

// ---------------------------------------------------------------------------
// Targeted corruptions: each must give its code, and -y must fix it
// ---------------------------------------------------------------------------

fn dirent_slot(bytes: &[u8], parent: u64, name: &[u8]) -> (u64, format::DirentRec) {
    records(bytes, RecKind::Dirent)
        .into_iter()
        .filter_map(|(o, s)| format::DirentRec::decode(&s).unwrap().map(|d| (o, d)))
        .find(|(_, d)| d.parent == parent && d.name == name)
        .expect("dirent")
}

#[test]
fn targeted_corruptions_are_repaired() {
    use daxlink::format::{DirentRec, OrphanRec, RecBlockHdr};
    let r = reference();
    let orphaned = make_image("orphan-pending.img.gz", &r);
    let sb = &*Box::leak(Box::new(sb_of(&r)));
    let hello = lookup(&r, &["hello.txt"]);
    let data = lookup(&r, &["data.bin"]);
    let dir = lookup(&r, &["dir"]);
    let link = lookup(&r, &["dir", "link"]);
    type Recipe = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, &[&str], Recipe)> = vec![
        (
            "root inode checksum",
            &["inode-bad", "root-bad"],
            Box::new(move |b| b[sb.inode_offset(1) as usize + 8] ^= 1),
        ),
        (
            "root is a regular file",
            &["root-bad"],
            Box::new(|b| {
                let mut i = inode_of(b, 1);
                i.mode = libc::S_IFREG | 0o644;
                put_inode(b, 1, &i);
            }),
        ),
        (
            "roots block checksum",
            &["roots-bad"],
            Box::new(|b| b[2 * BS as usize + 9] ^= 1),
        ),
        (
            "extent chain loops onto itself",
            &["chain-bad"],
            Box::new(|b| {
                let roots = Roots::decode(&b[(2 * BS) as usize..]).unwrap();
                let h = roots.heads[RecKind::Extent.index()];
                put(
                    b,
                    h * BS,
                    &RecBlockHdr {
                        kind: RecKind::Extent,
                        next: h,
                    }
                    .encode(),
                );
            }),
        ),
        (
            "directory inside itself",
            &["dir-cycle", "dir-unreachable"],
            Box::new(move |b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"dir");
                d.parent = dir;
                put(b, off, &d.encode());
            }),
        ),
        (
            "symlink of size 0",
            &["symlink-bad"],
            Box::new(move |b| {
                let mut i = inode_of(b, link);
                i.size = 0;
                put_inode(b, link, &i);
            }),
        ),
        (
            "symlink without its target block",
            &["block-leaked", "dirent-free-inode", "symlink-bad"],
            Box::new(move |b| {
                let (off, _) = extent_of(b, link);
                put(b, off, &[0u8; 32]);
            }),
        ),
        (
            "xattr checksum",
            &["xattr-bad"],
            Box::new(move |b| {
                let mut i = inode_of(b, hello);
                i.xattr_crc ^= 1;
                put_inode(b, hello, &i);
            }),
        ),
        (
            "bitmap block checksum",
            &["bitmap-crc"],
            Box::new(move |b| b[(sb.bitmap_start * BS) as usize + 4000] ^= 1),
        ),
        (
            "dirent file type",
            &["dirent-ftype"],
            Box::new(|b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"fifo");
                d.ftype = 8;
                put(b, off, &d.encode());
            }),
        ),
        (
            "duplicate name",
            &["dirent-dup-name", "inode-unreachable", "nlink-wrong"],
            Box::new(|b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"empty");
                d.name = b"hello.txt".to_vec();
                put(b, off, &d.encode());
            }),
        ),
        (
            "hard link to a directory",
            &["dir-multi-link", "inode-unreachable", "nlink-wrong"],
            Box::new(move |b| {
                let (off, _) = dirent_slot(b, ROOT_INO, b"fifo");
                let d = DirentRec {
                    parent: ROOT_INO,
                    child: dir,
                    ftype: 4,
                    name: b"fifo".to_vec(),
                };
                put(b, off, &d.encode());
            }),
        ),
        (
            "dirent parent is a file",
            &["dirent-bad-parent", "inode-unreachable", "nlink-wrong"],
            Box::new(move |b| {
                let (off, mut d) = dirent_slot(b, ROOT_INO, b"empty");
                d.parent = data;
                put(b, off, &d.encode());
            }),
        ),
        (
            "free inode with stale fields",
            &["inode-free-dirty"],
            Box::new(move |b| {
                // InodeRec::encode drops the fields of a free inode: write raw bytes.
                let o = sb.inode_offset(200) as usize;
                let mut slot = [0u8; INODE_SIZE];
                slot[12..16].copy_from_slice(&3u32.to_le_bytes());
                slot[76..80].copy_from_slice(&7u32.to_le_bytes());
                let c = format::crc(&slot[..INODE_SIZE - 4]);
                slot[INODE_SIZE - 4..].copy_from_slice(&c.to_le_bytes());
                b[o..o + INODE_SIZE].copy_from_slice(&slot);
            }),
        ),
        (
            "journal header checksum, committed transaction pending",
            &["journal-header"],
            Box::new(move |b| {
                let img = crash_after_commit(
                    b,
                    |fs| {
                        fs.mkdir(ROOT_INO, b"x", 0o755, C).unwrap();
                    },
                    false,
                );
                *b = img;
                b[(sb.journal_start * BS) as usize + 10] ^= 0x55;
            }),
        ),
    ];
    let orphan_cases: Vec<(&str, &[&str], Recipe)> = vec![
        (
            "orphan record for a linked inode",
            &["orphan-bad", "orphan-reclaim"],
            Box::new(move |b| {
                let free = all_slots(b, RecKind::Orphan)
                    .into_iter()
                    .find(|(_, s)| s.iter().all(|&x| x == 0))
                    .unwrap()
                    .0;
                put(b, free, &OrphanRec::Inode(hello).encode());
            }),
        ),
        (
            "unfinished truncate of a shared file",
            &["orphan-reclaim"],
            Box::new(move |b| {
                let free = all_slots(b, RecKind::Orphan)
                    .into_iter()
                    .find(|(_, s)| s.iter().all(|&x| x == 0))
                    .unwrap()
                    .0;
                put(
                    b,
                    free,
                    &OrphanRec::Truncate { ino: data, from: 1 }.encode(),
                );
            }),
        ),
        (
            "deferred free of a leaked block",
            &["orphan-reclaim"],
            Box::new(move |b| {
                let free = all_slots(b, RecKind::Orphan)
                    .into_iter()
                    .find(|(_, s)| s.iter().all(|&x| x == 0))
                    .unwrap()
                    .0;
                let last = sb.total_blocks - 1;
                put(b, free, &OrphanRec::Blocks { phys: last, len: 1 }.encode());
                let bit = last - sb.data_start;
                let off = (sb.bitmap_start * BS) as usize;
                b[off + (bit / 8) as usize] |= 1 << (bit % 8);
                let c = format::bitmap_crc(&b[off..off + BS as usize]);
                put(b, sb.bitmap_start * BS + 4088, &c.to_le_bytes());
            }),
        ),
    ];
    for (base, list) in [(&r, cases), (&orphaned, orphan_cases)] {
        for (name, codes, f) in list {
            let mut b = base.clone();
            f(&mut b);
            let m = mem(&b);
            let rep = fsck::check(&m, false);
            assert_eq!(rep.codes(), codes.to_vec(), "{name}: {rep:#?}");
            assert_eq!(rep.exit_code(), 4, "{name}");
            let rep = fsck::check(&m, true);
            assert_eq!(rep.exit_code(), 1, "{name}: {rep:#?}");
            let rep = fsck::check(&m, false);
            assert!(rep.is_clean(), "{name}: after -y: {rep:#?}");
            let fs = Fs::mount(m, FsOptions::default())
                .unwrap_or_else(|e| panic!("{name}: mount after -y: {e}"));
            // The untouched files are intact.
            let d = fs.lookup(ROOT_INO, b"data-clone.bin").unwrap();
            assert_eq!(fs.read(d.ino, 0, 14000).unwrap().len(), 14000, "{name}");
            fs.unmount().unwrap();
            assert!(fsck::check(&into_media(fs), false).is_clean(), "{name}");
        }
    }
}
