//! The images of images/: what fsck -n, fsck -y, mount and the CLI say about
//! each, and that they agree.

use super::*;

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

/// Images mount refuses with the very words of fsck's finding (the rule is
/// one function in `src/check/`, called by both).
const SAME_WORDS: &[&str] = &[
    "dirent-free-inode.img.gz",
    "extent-beyond-device.img.gz",
    "extent-dir-owner.img.gz",
];

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
        let mut mount_said = None;
        {
            let (_d2, p2) = temp_copy(c.file);
            match (mount_path(&p2), c.mount_err) {
                (Ok(_), None) => {}
                (Err(FsError::Corrupt(m)), Some(s)) => {
                    assert!(m.contains(s), "{}: mount said {m:?}", c.file);
                    mount_said = Some(m);
                }
                (Err(e @ FsError::RoCompat(_)), Some(s)) => {
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
        if SAME_WORDS.contains(&c.file) {
            let said = format!("{};", mount_said.as_deref().unwrap_or("(mounted)"));
            assert!(
                rep_n.findings.iter().any(|f| f.message.starts_with(&said)),
                "{}: mount said {said:?}, fsck {rep_n:#?}",
                c.file
            );
        }
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
            "extent-dir-owner.img.gz" => {
                // The record is dropped: the file keeps its name and size,
                // its block is a hole, the directory its entries.
                let d = fs.lookup(ROOT_INO, b"dir").unwrap();
                let n = fs.lookup(d.ino, b"nested.txt").unwrap();
                assert_eq!(fs.read(n.ino, 0, 100).unwrap(), vec![0u8; 12]);
                assert_eq!(fs.readdir(d.ino, 0, 100).unwrap().len(), 5);
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

pub(crate) fn run_cli(args: &[&str], p: &Path) -> (i32, String) {
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
