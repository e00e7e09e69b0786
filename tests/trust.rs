//! Trust: daxlink behaves as tmpfs does for every user, and no request by an
//! unprivileged user can hang an inode, destroy or copy other users' data.
//!
//! Each test mounts for real with `allow_other` and acts as other users
//! through setpriv (uid, gid, supplementary groups). Every command runs under
//! a deadline: a hang fails the test (and the mount guard then kills the
//! daemon, which frees the stuck caller).

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use daxlink::fuse::ioctl::{self, RemapArgs};

const BS: u64 = 4096;

/// Run `script` with sh as uid:gid with supplementary `groups`, failing the
/// test if it does not finish within `secs`.
fn sh_as(uid: u32, gid: u32, groups: &[u32], script: &str, secs: u64) -> Out {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        cmd.arg(format!("--groups={}", g.join(",")));
    }
    cmd.args(["sh", "-c", script]);
    run_deadline(cmd, secs)
}

/// `script` as user and group nobody, no supplementary groups, 20 s at most.
fn nobody(script: &str) -> Out {
    sh_as(65534, 65534, &[], script, 20)
}

/// stat() from this process, with a deadline: the inode still answers.
fn responsive(p: &Path) {
    let out = run_deadline(
        {
            let mut c = Command::new("stat");
            c.arg(p);
            c
        },
        10,
    );
    assert_eq!(out.rc, 0, "{out:?}");
}

fn root_sh(script: &str) -> Out {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    run_deadline(c, 300)
}

#[test]
fn touch_by_a_non_owner_who_may_write_never_hangs() {
    let img = Image::new("touch", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    for n in ["a", "b"] {
        fs::write(m.path(n), b"root's").unwrap();
        fs::set_permissions(m.path(n), fs::Permissions::from_mode(0o666)).unwrap();
        // Back-date it, so that touch visibly sets "now".
        let c = std::ffi::CString::new(m.path(n).to_str().unwrap()).unwrap();
        let t = [libc::timespec {
            tv_sec: 1000,
            tv_nsec: 0,
        }; 2];
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) },
            0
        );
    }
    let root = m.root().display().to_string();
    // Two at once used to take both worker threads: the whole mount hung.
    let a = {
        let r = root.clone();
        std::thread::spawn(move || sh_as(1000, 1000, &[], &format!("touch {r}/a"), 20))
    };
    let b = sh_as(1001, 1001, &[], &format!("touch {root}/b"), 20);
    let a = a.join().unwrap();
    assert_eq!((a.rc, b.rc), (0, 0), "{a:?} {b:?}");
    for n in ["a", "b"] {
        responsive(&m.path(n));
        assert!(fs::metadata(m.path(n)).unwrap().mtime() > 1_000_000_000);
    }
    // Explicit times need ownership: EPERM, as on tmpfs; nothing hangs.
    let o = sh_as(1000, 1000, &[], &format!("touch -d @5 {root}/a"), 20);
    assert_ne!(o.rc, 0);
    assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
    responsive(&m.path("a"));
    fs::write(m.path("a"), b"still writable").unwrap();
    m.cycle("");
}

