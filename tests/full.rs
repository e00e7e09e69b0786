//! A full filesystem: eight writers fill it with small files until nothing
//! more fits, then everything is deleted. Every unlink and rmdir must work
//! (a reserve of blocks is kept for operations that free space), and all
//! the space must come back, record blocks included.

mod common;

use std::fs;
use std::io::Write;

use common::*;

fn avail(p: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail
}

#[test]
fn eight_writers_fill_it_then_everything_can_be_deleted() {
    let img = Image::new("full", 24 << 20);
    let m = Mounted::new(&img.path, "");
    let before = avail(m.root());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = m.path(&format!("w{t}"));
            std::thread::spawn(move || {
                fs::create_dir(&dir).unwrap();
                let mut n = 0u32;
                loop {
                    let r = fs::File::create(dir.join(format!("f{n}")))
                        .and_then(|mut f| f.write_all(&[t as u8; 20000]));
                    match r {
                        Ok(()) => n += 1,
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return n,
                        Err(e) => panic!("writer {t}: {e}"),
                    }
                }
            })
        })
        .collect();
    let written: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(written > 400, "only {written} files fit");
    // The writers stop when a whole 20 KB file no longer fits; fill what is
    // left a block at a time, so that nothing ordinary fits any more.
    // (Creating the filler may itself find no room: then it is full already.)
    if let Ok(mut filler) = fs::File::create(m.path("filler")) {
        while filler.write_all(&[0xF1; 4096]).is_ok() {}
    }
    assert!(
        avail(m.root()) <= 2,
        "{} blocks still available: the filesystem is not full",
        avail(m.root())
    );
    match fs::remove_file(m.path("filler")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("rm filler on a full filesystem: {e}"),
    }
    for t in 0..8 {
        fs::remove_dir_all(m.path(&format!("w{t}")))
            .unwrap_or_else(|e| panic!("rm -rf w{t} on a full filesystem: {e}"));
    }
    // Every block is free again, right away: the record blocks that held
    // the files' entries and extents went back to free space in the
    // transactions that emptied them (only the fixed metadata stays used).
    assert_eq!(avail(m.root()), before, "blocks available after rm -rf");
    let m = m.cycle("");
    assert_eq!(avail(m.root()), before, "blocks available after a remount");
    let image = m.image.clone();
    m.unmount();
    fsck_clean(&image);
}
