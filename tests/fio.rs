//! The fio job files of tests/fio/ run against a real mount.
//!
//! The verify=crc32c jobs check data end to end: write + verify, a verify-only
//! pass after unmount / fsck / remount, verify-only passes on reflinked copies
//! (the clone ioctl and `cp`, which goes through copy_file_range), and after a
//! copy-on-write overwrite of one copy the original and the other copy still
//! verify while the overwritten copy does not. Every other job file runs once
//! with a small size and must succeed with a clean fsck afterwards.
//!
//! fio is required: scripts/test.sh installs it.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;
use daxlink::tools::client;
use serde_json::Value;

const JOBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fio");
/// Size of the verified file: 8192 blocks of 4 KiB.
const VERIFY_SIZE: u64 = 32 << 20;
/// Size of each workload job (bytes per job; small files use FIO_NRFILES instead).
const JOB_SIZE: u64 = 16 << 20;

/// Every job file this suite knows; a new file must be added here (and so gets run).
const JOB_FILES: &[&str] = &[
    "fsync-append.fio",
    "mmap.fio",
    "rand-read.fio",
    "rand-write.fio",
    "randrw-70-30.fio",
    "seq-read.fio",
    "seq-write.fio",
    "small-files.fio",
    "verify-only.fio",
    "verify-seq.fio",
    "verify-write.fio",
];

struct Fio {
    job: String,
    ok: bool,
    status: String,
    json: Value,
    stderr: String,
}

impl Fio {
    fn jobs(&self) -> &[Value] {
        self.json["jobs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn describe(&self) -> String {
        format!(
            "fio {} exited {}\nstderr:\n{}\njob errors: {:?}",
            self.job,
            self.status,
            self.stderr,
            self.jobs()
                .iter()
                .map(|j| (j["jobname"].clone(), j["error"].clone()))
                .collect::<Vec<_>>()
        )
    }

    /// Exit 0, at least one job reported, and every job's error is 0.
    fn assert_ok(&self) {
        assert!(self.ok, "{}", self.describe());
        assert!(!self.jobs().is_empty(), "{}", self.describe());
        for j in self.jobs() {
            assert_eq!(j["error"].as_u64(), Some(0), "{}", self.describe());
        }
    }

    /// Bytes read / written, summed over the jobs.
    fn io_bytes(&self, dir: &str) -> u64 {
        self.jobs()
            .iter()
            .map(|j| j[dir]["io_bytes"].as_u64().unwrap_or(0))
            .sum()
    }
}

fn fio_available() {
    let ok = Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "fio is not installed: these tests need it (scripts/test.sh installs fio, \
         or apt-get install fio)"
    );
}

/// Run one job file with the given environment, JSON output.
fn fio(job: &str, env: &[(&str, String)]) -> Fio {
    let path = Path::new(JOBS).join(job);
    assert!(path.exists(), "{} missing", path.display());
    let mut cmd = Command::new("fio");
    cmd.arg("--output-format=json").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run fio");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // fio may print notes before the JSON document.
    let json = stdout
        .find('{')
        .and_then(|i| serde_json::from_str(&stdout[i..]).ok())
        .unwrap_or(Value::Null);
    Fio {
        job: job.to_string(),
        ok: out.status.success(),
        status: format!("{}", out.status),
        json,
        stderr: if json_missing(&stdout) {
            format!("{stderr}\nstdout:\n{stdout}")
        } else {
            stderr
        },
    }
}

fn json_missing(stdout: &str) -> bool {
    !stdout.contains("\"jobs\"")
}

/// The environment of the verify jobs for file `name` of the mount.
fn verify_env(m: &Mounted, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FIO_FILE", on_mount(m, name)),
        ("FIO_SIZE", VERIFY_SIZE.to_string()),
    ]
}

/// Path of `name` on the mount, checked to be live: fio creates missing
/// directories, so a stale path would silently test the root filesystem.
fn on_mount(m: &Mounted, name: &str) -> String {
    assert!(
        is_mounted(m.root()),
        "{} is not mounted",
        m.root().display()
    );
    m.path(name).display().to_string()
}

/// verify-only.fio on `name`: must pass and must have read the whole file.
fn verifies(m: &Mounted, name: &str) {
    let r = fio("verify-only.fio", &verify_env(m, name));
    r.assert_ok();
    assert_eq!(
        r.io_bytes("read"),
        VERIFY_SIZE,
        "verify-only of {name} read less than the file: {}",
        r.describe()
    );
}

fn assert_shared(m: &Mounted, name: &str) {
    let ex = client::extents(&m.path(name)).unwrap();
    let mapped: u64 = ex.iter().map(|e| e.length).sum();
    assert_eq!(mapped, VERIFY_SIZE, "{name}: {ex:?}");
    assert!(
        ex.iter().all(|e| e.refcount >= 2),
        "{name} not entirely shared: {ex:?}"
    );
}

fn read_at(m: &Mounted, name: &str, off: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(m.path(name)).unwrap();
    let mut back = vec![0u8; len];
    f.read_exact_at(&mut back, off).unwrap();
    back
}