#[test]
fn chgrp_to_a_supplementary_group() {
    let img = Image::new("chgrp", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let root = m.root().display().to_string();
    let o = sh_as(
        1000,
        1000,
        &[65533, 65534],
        &format!("echo x > {root}/mine && chgrp 65533 {root}/mine && chown :65534 {root}/mine"),
        20,
    );
    assert_eq!(o.rc, 0, "{o:?}");
    assert_eq!(fs::metadata(m.path("mine")).unwrap().gid(), 65534);
    // Not a member: EPERM.
    let o = sh_as(1000, 1000, &[65533], &format!("chgrp 4242 {root}/mine"), 20);
    assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
    assert_eq!(fs::metadata(m.path("mine")).unwrap().gid(), 65534);
    m.cycle("");
}

#[test]
fn poison_is_root_only_and_owners_hides_unreachable_paths() {
    let img = Image::new("poison", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let data = pattern(3, 2 * BS as usize);
    fs::write(m.path("f"), &data).unwrap();
    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.path("secret")).unwrap();
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    daxlink::tools::client::reflink(&m.path("f"), &m.path("secret/hidden-name"), 0, 0, 0).unwrap();
    let root = m.root().display().to_string();
    let o = nobody(&format!("{DAXLINK} poison {root}/f --offset 0"));
    assert_ne!(o.rc, 0);
    assert!(o.stderr.contains("Operation not permitted"), "{o:?}");
    assert_eq!(
        fs::read(m.path("f")).unwrap(),
        data,
        "poison as nobody changed data"
    );
    // owners: the caller sees /f; of the file inside /secret, which it
    // could not open, not even the inode number (only that one is hidden).
    let o = nobody(&format!("{DAXLINK} owners {root}/f --offset 0 --json"));
    assert_eq!(o.rc, 0, "{o:?}");
    assert!(o.stdout.contains("\"/f\""), "{o:?}");
    assert!(!o.stdout.contains("hidden-name"), "{o:?}");
    assert_eq!(o.stdout.matches("\"inode\"").count(), 1, "{o:?}");
    assert!(o.stdout.contains("\"hidden_owners\":1"), "{o:?}");
    // A member of a group granted search by ACL sees it; root sees all.
    let acl = Command::new("setfacl")
        .args(["-m", "g:4242:x"])
        .arg(m.path("secret"))
        .status()
        .expect("setfacl (package acl) must be installed");
    assert!(acl.success());
    let o = sh_as(
        65534,
        65534,
        &[4242],
        &format!("{DAXLINK} owners {root}/f --offset 0 --json"),
        20,
    );
    assert!(o.stdout.contains("/secret/hidden-name"), "{o:?}");
    let r = daxlink::tools::client::owners(&m.path("f"), 0).unwrap();
    assert!(r.to_string().contains("/secret/hidden-name"), "{r}");
    // Root may poison: every owner's read fails.
    let o = root_sh(&format!("{DAXLINK} poison {root}/f --offset 0"));
    assert_eq!(o.rc, 0, "{o:?}");
    assert_eq!(errno_of(fs::read(m.path("f"))), libc::EIO);
    assert_eq!(errno_of(fs::read(m.path("secret/hidden-name"))), libc::EIO);
}

/// The raw clone / dedupe ioctl, run in a child process as another user:
/// this test binary re-executed with DAXLINK_TRUST_HELPER set. Not a test
/// of its own: ignored in a normal run (so it never counts as passing), run
/// by `raw_remap_as` with `--ignored --exact`.
#[test]
#[ignore = "re-exec helper, run by raw_remap_as"]
fn helper_raw_remap() {
    let spec = std::env::var("DAXLINK_TRUST_HELPER")
        .expect("helper_raw_remap runs only as raw_remap_as's child (DAXLINK_TRUST_HELPER)");
    // "clone|dedupe DST SRCFD"
    let v: Vec<&str> = spec.split(' ').collect();
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(v[1])
        .unwrap();
    let src_fd: u64 = v[2].parse().unwrap();
    let (cmd, size) = if v[0] == "clone" {
        (ioctl::Cmd::CLONE, ioctl::CLONE_SIZE)
    } else {
        (ioctl::Cmd::DEDUPE, ioctl::DEDUPE_SIZE)
    };
    let mut b = RemapArgs {
        src_fd,
        src_off: 0,
        dst_off: 0,
        len: 2 * BS,
    }
    .encode(size);
    let r = ioctl::call(&dst, cmd, &mut b);
    println!("errno={}", errno_of(r));
}

fn raw_remap_as(uid: u32, what: &str, dst: &Path, src_fd: u64) -> i32 {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_raw_remap",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "DAXLINK_TRUST_HELPER",
            format!("{what} {} {src_fd}", dst.display()),
        );
    let o = run_deadline(c, 30);
    let e = o
        .stdout
        .lines()
        .find_map(|l| l.split("errno=").nth(1))
        .unwrap_or_else(|| panic!("helper printed no errno: {o:?}"));
    e.trim().parse().unwrap()
}

