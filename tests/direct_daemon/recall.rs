//! Recalls: a layout change waits for an access under the old map.

use super::*;

/// Run `truncate -s 0 P` in the background.
fn truncate_bg(p: &Path) -> std::process::Child {
    Command::new("truncate")
        .args(["-s", "0"])
        .arg(p)
        .stderr(Stdio::null())
        .spawn()
        .expect("truncate(1)")
}

fn finished_within(c: &mut std::process::Child, d: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        if let Some(st) = c.try_wait().unwrap() {
            assert!(st.success());
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_truncate_waits_for_an_access_and_not_for_a_dead_client() {
    let img = Image::new("direct-recall", 64 << 20);
    // A long recall deadline: only the end of the access (or of its
    // process) may let the truncate go on.
    let m = Mounted::new(&img.path, "recall_timeout_ms=60000");
    let p = write_file(&m, "f", &pattern(2, 2 * BS));
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    let r = map(&f, 0, false).unwrap();
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    let mut t = truncate_bg(&p);
    assert!(
        !finished_within(&mut t, Duration::from_millis(700)),
        "truncate went on while a client was inside an access"
    );
    let before = c.load(r.extents[0].pblock);
    assert_eq!(
        &before[..64],
        &pattern(2, 64)[..],
        "the block is still the file's"
    );
    c.ctl.exit(c.slot);
    assert!(
        finished_within(&mut t, Duration::from_secs(10)),
        "truncate never finished"
    );
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    assert!(
        !c.ctl.enter(c.slot, r.bucket, r.gen),
        "the old map was recalled"
    );

    // A client process that dies inside an access: the truncate goes on.
    let p2 = write_file(&m, "g", &pattern(3, BS));
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "recall::helper_enter_and_wait",
            "--ignored",
            "--nocapture",
        ])
        .env("DAXLINK_DIRECT_HELPER", &p2)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    while !line.starts_with("entered") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
    }
    let mut t = truncate_bg(&p2);
    assert!(
        !finished_within(&mut t, Duration::from_millis(700)),
        "truncate went on while the helper was inside an access"
    );
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(
        finished_within(&mut t, Duration::from_secs(10)),
        "a dead client's slot held the truncate"
    );
    drop((c, f));
    m.unmount();
    fsck_clean(&img.path);
}

/// Run by the test above in a process of its own: enter an access on the
/// file named by DAXLINK_DIRECT_HELPER and never leave it.
#[test]
#[ignore = "a helper process of a_truncate_waits_for_an_access_and_not_for_a_dead_client"]
fn helper_enter_and_wait() {
    let Some(p) = std::env::var_os("DAXLINK_DIRECT_HELPER") else {
        panic!("run only by a_truncate_waits_for_an_access_and_not_for_a_dead_client");
    };
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    let r = map(&f, 0, false).unwrap();
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    println!("entered");
    std::thread::sleep(Duration::from_secs(120));
}

