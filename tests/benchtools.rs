//! The tools' surface: progress bars on a terminal and none elsewhere, tools
//! naming themselves as invoked, plurals, `daxlink mount --help` against the
//! docs/USAGE.md's option list, the stress recipe in one form, and the benchmark
//! report's SVG plots (well-formed, with axes, labels and a legend).

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The mkfs-daxlink binary of this build (the workspace's other package).
fn mkfs_bin() -> PathBuf {
    let p = Path::new(DAXLINK).parent().unwrap().join("mkfs-daxlink");
    assert!(
        p.exists(),
        "mkfs-daxlink is not built next to daxlink: run cargo build --workspace"
    );
    p
}

/// Run `cmd` with a timeout, stdin closed, stdout and stderr captured.
fn run(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} timed out after {secs} s: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the shell command line `line` on a pseudo-terminal (`script` from
/// util-linux); returns everything written to the terminal and the exit status.
fn on_terminal(line: &str, secs: u64) -> (String, i32) {
    let out = run(
        Command::new("script")
            .args(["-qefc", line, "/dev/null"])
            .env("TERM", "xterm")
            .env_remove("DAXLINK_PROGRESS"),
        secs,
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Does `text` hold a drawn progress bar (the bar, or terminal control codes)?
fn has_progress(text: &str) -> bool {
    text.contains("] ") && (text.contains('\r') || text.contains("\x1b["))
}

fn no_progress(what: &str, out: &Output) {
    for (name, s) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let t = String::from_utf8_lossy(s);
        assert!(
            !t.contains('\r') && !t.contains("\x1b[") && !t.contains("=>"),
            "{what}: progress on {name} when not on a terminal: {t:?}"
        );
    }
}

/// A sparse scratch image path on /dev/shm, removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = PathBuf::from(format!(
            "/dev/shm/daxlink-benchtools-{tag}-{}.img",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn progress_only_on_a_terminal() {
    let img = Scratch::new("progress");
    let p = img.0.to_str().unwrap();
    let mkfs = mkfs_bin();
    // Not a terminal: stdout and stderr are pipes.
    let out = run(Command::new(&mkfs).args(["--size", "4G", p]), 120);
    assert!(out.status.success(), "{out:?}");
    no_progress("mkfs", &out);
    let out = run(Command::new(FSCK).args(["-n", p]), 120);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    no_progress("fsck", &out);
    let out = run(
        Command::new(DAXLINK).args([
            "crashtest",
            "--workload",
            "seq1/create:A/bar",
            "--max-states",
            "50",
            "--seed",
            "1",
        ]),
        300,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    no_progress("crashtest", &out);

    // On a terminal: a bar, labelled, with control codes.
    let (t, rc) = on_terminal(&format!("{} --force --size 4G {p}", mkfs.display()), 120);
    assert_eq!(rc, 0, "{t}");
    assert!(has_progress(&t) && t.contains("mkfs: ["), "mkfs: {t:?}");
    assert!(t.contains("inode table"), "mkfs names its step: {t:?}");
    let (t, rc) = on_terminal(&format!("{FSCK} -n {p}"), 120);
    assert_eq!(rc, 0, "{t}");
    assert!(has_progress(&t) && t.contains("fsck: ["), "fsck: {t:?}");
    assert!(t.contains("/20"), "fsck counts its passes: {t:?}");
    let (t, rc) = on_terminal(
        &format!("{DAXLINK} crashtest --workload 'seq1/create:A/bar' --max-states 50 --seed 1"),
        300,
    );
    assert_eq!(rc, 0, "{t}");
    assert!(
        has_progress(&t) && t.contains("crashtest: checking workloads"),
        "crashtest: {t:?}"
    );
    // DAXLINK_PROGRESS=0 turns it off on a terminal too; so does mkfs -q.
    let (t, _) = on_terminal(&format!("DAXLINK_PROGRESS=0 {FSCK} -n {p}"), 120);
    assert!(!t.contains("fsck: ["), "{t:?}");
    let (t, _) = on_terminal(&format!("{} -q --force --size 4G {p}", mkfs.display()), 120);
    assert!(!t.contains("mkfs: ["), "{t:?}");
}

#[test]
fn tools_name_themselves_as_invoked() {
    let dir = tempfile::tempdir().unwrap();
    let mkfs = dir.path().join("mkfs.daxlink");
    let fsck = dir.path().join("fsck.daxlink");
    symlink(mkfs_bin(), &mkfs).unwrap();
    symlink(FSCK, &fsck).unwrap();
    let missing = dir.path().join("missing.img");
    let m = missing.to_str().unwrap();

    // Usage errors: clap's usage line names the invoked name.
    for (bin, name) in [(&mkfs, "mkfs.daxlink"), (&fsck, "fsck.daxlink")] {
        let out = run(Command::new(bin).arg("--no-such-option"), 30);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("Usage: {name} ")), "{name}: {err}");
        assert!(!err.contains("-daxlink"), "{name}: {err}");
        let out = run(Command::new(bin).arg("--help"), 30);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(&format!("Usage: {name} ")), "{name}: {help}");
        let out = run(Command::new(bin).arg("--version"), 30);
        let v = String::from_utf8_lossy(&out.stdout);
        assert!(v.starts_with(&format!("{name} ")), "{name}: {v}");
    }
    // Errors of the tool itself.
    let out = run(Command::new(&mkfs).arg(m), 30);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with("mkfs.daxlink: ") && err.contains("--size"),
        "{err}"
    );
    let out = run(Command::new(&fsck).args(["-n", m]), 30);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8));
    assert!(err.starts_with("fsck.daxlink: "), "{err}");
    // The build-directory names still name themselves so.
    let out = run(Command::new(mkfs_bin()).arg(m), 30);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("mkfs-daxlink: "), "{err}");
}

