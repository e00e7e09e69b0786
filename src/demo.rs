//! `daxlink demo`: the dax-reflink pinning problem, scenarios S1-S9 of
//! docs/KERNEL.md section 3, run through a mounted daxlink with real
//! syscalls under each page model, with invariants 1-7 checked after every
//! step.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli;
use crate::pages::PageModel;

const BS: u64 = 4096;

/// How a scenario ended under one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An invariant broke: data went where it must not, or state is wrong.
    Corrupted,
    /// Every invariant held and every step completed.
    Safe,
    /// A layout change waited for the pin and failed with EBUSY.
    Blocked,
    /// The pin itself was refused (EOPNOTSUPP).
    Refused,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Corrupted => "corrupted",
            Outcome::Safe => "safe",
            Outcome::Blocked => "blocked",
            Outcome::Refused => "refused",
        }
    }
}

pub struct ScenarioResult {
    pub scenario: &'static str,
    pub model: PageModel,
    pub outcome: Outcome,
    pub violated: BTreeSet<u8>,
    pub steps: Vec<String>,
    pub kernel: &'static str,
}

/// A daxlink mount owned by the demo: a fresh image, a foreground daemon.
struct DemoMount {
    image: PathBuf,
    dir: PathBuf,
    opts: String,
    child: Option<Child>,
}

fn is_mounted(dir: &Path) -> bool {
    let d = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(d.as_str()))
}

impl DemoMount {
    fn new(tag: &str, model: PageModel) -> io::Result<DemoMount> {
        let base = std::env::temp_dir().join(format!("daxlink-demo-{}-{tag}", std::process::id()));
        let _ = fs::create_dir_all(&base);
        let image = PathBuf::from(format!(
            "/dev/shm/daxlink-demo-{}-{tag}.img",
            std::process::id()
        ));
        let _ = fs::remove_file(&image);
        crate::mkfs::mkfs_path(&image, Some(64 << 20), true, &Default::default())
            .map_err(io::Error::other)?;
        let mut m = DemoMount {
            image,
            dir: base,
            opts: format!("page_model={},layout_timeout_ms=300", model.name()),
            child: None,
        };
        m.start()?;
        Ok(m)
    }

    fn start(&mut self) -> io::Result<()> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("mount")
            .arg(&self.image)
            .arg(&self.dir)
            .args(["-f", "-o", &self.opts])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while !is_mounted(&self.dir) {
            if child.try_wait()?.is_some() || t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err(io::Error::other("the daxlink daemon did not mount"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        Ok(())
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if is_mounted(&self.dir) {
                let ok = Command::new("umount")
                    .arg(&self.dir)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
                }
            }
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon dies with pins held (a crash); then the image is mounted again.
    fn crash_and_remount(&mut self) -> io::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let t0 = Instant::now();
        while is_mounted(&self.dir) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.start()
    }
}

impl Drop for DemoMount {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir(&self.dir);
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn free_blocks(p: &Path) -> u64 {
    cli::stat(p).map(|s| s.free_bytes / BS).unwrap_or(0)
}

/// Runs one scenario, recording steps and observed violations.
struct Run<'a> {
    m: &'a mut DemoMount,
    steps: Vec<String>,
    violated: BTreeSet<u8>,
    blocked: bool,
    refused: bool,
}

impl Run<'_> {
    fn step(&mut self, s: impl Into<String>) {
        let s = s.into();
        // Invariants the daemon can see (1, 3, 4, 6, 7 and the sticky 2, 5).
        if let Ok(v) = cli::check(&self.m.dir) {
            let new: Vec<u8> = v.into_iter().filter(|i| self.violated.insert(*i)).collect();
            if !new.is_empty() {
                self.steps.push(format!("{s}  [breaks {}]", list(&new)));
                return;
            }
        }
        self.steps.push(s);
    }

    fn broke(&mut self, inv: &[u8], s: impl Into<String>) {
        self.violated.extend(inv.iter().copied());
        self.steps
            .push(format!("{}  [breaks {}]", s.into(), list(inv)));
    }

    fn write(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.m.p(name))?;
        f.write_all_at(data, 0)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.m.p(name))
    }

    fn clone(&self, src: &str, dst: &str) -> io::Result<u64> {
        cli::reflink(&self.m.p(src), &self.m.p(dst), 0, 0, 0)
    }

    fn open_rw(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.m.p(name))
    }
}

