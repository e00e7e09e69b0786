//! A hostile user (nobody, through setpriv) against pins and dedupe on a
//! mount that root made with allow_other: the daemon must stay up and
//! answer everybody, and nobody must not allocate, stall or see what it
//! could not otherwise. Each attack runs as uid 65534 with a deadline;
//! where it needs an open file held across steps, this test binary runs
//! itself as nobody (`helper`, driven by `DAXLINK_HOSTILE_HELPER`).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{errno_of, run_deadline, Image, Mounted, Out, DAXLINK};
use daxlink::fuse::ioctl;
use daxlink::tools::client;

const BS: u64 = 4096;
const GIB: u64 = 1 << 30;
const NOBODY: u32 = 65534;

fn setpriv(uid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups");
    c
}

/// `script` with sh as nobody, `secs` at most.
fn nobody(script: &str, secs: u64) -> Out {
    let mut c = setpriv(NOBODY);
    c.args(["sh", "-c", script]);
    run_deadline(c, secs)
}

/// This binary's `helper` as nobody, still running: its lines come through
/// the receiver. Killed and reaped on drop.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(args: &str) -> Helper {
        let mut c = setpriv(NOBODY);
        c.arg(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "pins::helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DAXLINK_HOSTILE_HELPER", args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn helper");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                // The harness may print "test pins::helper ... " first.
                if let Some(i) = l.find("H:") {
                    let _ = tx.send(l[i + 2..].to_string());
                }
            }
        });
        Helper { child, lines: rx }
    }

    /// The helper's next line, within 30 s.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the helper said nothing within 30 s")
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` of a line like `errno=0 pinned=3`.
fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

fn open_mode(p: &str, mode: &str) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    match mode {
        "ro" => o.read(true),
        "wo" => o.write(true),
        _ => o.read(true).write(true),
    };
    o.open(p)
}

/// The helper: run as nobody by the tests below (`Helper::start`, with
/// `--ignored --exact`); ignored in a normal run, so it never counts as a
/// passing test.
///   pin FILE MODE OFF LEN w|r    pin once, say `errno=`, hold until killed
///   pin_many FILE N LEN          N read pins of [0, LEN), say `pinned= errno=`, hold
///   dma FILE                     read pin through O_RDONLY, then a device write
///   wo FILE                      EXTENTS and OWNERS on a write-only descriptor
#[test]
#[ignore = "re-exec helper, run by Helper::start"]
fn helper() {
    let spec = std::env::var("DAXLINK_HOSTILE_HELPER")
        .expect("pins::helper runs only as Helper::start's child (DAXLINK_HOSTILE_HELPER)");
    let a: Vec<&str> = spec.split(' ').collect();
    let hold = || loop {
        std::thread::sleep(Duration::from_secs(60));
    };
    match a[0] {
        "pin" => {
            let f = open_mode(a[1], a[2]);
            let (off, len) = (a[3].parse().unwrap(), a[4].parse().unwrap());
            // zeros: the first 16 bytes a device reads through the pin are 0.
            let (e, zeros) = match &f {
                Ok(f) => match client::pin(f, off, len, a[5] == "w", false) {
                    Ok(id) => {
                        let d = client::dma_read(f, id, 0, 16).unwrap_or_default();
                        (0, (d.len() == 16 && d.iter().all(|c| *c == 0)) as i32)
                    }
                    Err(e) => (e.raw_os_error().unwrap_or(-1), -1),
                },
                Err(e) => (e.raw_os_error().unwrap_or(-1) + 1000, -1),
            };
            println!("H:errno={e} zeros={zeros}");
            hold();
        }
        "pin_many" => {
            let f = File::open(a[1]).unwrap();
            let (n, len): (u64, u64) = (a[2].parse().unwrap(), a[3].parse().unwrap());
            let mut pinned = 0;
            let mut e = 0;
            while pinned < n {
                e = errno_of(client::pin(&f, 0, len, false, false));
                if e != 0 {
                    break;
                }
                pinned += 1;
            }
            println!("H:pinned={pinned} errno={e}");
            hold();
        }
        "dma" => {
            let f = File::open(a[1]).unwrap();
            let id = client::pin(&f, 0, BS, false, false).unwrap();
            let e = errno_of(client::dma_write(&f, id, 0, b"XXXXXXXX"));
            println!("H:errno={e}");
        }
        "wo" => {
            let f = OpenOptions::new().write(true).open(a[1]).unwrap();
            let mut b = vec![0u8; ioctl::EXTENTS_SIZE];
            let ex = errno_of(ioctl::call(&f, ioctl::Cmd::EXTENTS, &mut b));
            let mut b = vec![0u8; ioctl::OWNERS_SIZE];
            let ow = errno_of(ioctl::call(&f, ioctl::Cmd::OWNERS, &mut b));
            println!("H:extents={ex} owners={ow}");
        }
        x => panic!("unknown helper command {x}"),
    }
}

/// A mount as root with allow_other, its root 0755 and a sticky 1777 `pub`.
fn hostile_mount(img: &Image, opts: &str) -> Mounted {
    let o = if opts.is_empty() {
        "allow_other".to_string()
    } else {
        format!("allow_other,{opts}")
    };
    let m = Mounted::new(&img.path, &o);
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(m.path("pub")).unwrap();
    fs::set_permissions(m.path("pub"), fs::Permissions::from_mode(0o1777)).unwrap();
    m
}

/// root's stat of the mount answers within 10 s.
fn root_stat_answers(m: &Mounted) {
    let mut c = Command::new("stat");
    c.arg(m.root());
    let o = run_deadline(c, 10);
    assert_eq!(o.rc, 0, "{o:?}");
}

fn ws(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn dedupe_of_16_tib_of_holes_returns_a_short_count_quickly() {
    let img = Image::new("hdedupe", 64 << 20);
    let m = hostile_mount(&img, "");
    let p = m.root().join("pub").display().to_string();
    let len = 16u64 << 40;
    // Two at once, as nobody: each would take both workers for hours.
    let o = nobody(
        &format!(
            "truncate -s {len} {p}/a {p}/b {p}/c && {{ \
             {DAXLINK} dedupe {p}/a {p}/b --src-offset 0 --dst-offset 0 --length {len} > {p}/1.out & \
             {DAXLINK} dedupe {p}/a {p}/c --src-offset 0 --dst-offset 0 --length {len}; wait; }}"
        ),
        30,
    );
    assert_eq!(o.rc, 0, "{}", o.stderr);
    root_stat_answers(&m);
    // "deduped N bytes": a short count, at most 1 GiB, more than nothing.
    let n: u64 = o
        .stdout
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{o:?}"));
    assert!(n > 0 && n <= GIB, "bytes deduped: {n}");
    // Holes against holes: nothing was allocated or shared.
    for f in ["a", "b", "c"] {
        assert_eq!(
            fs::metadata(m.path(&format!("pub/{f}"))).unwrap().blocks(),
            0
        );
    }
    // The cap does not hide a difference inside the first GiB.
    let o = nobody(
        &format!(
            "printf x > {p}/d && truncate -s {len} {p}/d && {DAXLINK} dedupe {p}/a {p}/d --src-offset 0 --dst-offset 0 --length {len}"
        ),
        30,
    );
    assert!(o.stdout.contains("differ"), "{o:?}");
}

#[test]
fn pins_past_the_caps_are_refused_and_the_daemon_stays_up() {
    let img = Image::new("hpincap", 64 << 20);
    let m = hostile_mount(
        &img,
        "max_pins=12,max_pins_per_user=8,max_pinned_per_user=1M",
    );
    ws(&m.path("f"), &vec![7u8; 4 << 20], 0o644);
    let f = m.path("f").display().to_string();
    // Pinned bytes per user: 2 MiB at once is past 1 MiB.
    let big = Helper::start(&format!("pin {f} ro 0 {} r", 2 << 20));
    assert_eq!(field(&big.line(), "errno"), libc::ENOMEM as i64);
    drop(big);
    // Pins per user: the ninth is refused (ENOMEM, as GUP past RLIMIT_MEMLOCK).
    let many = Helper::start(&format!("pin_many {f} 64 4096"));
    let l = many.line();
    assert_eq!(field(&l, "pinned"), 8, "{l}");
    assert_eq!(field(&l, "errno"), libc::ENOMEM as i64, "{l}");
    root_stat_answers(&m);
    // The mount's cap holds for root too (CAP_IPC_LOCK lifts only the
    // per-user ones): 12 - 8 more.
    let rf = File::open(m.path("f")).unwrap();
    let mut mine = 0;
    while mine < 20 && client::pin(&rf, 0, BS, false, false).is_ok() {
        mine += 1;
    }
    assert_eq!(mine, 4);
    assert_eq!(
        errno_of(client::pin(&rf, 0, BS, false, false)),
        libc::ENOMEM
    );
    drop(rf);
    // nobody's pins end with its open file: it may pin again.
    drop(many);
    let t0 = Instant::now();
    loop {
        let again = Helper::start(&format!("pin_many {f} 1 4096"));
        if field(&again.line(), "pinned") == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "pins not released at close"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    root_stat_answers(&m);
    assert_eq!(fs::read(m.path("f")).unwrap(), vec![7u8; 4 << 20]);
}

#[test]
fn a_read_pin_of_a_sparse_file_allocates_nothing_and_changes_no_time() {
    let img = Image::new("hsparse", 256 << 20);
    let m = hostile_mount(&img, "");
    // Root's sparse file, readable by all.
    let f = File::create(m.path("sparse")).unwrap();
    f.set_len(256 << 20).unwrap();
    drop(f);
    fs::set_permissions(m.path("sparse"), fs::Permissions::from_mode(0o644)).unwrap();
    let before = fs::metadata(m.path("sparse")).unwrap();
    let free = || nix::sys::statvfs::statvfs(m.root()).unwrap().blocks_free();
    let free0 = free();
    std::thread::sleep(Duration::from_millis(20));
    let p = m.path("sparse").display().to_string();
    // A write pin needs a descriptor open for writing.
    let w = Helper::start(&format!("pin {p} ro 0 4096 w"));
    assert_eq!(field(&w.line(), "errno"), libc::EBADF as i64);
    drop(w);
    // 64 MiB read pin through O_RDONLY, held while root looks.
    let h = Helper::start(&format!("pin {p} ro 0 {} r", 64 << 20));
    let l = h.line();
    assert_eq!(field(&l, "errno"), 0, "{l}");
    assert_eq!(
        field(&l, "zeros"),
        1,
        "a device reads zeros from a hole: {l}"
    );
    let after = fs::metadata(m.path("sparse")).unwrap();
    assert_eq!(after.blocks(), 0, "the read pin allocated");
    assert_eq!(free(), free0, "free blocks changed");
    assert_eq!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec()),
        "ctime changed"
    );
    assert_eq!(after.mtime(), before.mtime());
    drop(h);
    root_stat_answers(&m);
}

#[test]
fn upstream_owner_truncate_is_not_blocked_by_a_readers_pin() {
    let img = Image::new("hupstream", 64 << 20);
    let m = hostile_mount(&img, "page_model=upstream");
    ws(&m.path("f"), &vec![b'a'; 8 * BS as usize], 0o644);
    let f = m.path("f").display().to_string();
    // Directly: nobody may only read f.
    let h = Helper::start(&format!("pin {f} ro 0 {} r", 8 * BS));
    let e = field(&h.line(), "errno");
    let t0 = Instant::now();
    let r = OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap()
        .set_len(BS);
    assert!(
        r.is_ok(),
        "owner's truncate: {r:?} (nobody's pin: errno {e})"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(e, libc::EOPNOTSUPP as i64);
    drop(h);
    // Through a clone: nobody's own copy shares f's blocks, and nobody pins it.
    ws(&m.path("g"), &vec![b'g'; 8 * BS as usize], 0o644);
    let p = m.root().join("pub").display().to_string();
    let o = nobody(
        &format!("{DAXLINK} reflink {} {p}/mine", m.path("g").display()),
        30,
    );
    assert_eq!(o.rc, 0, "{o:?}");
    let h = Helper::start(&format!("pin {p}/mine rw 0 {} r", 8 * BS));
    assert_eq!(field(&h.line(), "errno"), 0);
    let r = OpenOptions::new()
        .write(true)
        .open(m.path("g"))
        .unwrap()
        .set_len(0);
    assert!(
        r.is_ok(),
        "owner's truncate blocked by a pin of a clone: {r:?}"
    );
    drop(h);
    assert_eq!(
        fs::read(m.path("pub/mine")).unwrap(),
        vec![b'g'; 8 * BS as usize]
    );
    root_stat_answers(&m);
}

#[test]
fn owners_and_extents_show_only_what_the_caller_may_read() {
    let img = Image::new("howners", 64 << 20);
    let m = hostile_mount(&img, "");
    // root's private file and a public clone of it: one block, two owners.
    ws(&m.path("private"), &vec![b'p'; 2 * BS as usize], 0o600);
    client::reflink(&m.path("private"), &m.path("shared"), 0, 0, 0).unwrap();
    fs::set_permissions(m.path("shared"), fs::Permissions::from_mode(0o644)).unwrap();
    let private_ino = fs::metadata(m.path("private")).unwrap().ino();
    let shared_ino = fs::metadata(m.path("shared")).unwrap().ino();
    // root pins the private file's (shared) block.
    let rf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("private"))
        .unwrap();
    client::pin(&rf, 0, BS, false, false).unwrap();
    // root sees both owners and the pin.
    let o = client::owners(&m.path("shared"), 0).unwrap();
    assert_eq!(o["owners"].as_array().unwrap().len(), 2, "{o}");
    assert_eq!(o["pins"].as_array().unwrap().len(), 1, "{o}");
    // nobody sees the file it may read, not the other's inode, path or pin.
    let out = nobody(
        &format!(
            "{DAXLINK} owners {} --offset 0 --json",
            m.path("shared").display()
        ),
        30,
    );
    assert_eq!(out.rc, 0, "{out:?}");
    let j: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let inos: Vec<u64> = j["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["inode"].as_u64().unwrap())
        .collect();
    assert_eq!(inos, vec![shared_ino], "{j}");
    assert!(!out.stdout.contains(&format!(":{private_ino},")), "{j}");
    assert!(!out.stdout.contains("private"), "{j}");
    assert_eq!(j["pins"].as_array().unwrap().len(), 0, "{j}");
    assert_eq!(j["hidden_owners"], 1, "{j}");
    // A write-only descriptor shows no layout: EXTENTS and OWNERS are EBADF.
    ws(&m.path("wo"), &vec![1u8; BS as usize], 0o622);
    let h = Helper::start(&format!("wo {}", m.path("wo").display()));
    let l = h.line();
    assert_eq!(field(&l, "extents"), libc::EBADF as i64, "{l}");
    assert_eq!(field(&l, "owners"), libc::EBADF as i64, "{l}");
    drop(rf);
    root_stat_answers(&m);
}

#[test]
fn legacy_device_writes_need_a_writable_descriptor() {
    // legacy accepts device writes through read pins (the 2018 bug, S3),
    // but a reader of root's file must not write it that way.
    let img = Image::new("hlegacy", 64 << 20);
    let m = hostile_mount(&img, "page_model=legacy");
    ws(&m.path("f"), &vec![b'r'; BS as usize], 0o644);
    let h = Helper::start(&format!("dma {}", m.path("f").display()));
    let l = h.line();
    drop(h);
    assert_eq!(field(&l, "errno"), libc::EBADF as i64, "{l}");
    assert_eq!(fs::read(m.path("f")).unwrap(), vec![b'r'; BS as usize]);
    root_stat_answers(&m);
}

#[test]
fn a_pin_of_a_block_with_many_owners_is_refused_not_recorded_without_bound() {
    // Each owner of each pinned page is recorded; clones are cheap, so a
    // pin may record at most 4 owners per page (plus 16): ENOMEM past it.
    let img = Image::new("hclones", 64 << 20);
    let m = hostile_mount(&img, "");
    let p = m.root().join("pub").display().to_string();
    let o = nobody(
        &format!(
            "head -c 4096 /dev/zero | tr '\\0' x > {p}/f && for i in $(seq 1 40); do \
             {DAXLINK} reflink {p}/f {p}/c$i > /dev/null || exit 1; done && \
             head -c 4096 /dev/zero | tr '\\0' y > {p}/g && for i in 1 2 3; do {DAXLINK} reflink {p}/g {p}/d$i > /dev/null; done"
        ),
        60,
    );
    assert_eq!(o.rc, 0, "{o:?}");
    let h = Helper::start(&format!("pin {p}/f rw 0 4096 r"));
    let l = h.line();
    drop(h);
    assert_eq!(field(&l, "errno"), libc::ENOMEM as i64, "{l}");
    // A few owners are fine.
    let h = Helper::start(&format!("pin {p}/g rw 0 4096 r"));
    let l = h.line();
    drop(h);
    assert_eq!(field(&l, "errno"), 0, "{l}");
    assert!(client::check(m.root()).unwrap().is_empty());
    root_stat_answers(&m);
}