#[test]
fn counts_are_worded_in_the_right_number() {
    let img = Image::new("plural", 64 << 20);
    // A fresh image: one inode (the root).
    let out = run(
        Command::new(FSCK).args(["-n", img.path.to_str().unwrap()]),
        60,
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("clean, 1 inode, "), "{s}");
    assert!(!s.contains("1 inodes"), "{s}");
    let m = Mounted::new(&img.path, "");
    std::fs::write(m.path("a"), vec![7u8; 8192]).unwrap();
    let out = daxlink(&[&"reflink", &m.path("a"), &m.path("b")]);
    assert_eq!(out.stdout.trim(), "cloned 8192 bytes");
    let out = run(
        Command::new(DAXLINK).args(["stat", m.root().to_str().unwrap()]),
        30,
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("shared: 8192 bytes in 1 range\n"), "{s}");
    m.unmount();
    fsck_clean(&img.path);
}

/// The backquoted options of docs/USAGE.md's "Mount options" paragraph.
fn documented_mount_options() -> Vec<String> {
    let usage =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/USAGE.md")).unwrap();
    let start = usage
        .find("Mount options (`-o`")
        .expect("docs/USAGE.md has a Mount options paragraph");
    let para = &usage[start..];
    let para = &para[..para.find("An unknown option is an").expect("paragraph end")];
    let mut out = Vec::new();
    for (i, chunk) in para.split('`').enumerate() {
        if i % 2 == 1 && chunk != "-o" {
            out.push(chunk.to_string());
        }
    }
    out
}

#[test]
fn mount_help_lists_every_documented_option() {
    let opts = documented_mount_options();
    assert!(opts.len() >= 20, "docs/USAGE.md options: {opts:?}");
    let out = run(Command::new(DAXLINK).args(["mount", "--help"]), 30);
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let words: Vec<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    for o in &opts {
        let (name, values) = o.split_once('=').unwrap_or((o.as_str(), ""));
        assert!(
            words.contains(&name),
            "`daxlink mount --help` lacks {name}: {help}"
        );
        for v in values.split('|').filter(|v| *v != "N" && !v.is_empty()) {
            assert!(
                help.contains(&format!("{name}={v}")) || help.contains(&format!("|{v}")),
                "`daxlink mount --help` lacks {name}={v}: {help}"
            );
        }
    }
}