fn list(v: &[u8]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn block(b: u8) -> Vec<u8> {
    vec![b; BS as usize]
}

const MARK: &[u8] = b"XXXX-DMA-FROM-THE-DEVICE-XXXX";

fn has_mark(d: &[u8]) -> bool {
    d.windows(MARK.len()).any(|w| w == MARK)
}

/// S1/S2: a pinned, unshared block is truncated (or punched) away, then the
/// allocator may hand it to a new file C while the device still writes.
fn s_truncate_reuse(r: &mut Run, punch: bool) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    let fa = r.open_rw("A")?;
    let free0 = free_blocks(&r.m.dir);
    let h = cli::pin(&fa, 0, BS, true, false)?;
    r.step(format!("write A; h = pin(A, 0, W)  -> pin {h}"));
    let res = if punch {
        let rc = nix_fallocate(
            &fa,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            BS,
        );
        rc.map(|_| "punch A [0, 4096)")
    } else {
        fa.set_len(0).map(|_| "truncate A to 0")
    };
    match res {
        Ok(what) => r.step(what),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.blocked = true;
            r.step(format!(
                "{} -> EBUSY (waited for the pin)",
                if punch { "punch A" } else { "truncate A" }
            ));
            cli::unpin(&fa, h)?;
            r.step("unpin h");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    r.write("C", &block(b'c'))?;
    r.step("create C, write one block");
    cli::dma_write(&fa, h, 0, MARK)?;
    let c = r.read("C")?;
    if has_mark(&c) {
        r.broke(&[1, 2], "dma_write(h, X): C reads X (the block was reused)");
    } else {
        r.step("dma_write(h, X): C unaffected");
    }
    if !punch {
        // Crash with the pin held: the deferred free must not leak.
        r.m.crash_and_remount()?;
        let free1 = free_blocks(&r.m.dir);
        let leaked = free0.saturating_sub(free1).saturating_sub(1);
        if leaked > 1 {
            r.broke(
                &[1],
                format!("daemon killed with the pin held; remount: {leaked} blocks leaked"),
            );
        } else if r.m.opts.contains("page_model=proxy") {
            r.step("daemon killed with the pin held; remount reclaims the deferred block");
        } else {
            r.step("daemon killed with the pin held; remount");
        }
        if r.read("C")? != block(b'c') {
            r.broke(&[2], "after remount C does not hold its data");
        }
    } else {
        cli::unpin(&fa, h)?;
        r.step("unpin h");
    }
    Ok(())
}

fn nix_fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // std has no fallocate; nix's is safe.
    nix::fcntl::fallocate(
        f,
        nix::fcntl::FallocateFlags::from_bits_truncate(mode),
        off as i64,
        len as i64,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

fn s3(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = cli::pin(&fb, 0, BS, false, false)?;
    r.step("A = a; clone A->B; h = pin(B, 0, R)");
    fb.write_all_at(&block(b'b'), 0)?;
    r.step("write(B, 0, b): B copied on write away from the pinned block");
    match cli::dma_write(&fb, h, 0, MARK) {
        Ok(()) => r.step("dma_write(h, X) through the read pin: accepted"),
        Err(e) if errno(&e) == libc::EPERM => {
            r.step("dma_write(h, X) through a read pin: refused (EPERM)")
        }
        Err(e) => return Err(e),
    }
    if has_mark(&r.read("A")?) {
        r.broke(&[2], "A reads X");
    } else {
        r.step("A reads a");
    }
    cli::unpin(&fb, h)?;
    r.step("unpin h");
    Ok(())
}

fn s4(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = cli::pin(&fb, 0, BS, true, false)?;
    r.step("A = a; clone A->B; h = pin(B, 0, W)");
    cli::dma_write(&fb, h, 0, MARK)?;
    r.step("dma_write(h, X)");
    let (a, b) = (r.read("A")?, r.read("B")?);
    if has_mark(&a) {
        r.broke(&[2, 3], "A reads X too (the write pin did not unshare)");
    } else {
        r.step("A reads a");
    }
    if !has_mark(&b) {
        r.broke(&[2], "B does not read X");
    } else {
        r.step("B reads X");
    }
    cli::unpin(&fb, h)?;
    r.step("unpin h");
    Ok(())
}

fn s5(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = cli::pin(&fb, 0, BS, true, false)?;
    r.step("A = a (A maps it first); clone A->B; h = pin(B, 0, W)");
    r.open_rw("A")?.write_all_at(&block(b'2'), 0)?;
    r.step("write(A, 0, a2): A copied on write");
    cli::dma_write(&fb, h, 0, MARK)?;
    r.step("dma_write(h, X)");
    cli::unpin(&fb, h)?;
    r.step("unpin h (dirty)");
    fb.sync_all()?;
    r.step("fsync(B)");
    if !has_mark(&r.read("B")?) {
        r.broke(&[2], "B does not read X");
    }
    if r.read("A")? != block(b'2') {
        r.broke(&[2], "A lost its own write");
    }
    let o = cli::owners(&r.m.p("B"), 0)?;
    let names: Vec<String> = o["owners"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["path"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    r.step(format!("owners(B, 0) -> {names:?}"));
    Ok(())
}

fn s6(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = cli::pin(&fb, 0, BS, false, false)?;
    r.step("A = a; clone A->B; h = pin(B, 0, R)");
    match fb.set_len(0) {
        Ok(()) => r.step("truncate B to 0 (A still maps the block)"),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.blocked = true;
            r.step("truncate B -> EBUSY (waits for pins taken through any owner)");
        }
        Err(e) => return Err(e),
    }
    match r.open_rw("A")?.set_len(0) {
        Ok(()) => r.step("truncate A to 0"),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.blocked = true;
            r.step("truncate A -> EBUSY");
        }
        Err(e) => return Err(e),
    }
    r.write("C", &block(b'c'))?;
    r.step("create C, write one block");
    let d = cli::dma_read(&fb, h, 0, 64)?;
    if d.starts_with(b"cccc") {
        r.broke(&[1], "dma_read(h) returns C's data (the block was reused)");
    } else {
        r.step("dma_read(h) returns the pinned data");
    }
    cli::unpin(&fb, h)?;
    r.step("unpin h");
    Ok(())
}

fn s7(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    r.clone("A", "C")?;
    r.step("A = a; clone A->B, A->C (three owners)");
    let (blk, notified, owners) = cli::poison(&r.m.p("A"), 0)?;
    r.step(format!(
        "poison the block ({blk}): {notified} of {owners} owners notified"
    ));
    let mut eio = Vec::new();
    let mut silent = Vec::new();
    for n in ["A", "B", "C"] {
        match r.read(n) {
            Err(e) if errno(&e) == libc::EIO => eio.push(n),
            Ok(_) => silent.push(n),
            Err(e) => return Err(e),
        }
    }
    if silent.is_empty() {
        r.step(format!("reads of {eio:?} fail with EIO"));
    } else {
        r.broke(
            &[5],
            format!("EIO for {eio:?}; {silent:?} read bad data silently"),
        );
    }
    Ok(())
}

fn s8(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    let fa = r.open_rw("A")?;
    let h = cli::pin(&fa, 0, BS, true, false)?;
    r.step("A = a; h = pin(A, 0, W)");
    match r.clone("A", "B") {
        Ok(_) => r.step("clone A->B"),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.blocked = true;
            r.step("clone A->B -> EBUSY (break_layouts on both inodes)");
            cli::unpin(&fa, h)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    cli::dma_write(&fa, h, 0, MARK)?;
    r.step("dma_write(h, X)");
    if has_mark(&r.read("B")?) {
        r.broke(&[2], "B reads X");
    } else {
        r.step("B reads a; A reads X");
    }
    cli::unpin(&fa, h)?;
    Ok(())
}

fn s9(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    let fa = r.open_rw("A")?;
    let h = match cli::pin(&fa, 0, BS, true, true) {
        Ok(h) => h,
        Err(e) if errno(&e) == libc::EOPNOTSUPP => {
            r.refused = true;
            r.step("h = pin(A, 0, W, long-term) -> EOPNOTSUPP");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    r.step("h = pin(A, 0, W, long-term) (an RDMA registration)");
    fa.set_len(0)?;
    r.write("C", &block(b'c'))?;
    r.step("truncate A to 0; create C, write one block");
    cli::dma_write(&fa, h, 0, MARK)?;
    if has_mark(&r.read("C")?) {
        r.broke(&[1, 2], "dma_write(h, X): C reads X");
    } else {
        r.step("dma_write(h, X): C unaffected");
    }
    cli::unpin(&fa, h)?;
    r.step("unpin h");
    Ok(())
}

type Scenario = (
    &'static str,
    &'static str,
    &'static str,
    fn(&mut Run) -> io::Result<()>,
);

const SCENARIOS: &[Scenario] = &[
    (
        "S1",
        "truncate a pinned block, then reuse",
        "pin_user_pages, dax_layout_busy_page, xfs_break_dax_layouts",
        |r| s_truncate_reuse(r, false),
    ),
    (
        "S2",
        "punch a pinned block, then reuse",
        "dax_layout_busy_page_range, xfs_break_layouts(BREAK_UNMAP)",
        |r| s_truncate_reuse(r, true),
    ),
    (
        "S3",
        "read pin on a shared block, CoW write, device writes",
        "FOLL_WRITE, dax_iomap_copy_around",
        s3,
    ),
    (
        "S4",
        "write pin on a shared block",
        "dax_insert_entry (IOMAP_F_SHARED), dax_iomap_copy_around",
        s4,
    ),
    (
        "S5",
        "dirty attribution after CoW of the other owner",
        "unpin_user_pages_dirty_lock, set_page_dirty, page->mapping",
        s5,
    ),
    (
        "S6",
        "truncate both owners of a pinned shared block",
        "dax_layout_busy_page, dax_folio_is_shared",
        s6,
    ),
    (
        "S7",
        "memory failure on a block with three owners",
        "memory_failure, mf_dax_kill_procs, xfs_dax_notify_failure",
        s7,
    ),
    (
        "S8",
        "clone while a write pin is held",
        "xfs_mmaplock_two_inodes_and_break_dax_layout",
        s8,
    ),
    (
        "S9",
        "long-term pin (RDMA) on DAX",
        "check_vma_flags (FOLL_LONGTERM), get_user_pages_longterm",
        s9,
    ),
];

pub fn run_scenario(idx: usize, model: PageModel) -> io::Result<ScenarioResult> {
    let (name, _, kernel, f) = SCENARIOS[idx];
    let mut m = DemoMount::new(&format!("{}-{}", name, model.name()), model)?;
    let mut r = Run {
        m: &mut m,
        steps: Vec::new(),
        violated: BTreeSet::new(),
        blocked: false,
        refused: false,
    };
    f(&mut r)?;
    r.step("end");
    r.steps.pop();
    let outcome = if !r.violated.is_empty() {
        Outcome::Corrupted
    } else if r.blocked {
        Outcome::Blocked
    } else if r.refused {
        Outcome::Refused
    } else {
        Outcome::Safe
    };
    Ok(ScenarioResult {
        scenario: name,
        model,
        outcome,
        violated: r.violated,
        steps: r.steps,
        kernel,
    })
}

/// Does a model behave as expected across all scenarios?
pub fn model_ok(model: PageModel, results: &[&ScenarioResult]) -> bool {
    match model {
        PageModel::Legacy => {
            results
                .iter()
                .filter(|r| r.outcome == Outcome::Corrupted)
                .count()
                >= 6
        }
        PageModel::Upstream => results.iter().all(|r| r.outcome != Outcome::Corrupted),
        PageModel::Proxy => results.iter().all(|r| r.outcome == Outcome::Safe),
    }
}

/// `daxlink demo`: returns the exit status.
pub fn main(models: &[PageModel], json: bool, verbose: bool) -> i32 {
    let mut results: Vec<ScenarioResult> = Vec::new();
    for model in models {
        for (i, sc) in SCENARIOS.iter().enumerate() {
            match run_scenario(i, *model) {
                Ok(r) => results.push(r),
                Err(e) => {
                    eprintln!("daxlink demo: {} under {}: {e}", sc.0, model.name());
                    return 2;
                }
            }
        }
    }
    let ok = models.iter().all(|m| {
        let rs: Vec<&ScenarioResult> = results.iter().filter(|r| r.model == *m).collect();
        model_ok(*m, &rs)
    });
    if json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "scenario": r.scenario, "model": r.model.name(), "outcome": r.outcome.name(),
                    "violated": r.violated.iter().collect::<Vec<_>>(), "steps": r.steps,
                    "kernel": r.kernel,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "results": v, "ok": ok }));
    } else {
        print_table(models, &results, verbose);
        println!();
        for m in models {
            let rs: Vec<&ScenarioResult> = results.iter().filter(|r| r.model == *m).collect();
            let expect = match m {
                PageModel::Legacy => "breaks invariants in at least 6 scenarios",
                PageModel::Upstream => "never corrupts (blocks or refuses instead)",
                PageModel::Proxy => "safe in all nine",
            };
            println!(
                "{:<9} {}: {}",
                m.name(),
                expect,
                if model_ok(*m, &rs) { "yes" } else { "NO" }
            );
        }
    }
    if ok {
        0
    } else {
        1
    }
}

fn print_table(models: &[PageModel], results: &[ScenarioResult], verbose: bool) {
    println!(
        "The dax-reflink pinning problem, reproduced on daxlink (invariants: docs/KERNEL.md section 3)"
    );
    println!("  1 no reuse while pinned  2 pin isolation  3 write pins exclusive  4 complete rmap");
    println!("  5 poison reaches everyone  6 dirty attribution  7 refcount conservation");
    println!();
    print!("{:<4} {:<52}", "", "scenario");
    for m in models {
        print!(" {:<28}", m.name());
    }
    println!();
    for (name, what, kernel, _) in SCENARIOS {
        print!("{:<4} {:<52}", name, what);
        for m in models {
            let r = results
                .iter()
                .find(|r| r.scenario == *name && r.model == *m);
            let cell = match r {
                Some(r) if r.violated.is_empty() => r.outcome.name().to_string(),
                Some(r) => format!(
                    "{} (breaks {})",
                    r.outcome.name(),
                    r.violated
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => "-".into(),
            };
            print!(" {cell:<28}");
        }
        println!();
        if verbose {
            println!("     kernel: {kernel}");
            for m in models {
                if let Some(r) = results
                    .iter()
                    .find(|r| r.scenario == *name && r.model == *m)
                {
                    println!("     {}:", m.name());
                    for s in &r.steps {
                        println!("       - {s}");
                    }
                }
            }
        }
    }
}