#[test]
fn clone_source_is_a_descriptor_not_an_inode_number() {
    let img = Image::new("clonefd", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(m.path("pub")).unwrap();
    fs::set_permissions(m.path("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(m.path("secret")).unwrap();
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    let secret = pattern(77, 2 * BS as usize);
    fs::write(m.path("secret/f"), &secret).unwrap();
    fs::set_permissions(m.path("secret/f"), fs::Permissions::from_mode(0o644)).unwrap();
    let ino = fs::metadata(m.path("secret/f")).unwrap().ino();
    // The old attack: the secret's inode number as the source.
    for what in ["clone", "dedupe"] {
        let dst = m.path(&format!("pub/{what}-by-nobody"));
        let e = raw_remap_as(65534, what, &dst, ino);
        assert_ne!(e, 0, "{what} with an inode number succeeded");
        let got = fs::read(&dst).unwrap_or_default();
        assert!(
            got.len() < secret.len() || got[..secret.len()] != secret[..],
            "{what}: the secret leaked"
        );
        responsive(&dst);
    }
    // Through the command (which opens the source): permission denied.
    let root = m.root().display().to_string();
    let o = nobody(&format!(
        "{DAXLINK} reflink {root}/secret/f {root}/pub/stolen"
    ));
    assert_ne!(o.rc, 0);
    assert!(o.stderr.contains("Permission denied"), "{o:?}");
    // Root, holding the source open, clones through the same ioctl.
    let src = File::open(m.path("secret/f")).unwrap();
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(m.path("copy"))
        .unwrap();
    let mut b = RemapArgs {
        src_fd: src.as_raw_fd() as u64,
        src_off: 0,
        dst_off: 0,
        len: 0,
    }
    .encode(ioctl::CLONE_SIZE);
    ioctl::call(&dst, ioctl::Cmd::CLONE, &mut b).unwrap();
    drop((src, dst));
    assert_eq!(fs::read(m.path("copy")).unwrap(), secret);
    m.cycle("");
}

#[test]
fn every_private_ioctl_as_an_unprivileged_user() {
    let img = Image::new("ioctls", 32 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path("ro"), pattern(1, 2 * BS as usize)).unwrap();
    fs::set_permissions(m.path("ro"), fs::Permissions::from_mode(0o644)).unwrap();
    daxlink::tools::client::reflink(&m.path("ro"), &m.path("ro2"), 0, 0, 0).unwrap();
    let root = m.root().display().to_string();
    let as_nobody = |args: &str| nobody(&format!("{DAXLINK} {args}"));
    // Reading what one may read: allowed.
    for ok in [
        format!("extents {root}/ro"),
        format!("stat {root}/ro"),
        format!("owners {root}/ro --offset 0"),
    ] {
        let o = as_nobody(&ok);
        assert_eq!(o.rc, 0, "{ok}: {o:?}");
    }
    // Changing what one may not write: refused, data unchanged.
    for bad in [
        format!("unshare {root}/ro"),
        format!("dedupe {root}/ro {root}/ro2 --src-offset 0 --dst-offset 0 --length 4096"),
        format!("reflink {root}/ro {root}/ro2"),
        format!("poison {root}/ro --offset 0"),
    ] {
        let o = as_nobody(&bad);
        assert_ne!(o.rc, 0, "{bad}: {o:?}");
    }
    assert_eq!(fs::read(m.path("ro")).unwrap(), pattern(1, 2 * BS as usize));
    assert_eq!(
        fs::read(m.path("ro2")).unwrap(),
        pattern(1, 2 * BS as usize)
    );
    let st = daxlink::tools::client::extents(&m.path("ro2")).unwrap();
    assert!(
        st.iter().all(|e| e.refcount == 2),
        "unshare or dedupe by nobody took effect"
    );
    responsive(&m.path("ro"));
    m.cycle("");
}

// ---------------------------------------------------------------------------
// The POSIX permission matrix, against tmpfs.

/// Set up the same tree on `b` (as root).
fn matrix_setup(b: &Path) {
    let script = format!(
        r#"set -e
cd {b}
chmod 0755 .
umask 022
for m in 000 400 040 004 600 640 604 660 606 666 700 750 705 770 707 777 4755 2755 6777; do
  printf 'data\n' > f$m; chown 1000:1000 f$m; chmod $m f$m
  printf '#!/bin/sh\necho ran\n' > x$m; chown 1000:1000 x$m; chmod $m x$m
done
for m in 700 750 705 711 755 770 707 777 555 1777 2775 3777; do
  mkdir d$m; printf 'in\n' > d$m/in; chmod 0666 d$m/in; chown 1000:1000 d$m d$m/in; chmod $m d$m
done
for u in 1000 1001 1002 1003; do
  printf 'x\n' > d1777/own$u; chown $u:$u d1777/own$u
  printf 'x\n' > d3777/own$u; chown $u:$u d3777/own$u
done
printf 'acl\n' > facl; chown 1000:1000 facl; chmod 0600 facl
setfacl -m u:1003:rw,g:1002:r facl
mkdir dacl; chown 1000:1000 dacl; chmod 0700 dacl; printf 'in\n' > dacl/in; chmod 644 dacl/in
setfacl -m u:1001:rx,g:1002:rwx dacl
setfacl -d -m u:1003:rwx,g:1002:r dacl
"#,
        b = b.display()
    );
    let o = root_sh(&script);
    assert_eq!(o.rc, 0, "setup: {o:?}");
}

/// The operations every user tries, in order; one output line each.
fn matrix_script(b: &Path, tag: &str) -> String {
    let mut ops: Vec<String> = Vec::new();
    let files = [
        "000", "400", "040", "004", "600", "640", "604", "660", "606", "666", "700", "750", "705",
        "770", "707", "777", "4755", "2755", "6777",
    ];
    for m in files {
        ops.push(format!("cat f{m}"));
        ops.push(format!("printf 'w{tag}\\n' >> f{m}"));
        ops.push(format!("./x{m}"));
        ops.push(format!("touch f{m}"));
        ops.push(format!("touch -d @{} f{m}", 100000 + tag.len()));
        ops.push(format!("truncate -s 3 f{m}"));
        ops.push(format!("stat -c '%a %u %g %s' f{m}"));
    }
    for m in ["606", "666", "6777", "2755"] {
        ops.push(format!("chmod 0664 f{m}"));
        ops.push(format!("chmod 2775 f{m}"));
        ops.push(format!("chgrp 1000 f{m}"));
        ops.push(format!("chgrp 1002 f{m}"));
        ops.push(format!("chown 1003 f{m}"));
        ops.push(format!("stat -c '%a %u %g' f{m}"));
    }
    for d in [
        "700", "750", "705", "711", "755", "770", "707", "777", "555", "1777", "2775", "3777",
    ] {
        ops.push(format!("ls d{d}"));
        ops.push(format!("cat d{d}/in"));
        ops.push(format!("touch d{d}/new{tag}"));
        ops.push(format!("mkdir d{d}/sub{tag}"));
        ops.push(format!("stat -c '%a %u %g' d{d}/new{tag} d{d}/sub{tag}"));
        ops.push(format!("mv d{d}/new{tag} d{d}/moved{tag}"));
        ops.push(format!("ln d{d}/in d{d}/hard{tag}"));
        ops.push(format!("rm -f d{d}/in"));
        ops.push(format!("rmdir d{d}/sub{tag}"));
    }
    for d in ["1777", "3777"] {
        for u in ["1000", "1001", "1002", "1003"] {
            ops.push(format!("mv d{d}/own{u} d{d}/own{u}.{tag}"));
            ops.push(format!("rm d{d}/own{u}"));
        }
    }
    ops.push("cat facl".into());
    ops.push(format!("printf 'a{tag}\\n' >> facl"));
    ops.push("getfacl -n facl".into());
    ops.push("ls dacl".into());
    ops.push("cat dacl/in".into());
    ops.push(format!("touch dacl/n{tag}"));
    ops.push(format!("getfacl -n dacl/n{tag}"));
    ops.push(format!("stat -c '%a' dacl/n{tag}"));
    let mut s = format!("cd {} || exit 9\numask 022\n", b.display());
    for (i, op) in ops.iter().enumerate() {
        // One line per op: its exit status and its output (stdout and stderr).
        s.push_str(&format!(
            "o=$({op} 2>&1); echo \"{i} [{}] rc=$? $(echo $o | tr '\\n' ' ')\"\n",
            op.replace('"', "'").replace('$', "")
        ));
    }
    s
}

#[test]
fn permission_matrix_matches_tmpfs() {
    let img = Image::new("matrix", 64 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    let t = Tmpfs::new();
    matrix_setup(m.root());
    matrix_setup(t.root());
    // owner (also in group 1002, so that chgrp to it is allowed), same
    // primary group, supplementary group member, other, root.
    let users: [(u32, u32, &[u32]); 5] = [
        (1000, 1000, &[1002]),
        (1001, 1000, &[]),
        (1002, 1002, &[1000, 4242]),
        (1003, 1003, &[]),
        (0, 0, &[]),
    ];
    let mut cells = 0;
    let mut ok = 0;
    let mut diffs = Vec::new();
    for (uid, gid, groups) in users {
        let tag = format!("u{uid}");
        let run = |b: &Path| {
            let o = sh_as(uid, gid, groups, &matrix_script(b, &tag), 300);
            o.stdout.replace(&b.display().to_string(), "B")
        };
        let (a, b) = (run(m.root()), run(t.root()));
        let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        assert_eq!(al.len(), bl.len(), "uid {uid}: different op counts");
        assert!(al.len() > 200, "uid {uid}: only {} ops ran", al.len());
        for (x, y) in al.iter().zip(&bl) {
            cells += 1;
            ok += x.contains("rc=0 ") as usize;
            if x != y {
                diffs.push(format!("uid {uid}:\n  daxlink: {x}\n  tmpfs:   {y}"));
            }
        }
    }
    println!("{cells} cells, {ok} succeeded, {} differ", diffs.len());
    assert!(
        ok > cells / 5 && ok < cells * 4 / 5,
        "suspicious: {ok} of {cells} succeeded"
    );
    assert!(
        diffs.is_empty(),
        "{} cells differ from tmpfs:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    responsive(m.root());
    m.cycle("");
}

// ---------------------------------------------------------------------------
// ACLs: setfacl/getfacl, cp -a, rsync -A, tar --acls, against tmpfs.

/// What cp -a must keep of a tree: (names, types, modes, owners, mtimes,
/// link targets and file sizes; regular files' access times; ACLs from
/// `getfacl -R`), relative and numeric.
fn snapshot(dir: &Path) -> (String, String, String) {
    let d = dir.display();
    // Directory sizes differ between filesystems; regular file sizes must not.
    let find = root_sh(&format!(
        "cd {d} && (find . -printf '%P %y %m %U %G %T@ %l\\n'; find . -type f -printf '%P %s\\n') | sort"
    ));
    assert_eq!(find.rc, 0, "{find:?}");
    // Directory and symlink access times move when this very walk reads them
    // (relatime), at a moment that differs between the two trees, so only
    // regular files' are compared.
    let atimes = root_sh(&format!(
        "cd {d} && find . -type f -printf '%P %A@\\n' | sort"
    ));
    let facl = root_sh(&format!(
        "cd {d} && getfacl -R -n -p . 2>&1 | sed 's/^# file: //'"
    ));
    assert_eq!(facl.rc, 0, "{facl:?}");
    // getfacl -R lists in directory order, which differs between filesystems.
    let mut blocks: Vec<&str> = facl.stdout.split("\n\n").collect();
    blocks.sort();
    (find.stdout, atimes.stdout, blocks.join("\n\n"))
}

/// Equal, or fail listing the first lines that differ (not two whole trees).
fn same(a: &str, b: &str, what: &str) {
    if a == b {
        return;
    }
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let only_a: Vec<&&str> = al.iter().filter(|l| !bl.contains(l)).take(10).collect();
    let only_b: Vec<&&str> = bl.iter().filter(|l| !al.contains(l)).take(10).collect();
    panic!(
        "{what}: {} vs {} lines\n only in the first: {only_a:#?}\n only in the second: {only_b:#?}",
        al.len(),
        bl.len()
    );
}

fn acl_tree(src: &Path) {
    let o = root_sh(&format!(
        r#"set -e
cd {s}
umask 022
mkdir -p a/b/c plain sgid
printf 'one\n' > a/f1; printf 'two\n' > a/b/f2; printf 'x\n' > plain/p
chmod 0640 a/f1; chmod 0755 a/b/f2; chmod 0711 plain; chmod 2775 sgid
chown 1000:1000 a/f1; chown 1001:4242 plain/p
setfacl -m u:1000:rwx,g:4242:r a/f1
setfacl -d -m u:1003:rwx,g:1002:rx a
setfacl -m u:1002:rx a/b
setfacl -d -m o::- a/b
touch a/b/inherited; mkdir a/b/inheriting
ln -s f1 a/link
# Old times everywhere: rsync leaves a time alone when it is within the same
# second, so times of "now" would not be copied anywhere.
find . -exec touch -h -d @7654321 {{}} +
touch -h -d @1234567 a/link
"#,
        s = src.display()
    ));
    assert_eq!(o.rc, 0, "{o:?}");
}

#[test]
fn acls_survive_cp_rsync_tar_as_on_tmpfs() {
    let img = Image::new("acls", 256 << 20);
    let m = Mounted::new(&img.path, "allow_other");
    let t = Tmpfs::new();
    // The source on its own noatime tmpfs: copying reads it, and a read
    // must not move the access times that the copies are compared with.
    let s = Tmpfs::with("size=64m,noatime");
    let src = s.root().to_path_buf();
    acl_tree(&src);
    let want = snapshot(&src);
    assert!(want.2.contains("user:1000:rwx"), "{}", want.2);
    let dax = m.root().to_path_buf();
    for (how, cmd) in [
        ("cp -a", "cp -a {src}/. {dst}/"),
        ("rsync -aA", "rsync -aAX {src}/ {dst}/"),
        (
            "tar --acls",
            "tar --acls --xattrs -C {src} -cf - . | tar --acls --xattrs -C {dst} -xpf -",
        ),
    ] {
        for base in [&dax, &t.root().to_path_buf()] {
            let dst: PathBuf = base.join(how.replace(' ', "_"));
            fs::create_dir(&dst).unwrap();
            let c = cmd
                .replace("{src}", &src.display().to_string())
                .replace("{dst}", &dst.display().to_string());
            let o = root_sh(&c);
            assert_eq!(o.rc, 0, "{how}: {o:?}");
            let got = snapshot(&dst);
            let on = base.display();
            same(&got.2, &want.2, &format!("{how} onto {on}: ACLs"));
            same(
                &got.0,
                &want.0,
                &format!("{how} onto {on}: modes, owners, times"),
            );
            // Only cp -a keeps access times (rsync needs -U, tar sets them).
            if how == "cp -a" {
                same(&got.1, &want.1, &format!("{how} onto {on}: access times"));
            }
        }
    }
    // A new file in a directory with a default ACL, on both.
    for base in [&dax, &t.root().to_path_buf()] {
        let o = root_sh(&format!(
            "cd {} && umask 077 && touch cp_-a/a/new && mkdir cp_-a/a/newdir",
            base.display()
        ));
        assert_eq!(o.rc, 0, "{o:?}");
    }
    let a = snapshot(&dax.join("cp_-a/a"));
    let b = snapshot(&t.root().join("cp_-a/a"));
    same(
        &a.2,
        &b.2,
        "new files under a default ACL: ACLs (daxlink, tmpfs)",
    );
    let modes = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("new"))
            .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(modes(&a.0), modes(&b.0));
    // ACLs persist across a remount, and fsck is content with them.
    let before = snapshot(&dax.join("cp_-a"));
    let m = m.cycle("allow_other");
    let after = snapshot(&m.path("cp_-a"));
    same(&after.2, &before.2, "ACLs before and after a remount");
    same(&after.0, &before.0, "modes before and after a remount");
    // A malformed ACL is refused with EINVAL (setfattr bypasses setfacl).
    let o = root_sh(&format!(
        "setfattr -n system.posix_acl_access -v 0x02000000010007000000ffff {}",
        m.path("cp_-a/a/f1").display()
    ));
    assert_ne!(o.rc, 0);
    assert!(o.stderr.contains("Invalid argument"), "{o:?}");
}

#[test]
fn cp_a_of_usr_share_doc_matches_tmpfs() {
    let img = Image::new("doc", 1 << 30);
    let m = Mounted::new(&img.path, "");
    let t = Tmpfs::new();
    // A stable source: a copy on a noatime tmpfs (reading /usr/share/doc
    // itself may move its access times between the two copies).
    let s = Tmpfs::with("size=1g,noatime");
    let o = root_sh(&format!("cp -a /usr/share/doc {}/doc", s.root().display()));
    assert_eq!(o.rc, 0, "{o:?}");
    for base in [m.root(), t.root()] {
        let o = root_sh(&format!(
            "cp -a {}/doc {}/doc",
            s.root().display(),
            base.display()
        ));
        assert_eq!(o.rc, 0, "{o:?}");
    }
    let src = snapshot(&s.root().join("doc"));
    let (a, b) = (snapshot(&m.path("doc")), snapshot(&t.root().join("doc")));
    assert!(
        a.0.lines().count() > 100,
        "too small a tree to mean anything"
    );
    same(&a.0, &b.0, "modes, owners or times (daxlink, tmpfs)");
    same(&a.1, &b.1, "access times (daxlink, tmpfs)");
    same(&a.2, &b.2, "ACLs (daxlink, tmpfs)");
    same(&src.0, &b.0, "modes, owners or times (source, tmpfs)");
    m.cycle("");
}