#[test]
fn verify_after_remount_and_on_reflinked_copies() {
    fio_available();
    let img = Image::new("fio-verify", 256 << 20);
    let m = Mounted::new(&img.path, "");

    // Write + verify.
    let r = fio("verify-write.fio", &verify_env(&m, "data"));
    r.assert_ok();
    assert_eq!(r.io_bytes("write"), VERIFY_SIZE, "{}", r.describe());
    assert_eq!(r.io_bytes("read"), VERIFY_SIZE, "{}", r.describe());
    assert_eq!(fs::metadata(m.path("data")).unwrap().len(), VERIFY_SIZE);

    // Unmount, fsck clean, remount: the data is still there.
    let m = m.cycle("");
    verifies(&m, "data");

    // Reflinked copies: the clone ioctl and cp (copy_file_range).
    let n = client::reflink(&m.path("data"), &m.path("clone"), 0, 0, 0).unwrap();
    assert_eq!(n, VERIFY_SIZE);
    let st = Command::new("cp")
        .arg(m.path("data"))
        .arg(m.path("copy"))
        .status()
        .unwrap();
    assert!(st.success(), "cp: {st}");
    for f in ["data", "clone", "copy"] {
        assert_shared(&m, f);
    }
    let extents = client::extents(&m.path("data")).unwrap().len();
    eprintln!("verified file: {extents} extents");
    verifies(&m, "clone");
    verifies(&m, "copy");

    // The copies survive a remount, still shared.
    let m = m.cycle("");
    for f in ["data", "clone", "copy"] {
        assert_shared(&m, f);
        verifies(&m, f);
    }

    // Copy-on-write: overwrite part of the clone (aligned blocks and an
    // unaligned span across block boundaries).
    let new_a = pattern(7, 64 << 10);
    let new_b = pattern(8, 5000);
    let (off_a, off_b) = (1u64 << 20, (5u64 << 20) + 4000);
    {
        let f = OpenOptions::new()
            .write(true)
            .open(m.path("clone"))
            .unwrap();
        f.write_all_at(&new_a, off_a).unwrap();
        f.write_all_at(&new_b, off_b).unwrap();
        f.sync_all().unwrap();
    }
    // The original and the other copy are untouched and still verify.
    verifies(&m, "data");
    verifies(&m, "copy");
    assert_shared(&m, "data");
    // The clone holds the new bytes and no longer verifies.
    assert!(read_at(&m, "clone", off_a, new_a.len()) == new_a);
    assert!(read_at(&m, "clone", off_b, new_b.len()) == new_b);
    let r = fio("verify-only.fio", &verify_env(&m, "clone"));
    assert!(
        !r.ok && r.stderr.contains("verify"),
        "verify of the overwritten clone should fail: {}",
        r.describe()
    );
    // Only the overwritten blocks were unshared: 16 aligned blocks, and
    // 4000..9000 past 5 MiB touches 3 blocks.
    let ex = client::extents(&m.path("clone")).unwrap();
    let private: u64 = ex.iter().filter(|e| e.refcount < 2).map(|e| e.length).sum();
    assert_eq!(private, (16 + 3) * 4096, "{ex:?}");

    // All of that persists.
    let m = m.cycle("");
    verifies(&m, "data");
    verifies(&m, "copy");
    assert!(read_at(&m, "clone", off_a, new_a.len()) == new_a);
    assert!(read_at(&m, "clone", off_b, new_b.len()) == new_b);

    // Removing the original leaves the copies intact.
    fs::remove_file(m.path("data")).unwrap();
    let m = m.cycle("");
    verifies(&m, "copy");
    let image = m.image.clone();
    m.unmount();
    fsck_clean(&image);
}

fn job_files() -> BTreeSet<String> {
    fs::read_dir(JOBS)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".fio"))
        .collect()
}

#[test]
fn job_file_list_is_complete() {
    let known: BTreeSet<String> = JOB_FILES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        job_files(),
        known,
        "tests/fio/*.fio and JOB_FILES in tests/fio.rs differ"
    );
}

#[test]
fn every_workload_job_runs_and_leaves_fsck_clean() {
    fio_available();
    let img = Image::new("fio-jobs", 512 << 20);
    let m = Mounted::new(&img.path, "threads=2");
    let nrfiles = 300usize;
    let mut names = Vec::new();
    for job in JOB_FILES.iter().filter(|j| !j.starts_with("verify")) {
        let name = job.trim_end_matches(".fio").to_string();
        fs::create_dir(m.path(&name)).unwrap();
        let t0 = std::time::Instant::now();
        let r = fio(
            job,
            &[
                ("FIO_DIR", on_mount(&m, &name)),
                ("FIO_SIZE", format!("{JOB_SIZE}")),
                ("FIO_RUNTIME", "60".to_string()),
                ("FIO_NRFILES", nrfiles.to_string()),
            ],
        );
        r.assert_ok();
        let moved = r.io_bytes("read") + r.io_bytes("write");
        assert!(moved > 0, "{job} did no I/O: {}", r.describe());
        eprintln!("{job}: {moved} bytes in {:?}", t0.elapsed());
        names.push(name);
    }

    // Everything the jobs left behind survives unmount + fsck + remount.
    let before: Vec<_> = names.iter().map(|n| listing(&m, n)).collect();
    let m = m.cycle("");
    let after: Vec<_> = names.iter().map(|n| listing(&m, n)).collect();
    assert_eq!(before, after);
    let small = after.iter().find(|(n, _)| n == "small-files").unwrap();
    assert_eq!(small.1.len(), nrfiles);
    assert!(small.1.iter().all(|(_, len)| *len == 16 << 10), "{small:?}");
    let append = after.iter().find(|(n, _)| n == "fsync-append").unwrap();
    assert_eq!(append.1.len(), 1);
    assert_eq!(append.1[0].1, JOB_SIZE);
    let image = m.image.clone();
    m.unmount();
    fsck_clean(&image);
}

/// (directory, sorted (file name, size)) of a directory of the mount.
fn listing(m: &Mounted, name: &str) -> (String, Vec<(String, u64)>) {
    let mut v: Vec<(String, u64)> = fs::read_dir(m.path(name))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    (name.to_string(), v)
}