/// Each change that takes a block out of a file's map or shares it waits
/// for an access under the old map (`Fs::break_layouts`, the write
/// engine's copy-on-write and unshare), and goes on once it is over.
#[test]
fn every_layout_change_recalls_the_files_leases() {
    let img = Image::new("direct-sites", 64 << 20);
    let m = Mounted::new(&img.path, "recall_timeout_ms=60000");
    let dx = |args: &[&str]| {
        let mut c = Command::new(DAXLINK);
        c.args(args);
        c
    };
    let sh = |s: String| {
        let mut c = Command::new("sh");
        c.args(["-c", &s]);
        c
    };
    let shared = |f: &Path| {
        daxlink(&[&"reflink", &f, &f.with_extension("copy")]);
    };
    type Setup<'a> = &'a dyn Fn(&Path);
    type Op<'a> = Box<dyn Fn(&Path) -> Command + 'a>;
    let none: Setup = &|_| {};
    let cases: Vec<(&str, Setup, Op)> = vec![
        (
            "truncate down",
            none,
            Box::new(|f| sh(format!("truncate -s 4096 '{}'", f.display()))),
        ),
        (
            "punch",
            none,
            Box::new(|f| sh(format!("fallocate -p -o 4096 -l 4096 '{}'", f.display()))),
        ),
        (
            "zero range",
            none,
            Box::new(|f| sh(format!("fallocate -z -o 4096 -l 4096 '{}'", f.display()))),
        ),
        (
            "copy-on-write",
            &shared,
            Box::new(|f| {
                sh(format!(
                    "dd if=/dev/zero of='{}' bs=4096 count=1 conv=notrunc status=none",
                    f.display()
                ))
            }),
        ),
        (
            "unshare",
            &shared,
            Box::new(|f| dx(&["unshare", f.to_str().unwrap()])),
        ),
        (
            "clone onto it",
            none,
            Box::new(|f| {
                let s = f.with_extension("src");
                std::fs::write(&s, pattern(9, 4 * BS)).unwrap();
                dx(&["reflink", s.to_str().unwrap(), f.to_str().unwrap()])
            }),
        ),
        (
            "clone from it",
            none,
            Box::new(|f| {
                dx(&[
                    "reflink",
                    f.to_str().unwrap(),
                    f.with_extension("dst").to_str().unwrap(),
                ])
            }),
        ),
    ];
    let any = File::open(m.root()).unwrap();
    let c = Client::connect(&any);
    for (i, (what, setup, op)) in cases.iter().enumerate() {
        let f = write_file(&m, &format!("f{i}"), &pattern(i as u64, 4 * BS));
        setup(&f);
        let h = File::open(&f).unwrap();
        let r = map(&h, 0, false).unwrap();
        assert!(c.ctl.enter(c.slot, r.bucket, r.gen), "{what}");
        let mut cmd = op(&f);
        let mut t = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            !finished_within(&mut t, Duration::from_millis(500)),
            "{what} went on while a client was inside an access"
        );
        c.ctl.exit(c.slot);
        assert!(
            finished_within(&mut t, Duration::from_secs(20)),
            "{what} never finished"
        );
        assert!(
            !c.ctl.enter(c.slot, r.bucket, r.gen),
            "{what}: the old map still enters"
        );
    }
    // Growth recalls nothing: an append, a hole filled.
    let f = write_file(&m, "grow", &pattern(20, BS + 100));
    let h = rw(&f);
    let r = map(&h, 0, true).unwrap();
    // The block holding EOF is listed, but not writable in place.
    assert_eq!(
        r.extents
            .iter()
            .map(|e| (e.count, e.flags & wire::EXT_WRITE))
            .collect::<Vec<_>>(),
        vec![(1, wire::EXT_WRITE), (1, 0)]
    );
    h.write_all_at(b"more", 2 * BS as u64 + 7).unwrap();
    h.write_all_at(b"hole", 10 * BS as u64).unwrap();
    assert!(
        c.ctl.enter(c.slot, r.bucket, r.gen),
        "growth recalled the map"
    );
    c.ctl.exit(c.slot);
    drop((c, any, h));
    m.unmount();
    fsck_clean(&img.path);
}

/// A live client still inside one access after `recall_timeout_ms` is
/// treated as gone: its slot is cleared, the change goes on, and the
/// daemon's warning names its pid.
#[test]
fn a_stuck_client_is_cleared_at_the_recall_deadline() {
    let img = Image::new("direct-stuck", 64 << 20);
    let log = tempfile::NamedTempFile::new().unwrap();
    let m = Mounted::try_new_logging(&img.path, "recall_timeout_ms=400", Some(log.path()))
        .expect("mount");
    let p = write_file(&m, "f", &pattern(12, 2 * BS));
    let f = File::open(&p).unwrap();
    let c = Client::connect(&f);
    let r = map(&f, 0, false).unwrap();
    assert!(c.ctl.enter(c.slot, r.bucket, r.gen));
    let t0 = Instant::now();
    let mut t = truncate_bg(&p);
    assert!(
        finished_within(&mut t, Duration::from_secs(10)),
        "truncate never finished"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "truncate did not wait for the deadline"
    );
    assert!(!c.ctl.busy(c.slot), "the stuck slot was not cleared");
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains(&format!("pid {} stayed inside", std::process::id())),
        "{text}"
    );
    drop((c, f));
    m.unmount();
    fsck_clean(&img.path);
}