#[test]
fn the_hour_long_stress_recipe_is_the_same_in_the_docs_and_the_test() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/docs/TESTING.md")).unwrap();
    let test = std::fs::read_to_string(format!("{root}/tests/reflink_stress.rs")).unwrap();
    let recipe = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.trim_start_matches("//!").trim())
            .filter(|l| {
                l.contains("cargo test")
                    && l.contains("reflink_stress")
                    && l.contains("DAXLINK_STRESS_OPS=")
            })
            .map(|l| l.trim_matches('`').to_string())
            .collect()
    };
    let (a, b) = (recipe(&readme), recipe(&test));
    assert_eq!(a.len(), 1, "docs/TESTING.md: {a:?}");
    assert_eq!(
        a, b,
        "docs/TESTING.md and tests/reflink_stress.rs give different recipes"
    );
}
/// bench_report.py draws the plots of a committed sample (tests/bench/sample.json):
/// every SVG parses with a strict XML parser and has axes, tick labels, a title,
/// axis labels, a legend and data.
#[test]
fn bench_plots_are_well_formed_svg() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        Command::new("python3").args([
            &format!("{root}/scripts/bench_report.py"),
            "plots",
            &format!("{root}/tests/bench/sample.json"),
            dir.path().to_str().unwrap(),
        ]),
        60,
    );
    assert!(out.status.success(), "{out:?}");
    let mut svgs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    svgs.sort();
    let names: Vec<String> = svgs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "fio-ratio.svg",
        "clone-vs-extents.svg",
        "cost-vs-file-size.svg",
        "cost-vs-dir-size.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let check = run(
        Command::new("python3")
            .arg(format!("{root}/tests/bench/check_svg.py"))
            .args(&svgs),
        60,
    );
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The plots of the last full run that docs/BENCHMARKS.md shows pass the same check.
    let docs: Vec<String> = [
        "fio-ratio.svg",
        "clone-vs-extents.svg",
        "cost-vs-file-size.svg",
        "cost-vs-dir-size.svg",
    ]
    .iter()
    .map(|n| format!("{root}/docs/bench/{n}"))
    .collect();
    let bench = std::fs::read_to_string(format!("{root}/docs/BENCHMARKS.md")).unwrap();
    for d in &docs {
        let rel = d.strip_prefix(&format!("{root}/docs/")).unwrap();
        assert!(
            bench.contains(&format!("]({rel})")),
            "docs/BENCHMARKS.md does not show {rel}"
        );
    }
    let check = run(
        Command::new("python3")
            .arg(format!("{root}/tests/bench/check_svg.py"))
            .args(&docs),
        60,
    );
    assert!(
        check.status.success(),
        "docs/bench: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    // The checker itself catches a cut-off file and a plot without a legend.
    let text = std::fs::read_to_string(&svgs[0]).unwrap();
    let cut = dir.path().join("cut.svg");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let start = text.find("<g class=\"legend\">").unwrap();
    let end = start + text[start..].find("</g>").unwrap() + 4;
    let nolegend = dir.path().join("nolegend.svg");
    std::fs::write(&nolegend, format!("{}{}", &text[..start], &text[end..])).unwrap();
    // ... and "us" for microseconds, a bar without its printed value (the
    // creates bar of fio-ratio, 0.026 of the axis, could not be seen), and
    // a log x axis far longer than the data (it ran to 10,000 MiB for data
    // ending at 1 GiB).
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    let dirsz = read("cost-vs-dir-size.svg");
    assert!(
        dirsz.contains("\u{b5}s per operation"),
        "the y label says µs"
    );
    let us = dir.path().join("us.svg");
    std::fs::write(
        &us,
        dirsz.replace("\u{b5}s per operation", "us per operation"),
    )
    .unwrap();
    let fio = read("fio-ratio.svg");
    let first = fio
        .find("<text class=\"value\"")
        .expect("bar values printed");
    let close = first + fio[first..].find("</text>").unwrap() + "</text>".len();
    let novalue = dir.path().join("novalue.svg");
    std::fs::write(&novalue, format!("{}{}", &fio[..first], &fio[close..])).unwrap();
    // Every point of cost-vs-file-size moved to the axis' left end.
    let fsz = read("cost-vs-file-size.svg");
    let mut moved = String::new();
    let mut rest = fsz.as_str();
    while let Some(i) = rest.find("<circle cx=\"") {
        let j = i + "<circle cx=\"".len();
        let k = j + rest[j..].find('"').unwrap();
        moved.push_str(&rest[..j]);
        moved.push_str("80.0");
        rest = &rest[k..];
    }
    moved.push_str(rest);
    let short = dir.path().join("short.svg");
    std::fs::write(&short, moved).unwrap();
    for bad in [&cut, &nolegend, &us, &novalue, &short] {
        let out = run(
            Command::new("python3")
                .arg(format!("{root}/tests/bench/check_svg.py"))
                .arg(bad),
            60,
        );
        assert_eq!(out.status.code(), Some(1), "{bad:?} passed: {out:?}");
    }
}
