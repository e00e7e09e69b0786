//! The images of images/ and what fsck and mount must say about them: the
//! cases, the reference image and the recipe of each corrupted one.

use super::*;

// ---------------------------------------------------------------------------
// The images and what fsck and mount must say about them
// ---------------------------------------------------------------------------

pub(crate) struct Case {
    pub(crate) file: &'static str,
    pub(crate) corruption: &'static str,
    /// Finding codes of `fsck -n` (sorted, distinct).
    pub(crate) codes: &'static [&'static str],
    /// A note `fsck -n` prints (informational), if any.
    pub(crate) note: Option<&'static str>,
    pub(crate) exit_n: i32,
    pub(crate) exit_y: i32,
    /// None: mount succeeds; Some(s): mount fails with Corrupt containing s.
    pub(crate) mount_err: Option<&'static str>,
}

pub(crate) const CASES: &[Case] = &[
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
    Case {
        file: "extent-dir-owner.img.gz",
        corruption: "the extent record of /dir/nested.txt given to the directory /dir, which holds no data (the file's block leaks)",
        codes: &["extent-bad-owner"],
        note: None,
        exit_n: 4,
        exit_y: 1,
        mount_err: Some("belongs to an inode of type 0o40000 that has no data"),
    },
];

// ---------------------------------------------------------------------------
// Image generation
// ---------------------------------------------------------------------------

pub(crate) fn reference() -> Vec<u8> {
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
pub(crate) fn crash_after_commit(base: &[u8], op: impl FnOnce(&Fs), torn: bool) -> Vec<u8> {
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

pub(crate) fn make_image(file: &str, r: &[u8]) -> Vec<u8> {
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
        "extent-dir-owner.img.gz" => {
            let dir = lookup(r, &["dir"]);
            let nested = lookup(r, &["dir", "nested.txt"]);
            let (off, mut x) = extent_of(r, nested);
            x.ino = dir;
            put(&mut b, off, &x.encode());
        }
        other => panic!("no recipe for {other}"),
    }
    b
}

pub(crate) fn mount_text(bytes: &[u8]) -> String {
    match mount_bytes(bytes) {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("Err: {e}"),
    }
}

#[test]
#[ignore]
pub(crate) fn regenerate_images() {
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
Small (2 MiB, 512-block) daxlink format v2 images, gzip-compressed, for `tests/fsck/` (`images.rs`).\n\
Each is made from `v2-reference.img.gz` by `tests/fsck/images.rs` (`make_image`). Make the images of new cases\n\
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
Columns: finding codes of `fsck-daxlink -n` (see `daxlink::tools::fsck::CODES`), exit status of\n\
`fsck-daxlink -n` and of `fsck-daxlink -y` on a fresh copy, what `Fs::mount` says about the image\n\
as it is, and after `-y`. After `-y`, `-n` exits 0 on every image (with both superblock copies\n\
bad, fsck recovers the geometry: `src/tools/fsck/geometry.rs`), except where `-n` and `-y` both refuse\n\
(exit 8) and `-y` writes nothing: unknown read-only-compatible features in the superblock copy mount\n\
trusts, which fsck, as e2fsck, neither checks nor repairs, and mount mounts only read-only (`-o ro`).\n\
A torn transaction is informational (a note, exit 0): it is the normal trace of a crash\n\
during a commit; `-y` clears it.\n\n\
| image | corruption | `-n` finds | `-n` exit | `-y` exit | mount before | mount after `-y` |\n\
|---|---|---|---|---|---|---|\n{table}"
    );
    std::fs::write(dir.join("README.md"), readme).unwrap();
}
