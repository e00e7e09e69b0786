//! Scale: what mkfs writes and mount reads does not grow with the device.
//! A 1 TiB sparse image costs a few hundred KiB; files past the first inode
//! chunk and data past the first bitmap block raise the roots block's marks;
//! a mark beyond the geometry is refused by mount and repaired by fsck.
//! Bytes are asserted, never times (the timings are in docs/BENCHMARKS.md).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use daxlink::format::{Roots, Superblock, BITS_PER_BITMAP_BLOCK, BS, INODE_CHUNK, ROOTS_SIZE};
use daxlink::fs::make::MkfsOptions;
use daxlink::tools::mkfs::mkfs_path;

/// A sparse image file, removed on drop.
struct Sparse(PathBuf);

impl Sparse {
    fn new(tag: &str, size: u64) -> Sparse {
        let p = PathBuf::from(format!(
            "/dev/shm/daxlink-test-{tag}-{}.img",
            std::process::id()
        ));
        let _ = fs::remove_file(&p);
        let o = MkfsOptions {
            sparse: true,
            ..Default::default()
        };
        mkfs_path(&p, Some(size), false, &o).expect("mkfs");
        Sparse(p)
    }
}

impl Drop for Sparse {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

fn sb_and_roots(p: &Path) -> (Superblock, Roots) {
    let len = fs::metadata(p).unwrap().len();
    let sb = Superblock::decode(&read_at(p, 0, BS), len).unwrap();
    let r = Roots::decode(&read_at(p, sb.roots_block * BS as u64, ROOTS_SIZE)).unwrap();
    (sb, r)
}

fn put_roots(p: &Path, sb: &Superblock, r: &Roots) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(&r.encode(), sb.roots_block * BS as u64)
        .unwrap();
}

fn statvfs(p: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st
}

#[test]
fn a_terabyte_image_costs_what_it_holds() {
    let img = Sparse::new("scale-1t", 1 << 40);
    let made = allocated(&img.0);
    assert!(made < (1 << 20), "mkfs of 1 TiB allocated {made} bytes");
    let (sb, r) = sb_and_roots(&img.0);
    assert_eq!((r.inode_init, r.bitmap_init), (INODE_CHUNK, 1));
    assert!(sb.inode_count >= 1 << 26 && sb.bitmap_blocks > 8000);

    // Files past the first inode chunk, and a file whose data goes past the
    // blocks the first bitmap block describes.
    let files = INODE_CHUNK + 100;
    let big = (BITS_PER_BITMAP_BLOCK + 2048) * BS as u64;
    {
        let m = Mounted::new(&img.0, "");
        let st = statvfs(m.root());
        assert_eq!(st.f_files, sb.inode_count);
        assert_eq!(st.f_ffree, sb.inode_count - 1);
        let d = m.path("d");
        fs::create_dir(&d).unwrap();
        for i in 0..files {
            fs::write(d.join(format!("f{i}")), format!("file {i}")).unwrap();
        }
        let chunk = vec![0x5a; 1 << 20];
        let mut f = fs::File::create(m.path("big")).unwrap();
        let mut left = big;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &chunk[..n]).unwrap();
            left -= n as u64;
        }
        drop(f);
        let st = statvfs(m.root());
        assert_eq!(st.f_files - st.f_ffree, files + 3);
        m.unmount();
    }
    let (_, r) = sb_and_roots(&img.0);
    assert_eq!(r.inode_init, 2 * INODE_CHUNK);
    assert_eq!(r.bitmap_init, 2);
    let used = allocated(&img.0);
    assert!(
        used < made + big + (8 << 20),
        "1 TiB image holding {big} bytes of data allocates {used} bytes"
    );
    fsck_clean(&img.0);
    // Everything is there after a remount.
    let m = Mounted::new(&img.0, "");
    for i in [0, INODE_CHUNK - 1, INODE_CHUNK, files - 1] {
        let s = fs::read_to_string(m.path(&format!("d/f{i}"))).unwrap();
        assert_eq!(s, format!("file {i}"));
    }
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), big);
    fs::write(m.path("one-more"), b"x").unwrap();
    m.unmount();
    fsck_clean(&img.0);
}

fn fsck(args: &[&str], p: &Path) -> (i32, String) {
    let out = Command::new(FSCK).args(args).arg(p).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_mark_beyond_the_geometry_is_refused_and_repaired() {
    let img = Image::new("scale-mark", 64 << 20);
    let (sb, good) = sb_and_roots(&img.path);
    for (bad, what) in [
        (
            Roots {
                inode_init: sb.inode_count + INODE_CHUNK,
                ..good.clone()
            },
            "inode-table mark",
        ),
        (
            Roots {
                bitmap_init: sb.bitmap_blocks + 1,
                ..good.clone()
            },
            "bitmap mark",
        ),
    ] {
        put_roots(&img.path, &sb, &bad);
        let e = Mounted::try_new(&img.path, "").err().expect("mounted");
        assert!(e.contains(what), "{e}");
        let (code, out) = fsck(&["-n"], &img.path);
        assert_eq!(code, 4, "{out}");
        assert!(out.contains("roots-mark") && out.contains(what), "{out}");
        let (code, out) = fsck(&["-y"], &img.path);
        assert_eq!(code, 1, "{out}");
        fsck_clean(&img.path);
        let (_, r) = sb_and_roots(&img.path);
        assert!(r.check_marks(&sb).is_ok());
        let m = Mounted::new(&img.path, "");
        fs::write(m.path("f"), b"ok").unwrap();
        fs::remove_file(m.path("f")).unwrap();
        m.unmount();
        put_roots(&img.path, &sb, &good);
    }
}

#[test]
fn fsck_raises_the_bitmap_mark_over_blocks_in_use() {
    let img = Image::new("scale-bitmap-mark", 192 << 20);
    let big = (BITS_PER_BITMAP_BLOCK + 100) * BS as u64;
    {
        let m = Mounted::new(&img.path, "");
        fs::write(m.path("big"), vec![0x33; big as usize]).unwrap();
        m.unmount();
    }
    let (sb, r) = sb_and_roots(&img.path);
    assert_eq!(r.bitmap_init, 2);
    // A mark that leaves blocks of /big uninitialized: they read as free.
    put_roots(
        &img.path,
        &sb,
        &Roots {
            bitmap_init: 1,
            ..r.clone()
        },
    );
    let (code, out) = fsck(&["-n"], &img.path);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("bitmap-mark") && out.contains("block-unmarked"),
        "{out}"
    );
    let (code, out) = fsck(&["-y"], &img.path);
    assert_eq!(code, 1, "{out}");
    fsck_clean(&img.path);
    assert_eq!(sb_and_roots(&img.path).1, r);
    let m = Mounted::new(&img.path, "");
    assert_eq!(fs::read(m.path("big")).unwrap().len() as u64, big);
    m.unmount();
}
