//! Linux interfaces that tools rely on, compared with tmpfs: file handles
//! (name_to_handle_at / open_by_handle_at, also across a remount), and open
//! directories that lose their name.

mod common;

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// A file handle as name_to_handle_at fills it (struct file_handle).
#[repr(C)]
#[derive(Clone, Copy)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; 128],
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn handle_of(p: &Path) -> std::io::Result<Handle> {
    let mut h = Handle {
        bytes: 128,
        kind: 0,
        data: [0; 128],
    };
    let mut mount_id = 0;
    let c = cstr(p);
    // SAFETY: `h` is a file_handle header followed by 128 bytes of room, as
    // handle_bytes says; `c` is a valid C string; `mount_id` is writable.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            &mut h as *mut Handle as *mut libc::file_handle,
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(h)
}

fn open_handle(mount: &Path, h: &Handle) -> std::io::Result<File> {
    let m = File::open(mount)?;
    let mut h = *h;
    // SAFETY: `m` is an open descriptor; `h` is a handle filled by
    // name_to_handle_at, with its size in the header.
    let fd = unsafe {
        libc::open_by_handle_at(
            m.as_raw_fd(),
            &mut h as *mut Handle as *mut libc::file_handle,
            libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

/// What a handle does on one filesystem: read back, after the caches are
/// dropped, after unlink, after the number may be reused.
fn handle_story(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fs::write(root.join("f"), b"handle data").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    let hf = handle_of(&root.join("f")).unwrap();
    let hd = handle_of(&root.join("d")).unwrap();
    let read = |h: &Handle| match open_handle(root, h) {
        Ok(mut f) => {
            let mut s = String::new();
            match f.read_to_string(&mut s) {
                Ok(_) => format!("ok {s}"),
                Err(e) => format!("open ok, read errno {}", e.raw_os_error().unwrap_or(-1)),
            }
        }
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    };
    out.push(format!("file: {}", read(&hf)));
    out.push(format!("dir: {}", read(&hd)));
    drop_caches();
    out.push(format!("file after drop_caches: {}", read(&hf)));
    out.push(format!("dir after drop_caches: {}", read(&hd)));
    fs::remove_file(root.join("f")).unwrap();
    fs::remove_dir(root.join("d")).unwrap();
    // The opens by handle above were closed, but on FUSE the kernel sends
    // RELEASE/RELEASEDIR asynchronously and holds the inode until the daemon
    // answers, so drop_caches cannot drop it yet and a handle still opens
    // it from the kernel's cache. The gone state may take a moment; bounded
    // at 10 s.
    let gone = |h: &Handle| {
        let t0 = std::time::Instant::now();
        loop {
            drop_caches();
            let r = read(h);
            if r.starts_with("errno") || t0.elapsed() > std::time::Duration::from_secs(10) {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    out.push(format!("file after unlink: {}", gone(&hf)));
    out.push(format!("dir after rmdir: {}", gone(&hd)));
    for i in 0..4 {
        fs::write(root.join(format!("new{i}")), b"other").unwrap();
    }
    drop_caches();
    out.push(format!("file after reuse: {}", read(&hf)));
    out
}

#[test]
fn file_handles_behave_as_on_tmpfs_and_survive_remount() {
    let img = Image::new("handles", 32 << 20);
    let m = Mounted::new(&img.path, "");
    let t = Tmpfs::new();
    let a = handle_story(m.root());
    let b = handle_story(t.root());
    assert_eq!(a, b);
    assert_eq!(a[0], "file: ok handle data", "{a:?}");
    assert_eq!(a[4], format!("file after unlink: errno {}", libc::ESTALE));
    // Across an unmount and a mount elsewhere: the same file, the same bytes.
    fs::write(m.path("kept"), b"kept across remount").unwrap();
    fs::create_dir(m.path("kd")).unwrap();
    let hk = handle_of(&m.path("kept")).unwrap();
    let hkd = handle_of(&m.path("kd")).unwrap();
    let m = m.cycle("");
    let mut s = String::new();
    open_handle(m.root(), &hk)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "kept across remount");
    assert!(open_handle(m.root(), &hkd)
        .unwrap()
        .metadata()
        .unwrap()
        .is_dir());
    // Gone for good: stale, also after another remount.
    fs::remove_file(m.path("kept")).unwrap();
    let m = m.cycle("");
    assert_eq!(errno_of(open_handle(m.root(), &hk)), libc::ESTALE);
    m.cycle("");
}

/// Keep `a` open, then replace it by renaming `b` over it (or rmdir it).
fn open_dir_story(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (i, how) in ["rename", "rmdir"].iter().enumerate() {
        let a = root.join(format!("a{i}"));
        let b = root.join(format!("b{i}"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let fd = File::open(&a).unwrap();
        if *how == "rename" {
            fs::rename(&b, &a).unwrap();
        } else {
            fs::remove_dir(&a).unwrap();
        }
        drop_caches();
        let md = fd.metadata();
        out.push(format!(
            "{how}: fstat {}",
            match &md {
                Ok(m) => {
                    use std::os::unix::fs::MetadataExt;
                    format!("ok nlink {} dir {}", m.nlink(), m.is_dir())
                }
                Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
            }
        ));
        // Reading the removed directory: nothing in it.
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is writable for its length; `fd` is open.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        out.push(format!(
            "{how}: getdents {}",
            if n < 0 { -1 } else { (n > 0) as i64 }
        ));
        // Creating in it fails.
        let c = cstr(Path::new("x"));
        // SAFETY: valid descriptor and C string.
        let r = unsafe {
            libc::openat(
                fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )
        };
        out.push(format!(
            "{how}: create inside {}",
            if r < 0 {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
            } else {
                0
            }
        ));
        drop(fd);
    }
    out
}

#[test]
fn an_open_directory_outlives_its_name_as_on_tmpfs() {
    let img = Image::new("opendir", 32 << 20);
    let m = Mounted::new(&img.path, "");
    let t = Tmpfs::new();
    let free0 = free_inodes(m.root());
    let a = open_dir_story(m.root());
    let b = open_dir_story(t.root());
    assert_eq!(a, b);
    assert!(a[0].starts_with("rename: fstat ok"), "{a:?}");
    // The removed directories' inodes are free again after the last close
    // (two "b" directories remain: one renamed over "a0", and "b1"). The
    // kernel sends RELEASEDIR after close returns: wait for it a little.
    let t0 = std::time::Instant::now();
    while free_inodes(m.root()) != free0 - 2 && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(free_inodes(m.root()), free0 - 2);
    let m = m.cycle("");
    assert_eq!(free_inodes(m.root()), free0 - 2);
    m.cycle("");
}

fn free_inodes(p: &Path) -> u64 {
    let c = cstr(p);
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_ffree
}

/// chattr / lsattr / xfs_io chattr, and what each flag forbids, as one
/// shell script; every line prints the command, its status and its output.
const FLAG_SCRIPT: &str = r#"
r() { out=$("$@" 2>&1); echo "[$*] rc=$? $(echo "$out" | sed "s|$PWD|B|g" | tr '\n' ' ')"; }
echo data > i; echo data > a; echo data > n; mkdir di da
r chattr +i i; r chattr +a a; r chattr +dA n; r chattr +i di; r chattr +a da
r lsattr -d i a n di da
r sh -c 'echo x >> i'; r sh -c 'echo x > i'; r sh -c 'echo x >> a'; r sh -c 'echo x > a'; r cat a
r truncate -s 0 i; r truncate -s 0 a; r chmod 600 i; r chmod 600 a; r touch i; r touch a; r touch -d @5 a; r chown 1000 a
r rm -f i; r rm -f a; r mv i i2; r mv a a2; r ln i il; r ln a al; r setfattr -n user.x -v 1 i; r setfattr -n user.x -v 1 a
r touch di/new; r touch da/new; r rm da/new; r mv da/new da/new2; r mkdir di/sub
r fallocate -l 8192 a; r fallocate -p -o 0 -l 4096 a; r fallocate -l 8192 i
r setpriv --reuid=1000 --regid=1000 --clear-groups chattr +i n; r setpriv --reuid=1000 --regid=1000 --clear-groups chattr -d n
r chattr -i i; r chattr -a a; r chattr -i di; r chattr -a da; r lsattr -d i a n
r chattr +c n; r chattr +e n
r xfs_io -c "lsattr" n; r xfs_io -c "chattr +i" n; r xfs_io -c "lsattr" n; r xfs_io -c "chattr -i" n
r rm -rf i a n di da a2 i2
"#;

fn flag_story(root: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} || exit 9\n{FLAG_SCRIPT}", root.display()))
        .output()
        .expect("sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn inode_flags_are_kept_and_enforced_as_on_tmpfs() {
    for tool in ["chattr", "lsattr", "xfs_io", "setfattr", "fallocate"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{tool} must be installed (scripts/test.sh installs it)");
    }
    let img = Image::new("flags", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    let t = Tmpfs::new();
    let a = flag_story(m.root());
    let b = flag_story(t.root());
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let diff: Vec<String> = al
        .iter()
        .zip(&bl)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("daxlink: {x}\ntmpfs:   {y}"))
        .collect();
    assert_eq!(al.len(), bl.len());
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    assert!(a.contains("----i----------------- i"), "{a}");
    // Flags persist across a remount and still bind.
    fs::write(m.path("keep"), b"k").unwrap();
    let st = Command::new("chattr")
        .args(["+i"])
        .arg(m.path("keep"))
        .status()
        .unwrap();
    assert!(st.success());
    let m = m.cycle("allow_other");
    let out = Command::new("lsattr").arg(m.path("keep")).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("----i"),
        "{out:?}"
    );
    assert_eq!(errno_of(fs::remove_file(m.path("keep"))), libc::EPERM);
    assert_eq!(
        errno_of(fs::OpenOptions::new().append(true).open(m.path("keep"))),
        libc::EPERM
    );
    let st = Command::new("chattr")
        .args(["-i"])
        .arg(m.path("keep"))
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_file(m.path("keep")).unwrap();
    m.cycle("");
}

/// The access time, asked of the filesystem itself (not the kernel's
/// attribute cache), in nanoseconds.
fn atime_of(p: &Path) -> i128 {
    let c = cstr(p);
    // SAFETY: zeroed statx is a valid out-parameter; `c` is a C string.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_ATIME,
            &mut st,
        )
    };
    assert_eq!(r, 0);
    st.stx_atime.tv_sec as i128 * 1_000_000_000 + st.stx_atime.tv_nsec as i128
}

fn set_atime(p: &Path, t: i64) {
    let ok = Command::new("touch")
        .args(["-a", "-d", &format!("@{t}")])
        .arg(p)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn read_all(p: &Path) {
    let mut s = Vec::new();
    File::open(p).unwrap().read_to_end(&mut s).unwrap();
}

/// What reads do to access times on one mount: "updated" or "kept" per step.
fn atime_story(root: &Path, strict: bool) -> Vec<String> {
    let f = root.join("f");
    let d = root.join("d");
    fs::write(&f, b"atime").unwrap();
    fs::create_dir(&d).unwrap();
    let mut out = Vec::new();
    let mut step = |what: &str, p: &Path, act: &dyn Fn()| {
        let before = atime_of(p);
        std::thread::sleep(std::time::Duration::from_millis(20));
        act();
        let after = atime_of(p);
        out.push(format!(
            "{what}: {}",
            if after > before { "updated" } else { "kept" }
        ));
    };
    set_atime(&f, 1000);
    step("read of an old atime", &f, &|| read_all(&f));
    step("read again", &f, &|| read_all(&f));
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    step("read after a write", &f, &|| read_all(&f));
    set_atime(&d, 1000);
    step("listing of an old atime", &d, &|| {
        fs::read_dir(&d).unwrap().for_each(drop);
    });
    if !strict {
        let ok = Command::new("chattr")
            .arg("+A")
            .arg(&f)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        set_atime(&f, 1000);
        step("read with chattr +A", &f, &|| read_all(&f));
        let ok = Command::new("chattr")
            .arg("-A")
            .arg(&f)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    out
}

use std::io::Write;

#[test]
fn access_times_follow_relatime_strictatime_noatime_as_on_tmpfs() {
    for (opt, strict) in [
        ("relatime", false),
        ("noatime", false),
        ("strictatime", true),
    ] {
        let img = Image::new("atime", 32 << 20);
        let m = Mounted::new(&img.path, opt);
        let t = Tmpfs::with(opt);
        let a = atime_story(m.root(), strict);
        let b = atime_story(t.root(), strict);
        assert_eq!(a, b, "-o {opt}: daxlink, tmpfs");
        if opt == "relatime" {
            assert_eq!(a[0], "read of an old atime: updated");
            // The DRAM atime reaches the media at unmount.
            set_atime(&m.path("f"), 1000);
            read_all(&m.path("f"));
            let seen = atime_of(&m.path("f"));
            assert!(seen > 1000 * 1_000_000_000);
            let m = m.cycle(opt);
            assert_eq!(atime_of(&m.path("f")), seen);
            m.cycle("");
        }
    }
}

/// renameat2(RENAME_WHITEOUT), then what the old and new names are.
fn whiteout_story(root: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fs::write(root.join("w"), b"moved").unwrap();
    let (a, b) = (cstr(&root.join("w")), cstr(&root.join("w2")));
    // SAFETY: valid C strings, AT_FDCWD.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_WHITEOUT,
        )
    };
    let mut out = vec![format!(
        "renameat2: {}",
        if r == 0 {
            0
        } else {
            errno_of::<()>(Err(std::io::Error::last_os_error()))
        }
    )];
    let md = fs::symlink_metadata(root.join("w")).unwrap();
    out.push(format!(
        "old name: chardev {} mode {:o} rdev {} uid {} nlink {}",
        md.file_type().is_char_device(),
        md.mode() & 0o7777,
        md.rdev(),
        md.uid(),
        md.nlink()
    ));
    out.push(format!(
        "new name: {}",
        String::from_utf8_lossy(&fs::read(root.join("w2")).unwrap())
    ));
    // Not with RENAME_EXCHANGE.
    // SAFETY: as above.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE,
        )
    };
    out.push(format!(
        "whiteout|exchange: {}",
        if r == 0 {
            0
        } else {
            errno_of::<()>(Err(std::io::Error::last_os_error()))
        }
    ));
    out
}

/// An overlay with `upper` as its upper layer: delete, modify, rename.
fn overlay_story(lower: &Path, upper: &Path) -> Vec<String> {
    let ov = tempfile::Builder::new().prefix("ovl").tempdir().unwrap();
    fs::create_dir(upper.join("up")).unwrap();
    fs::create_dir(upper.join("work")).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.join("up").display(),
        upper.join("work").display()
    );
    let ok = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(ov.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "overlay mount with upper {}", upper.display());
    let o = ov.path();
    fs::remove_file(o.join("a")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(o.join("b"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    fs::rename(o.join("b"), o.join("c")).unwrap();
    fs::remove_dir_all(o.join("dir")).unwrap();
    let mut names: Vec<String> = fs::read_dir(o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let out = vec![
        format!("visible: {names:?}"),
        format!(
            "c: {}",
            String::from_utf8_lossy(&fs::read(o.join("c")).unwrap())
        ),
    ];
    assert!(umount_retrying(o), "umount {}: busy for 10 s", o.display());
    out
}

#[test]
fn whiteouts_and_overlayfs_upper_layer_as_on_tmpfs() {
    let img = Image::new("whiteout", 32 << 20);
    let m = Mounted::new(&img.path, "");
    let t = Tmpfs::new();
    assert_eq!(whiteout_story(m.root()), whiteout_story(t.root()));
    let lower = Tmpfs::new();
    fs::write(lower.root().join("a"), b"a").unwrap();
    fs::write(lower.root().join("b"), b"b").unwrap();
    fs::create_dir(lower.root().join("dir")).unwrap();
    fs::write(lower.root().join("dir/x"), b"x").unwrap();
    let a = overlay_story(lower.root(), m.root());
    let b = overlay_story(lower.root(), t.root());
    assert_eq!(a, b);
    assert_eq!(a[0], "visible: [\"c\"]");
    m.cycle("");
}

#[test]
fn interfaces_the_kernel_does_not_forward_fail_with_eopnotsupp() {
    let img = Image::new("unsup", 32 << 20);
    let m = Mounted::new(&img.path, "");
    fs::write(m.path("f"), vec![0u8; 65536]).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    for mode in [libc::FALLOC_FL_COLLAPSE_RANGE, libc::FALLOC_FL_INSERT_RANGE] {
        // SAFETY: an open descriptor and plain integers.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, 0, 4096) };
        assert_eq!(r, -1);
        assert_eq!(
            errno_of::<()>(Err(std::io::Error::last_os_error())),
            libc::EOPNOTSUPP
        );
    }
    let c = cstr(m.root());
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    assert_eq!(fd, -1);
    assert_eq!(
        errno_of::<()>(Err(std::io::Error::last_os_error())),
        libc::EOPNOTSUPP
    );
    let o = Command::new("xfs_io")
        .args(["-c", "fiemap"])
        .arg(m.path("f"))
        .output()
        .expect("xfs_io (xfsprogs) must be installed");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not supported"),
        "{o:?}"
    );
    drop(f);
    m.cycle("");
}

#[test]
fn daxlink_commands_name_a_path_that_is_not_on_daxlink() {
    let f = tempfile::NamedTempFile::new().unwrap();
    for cmd in ["extents", "stat"] {
        let o = Command::new(DAXLINK)
            .arg(cmd)
            .arg(f.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "{}: not on a daxlink filesystem",
                f.path().display()
            )),
            "{err}"
        );
    }
}

#[test]
fn every_argument_and_option_in_help_has_a_description() {
    let subs = [
        "mount",
        "remount",
        "reflink",
        "dedupe",
        "unshare",
        "extents",
        "pin",
        "owners",
        "poison",
        "demo",
        "stat",
        "crashtest",
    ];
    let mut bare = Vec::new();
    for sub in subs {
        let text = daxlink(&[&sub, &"--help"]).stdout;
        let mut in_list = false;
        for line in text.lines() {
            if line == "Arguments:" || line == "Options:" {
                in_list = true;
                continue;
            }
            if !line.starts_with("  ") {
                in_list = false;
                continue;
            }
            let item = line.trim_start();
            if in_list && (item.starts_with('<') || item.starts_with('-')) {
                // "NAME  description": a name, two spaces, words.
                let described = item
                    .split_once("  ")
                    .is_some_and(|(_, d)| !d.trim().is_empty());
                if !described {
                    bare.push(format!("daxlink {sub}: {item}"));
                }
            }
        }
    }
    assert!(
        bare.is_empty(),
        "without a description:\n{}",
        bare.join("\n")
    );
}

/// FITRIM (fstrim MOUNTPOINT) reaches the daemon and is served as ext4
/// serves it: the bytes "trimmed" (the free space considered; daxlink
/// discards nothing, docs/USAGE.md) come back in the range, a minlen larger than
/// the filesystem is EINVAL, and another user gets EPERM.
#[test]
fn fstrim_reports_the_free_space() {
    let img = Image::new("fitrim", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::write(m.path("f"), pattern(3, 5 << 20)).unwrap();
    let trimmed = |args: &[&str]| {
        let mut c = Command::new("fstrim");
        c.args(args).arg("-v").arg(m.root());
        run_deadline(c, 30)
    };
    let o = trimmed(&[]);
    assert_eq!(o.rc, 0, "fstrim (is util-linux installed?): {o:?}");
    // "DIR: 52 MiB (54501376 bytes) trimmed"
    let bytes: u64 = o
        .stdout
        .split('(')
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{o:?}"));
    let st = nix::sys::statvfs::statvfs(m.root()).unwrap();
    assert_eq!(bytes, st.blocks_free() as u64 * st.fragment_size() as u64);
    assert!(bytes > 0 && bytes < 60 << 20, "{bytes}");
    let o = trimmed(&["--minimum", "1G"]);
    assert_eq!(o.rc, 1, "{o:?}");
    assert!(o.stderr.contains("Invalid argument"), "{o:?}");
    let dir = m.root().display().to_string();
    let (rc, err) = run_as(65534, 65534, &format!("fstrim {dir}"));
    assert_ne!(rc, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    m.unmount();
}

/// The label mkfs -L set, through FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL
/// (`xfs_io -c label`): read by anyone, set by root only (EPERM for
/// another user), kept in the superblock across a remount; longer than the
/// superblock's 64 bytes is EINVAL.
#[test]
fn fs_label_round_trip_and_privilege() {
    let img = Image::new("fslabel", 32 << 20);
    let mut m = Mounted::new(&img.path, "allow_other");
    let xfs_io = |cmd: &str, dir: &Path| {
        let mut c = Command::new("xfs_io");
        c.arg("-c").arg(cmd).arg(dir);
        run_deadline(c, 30)
    };
    let o = xfs_io("label", m.root());
    assert_eq!(o.rc, 0, "xfs_io (is xfsprogs installed?): {o:?}");
    assert_eq!(o.stdout.trim(), "label = \"\"", "{o:?}");
    let o = xfs_io("label -s pm-data", m.root());
    assert_eq!(o.stdout.trim(), "label = \"pm-data\"", "{o:?}");
    let long = "x".repeat(65);
    let o = xfs_io(&format!("label -s {long}"), m.root());
    assert!(o.stderr.contains("Invalid argument"), "{o:?}");
    let dir = m.root().display().to_string();
    let (_, err) = run_as(65534, 65534, &format!("xfs_io -c 'label -s theirs' {dir}"));
    assert!(err.contains("Operation not permitted"), "{err}");
    let (rc, _) = run_as(
        65534,
        65534,
        &format!("xfs_io -c label {dir} | grep -qx 'label = \"pm-data\"'"),
    );
    assert_eq!(rc, 0, "another user cannot read the label");
    m = m.cycle("allow_other");
    let o = xfs_io("label", m.root());
    assert_eq!(o.stdout.trim(), "label = \"pm-data\"", "{o:?}");
    m.unmount();
    fsck_clean(&img.path);
}
