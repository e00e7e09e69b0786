//! The crash-consistency harness (`daxlink crashtest`).
//!
//! 1. **Record** ([`record`]): a workload runs in process on an in-memory copy
//!    of a base image whose media has a [`record::Recorder`] observer: every
//!    store (offset, bytes), flush (range) and fence is logged, with the
//!    operation boundaries. Recording changes nothing the media does.
//! 2. **Crash states** ([`states`]): replaying the log, each fence closes a
//!    crash window; a crash in it leaves the durable image plus any subset of
//!    the stores in flight (8-byte units, grouped by cache line),
//!    exhaustively when few, else a prioritized, seeded sample. The end of
//!    the last operation is one more crash point, so every prefix of the
//!    operations is a crash state too.
//! 3. **Oracle** ([`oracle`]): each crash image is mounted (journal recovery,
//!    orphan reclaim), checked for structural consistency, compared with the
//!    semantic states at the operation boundaries of its window, then used
//!    (grow, create, write, delete everything), unmounted, mounted and
//!    checked again. When the recovery itself writes (a journal replay, an
//!    orphan reclaim), it is interrupted too, at each of its fences, and a
//!    second recovery must reach exactly the same state.
//!
//! **Window.** daxlink's operations are synchronous (ARCHITECTURE.md: when
//! one returns, its data and metadata are durable; fsync only fences). So a
//! crash between fence k-1 (during operation `lo`) and fence k (during
//! operation `hi`) must recover to the state after operation `lo - 1`, after
//! `lo`, ..., or after `hi`: each operation entirely there or entirely
//! absent, and every operation that completed (a fortiori every fsync)
//! before the window still there.
//!
//! **Budget.** `--max-states N` caps the crash states of the whole run. Each
//! crash point wants all its states when there are at most
//! [`Config::point_cap`], else that many; a first pass records every workload
//! to count the wants, and the budget is shared by water-filling, over
//! workloads and then over each workload's crash points, so every crash point
//! gets at least its first state (nothing in flight) when the budget allows.
//! Identical crash images of one workload are checked once per window (a
//! later window accepts fewer states).

#![forbid(unsafe_code)]

pub mod base;
mod bug;
pub use bug::Bug;
mod command;
pub mod direct;
pub use command::{cli, CrashArgs};
pub mod ops;
pub mod oracle;
mod parallel;
pub mod record;
mod rng;
pub mod states;
pub mod workload;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::fs::{Fs, FsOptions};
use crate::media::Media;
use base::{Base, Bases};
use ops::Workload;
use oracle::Snapshot;
use parallel::parallel;
use record::{Event, Recorder};
use rng::hash_str;
use states::{Epoch, Walker};
use workload::Recorded;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// `all`, `seq0`, `seq1`, `seq2`, an exact workload name, or a prefix ending in `*`.
    pub workload: String,
    /// Crash states of the whole run at most.
    pub max_states: u64,
    pub seed: u64,
    /// Crash states wanted per crash point at most.
    pub point_cap: u64,
    pub jobs: usize,
    pub inject: Option<Bug>,
    /// Stop a workload's checks after this many failures (0 = never).
    pub max_failures_per_workload: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            workload: "all".into(),
            max_states: 20_000,
            seed: 1,
            point_cap: 64,
            jobs: 2,
            inject: None,
            max_failures_per_workload: 3,
        }
    }
}

/// One crash state that broke a rule, with what it takes to re-run it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub workload: String,
    /// Crash point ordinal within the workload.
    pub point: usize,
    /// Fences completed before the crash window.
    pub fences: usize,
    /// Operations running at the window's start and end.
    pub ops: String,
    /// The persisted in-flight subset ([`Epoch::encode`]).
    pub subset: String,
    /// The same as byte ranges.
    pub persisted: Vec<(u64, u64)>,
    pub error: String,
}

impl Failure {
    /// `WORKLOAD@POINT:SUBSET`, the argument of `--replay`.
    pub fn repro(&self) -> String {
        format!("{}@{}:{}", self.workload, self.point, self.subset)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.workload,
            "crash_point": self.point,
            "fences_before": self.fences,
            "ops": self.ops,
            "subset": self.subset,
            "persisted": self.persisted.iter().map(|(o, l)| serde_json::json!([o, l])).collect::<Vec<_>>(),
            "error": self.error,
            "repro": self.repro(),
        })
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub workloads: usize,
    pub crash_points: usize,
    pub crash_states: u64,
    /// Interrupted recoveries checked (crash states of a recovery).
    pub recovery_states: u64,
    pub failures: u64,
    /// Largest number of 8-byte units still in flight when an operation
    /// returned, over all workloads (0: every operation is durable on return).
    pub in_flight_at_return: usize,
    /// What the direct-access client did in all workloads.
    pub direct: direct::Counts,
    /// Up to a few per workload.
    pub failed: Vec<Failure>,
    /// Workloads with at least one failure.
    pub failed_workloads: Vec<String>,
    pub seed: u64,
    pub max_states: u64,
    pub seconds: f64,
}

impl Summary {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workloads": self.workloads,
            "crash_points": self.crash_points,
            "crash_states": self.crash_states,
            "recovery_crash_states": self.recovery_states,
            "failures": self.failures,
            "in_flight_at_return": self.in_flight_at_return,
            "direct_writes": {
                "stored": self.direct.direct,
                "kernel_path": self.direct.kernel,
                "stale_maps": self.direct.stale,
            },
            "failed_workloads": self.failed_workloads.len(),
            "seed": self.seed,
            "max_states": self.max_states,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "failed": self.failed.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        })
    }
}

// ---------------------------------------------------------------------------
// Panics inside a check become failures, quietly.
// ---------------------------------------------------------------------------

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                let loc = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{loc}"));
            } else {
                prev(info);
            }
        }));
    });
}

fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    install_panic_hook();
    QUIET.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    match r {
        Ok(r) => r,
        Err(_) => Err(format!(
            "panic: {}",
            LAST_PANIC.with(|p| p.borrow().clone())
        )),
    }
}

// ---------------------------------------------------------------------------
// Walking a trace
// ---------------------------------------------------------------------------

/// Replay a recorded trace and call `f` for every crash point of the
/// workload's crash operations, with the walker positioned at it.
///
/// Returns, for every workload operation, the 8-byte units still in flight
/// when it returned (0 everywhere means every operation is durable on return,
/// so fsync has nothing left to do).
fn walk(
    base: &Base,
    w: &Workload,
    rec: &Recorded,
    mut f: impl FnMut(&Walker, &Epoch),
) -> Vec<usize> {
    let mut at_return = Vec::new();
    let (lo, hi) = w.crash_ops();
    let mut walker = Walker::new(base.image.clone());
    let mut op = 0usize;
    let mut prev_fence_op = 0usize;
    let mut point = 0usize;
    for ev in &rec.events {
        match ev {
            Event::Store { off, data } => walker.store(*off, data),
            Event::Flush { off, len } => walker.flush(*off, *len),
            Event::Fence => {
                if op >= lo && op <= hi {
                    let mut ep = walker.epoch(prev_fence_op, op);
                    ep.point = point;
                    point += 1;
                    f(&walker, &ep);
                }
                walker.fence();
                prev_fence_op = op;
            }
            Event::Op(n) => {
                if *n >= 2 && *n <= w.ops.len() + 1 {
                    at_return.push(walker.in_flight());
                }
                if op == hi && *n == hi + 1 {
                    // The end of the last crash operation: one more crash point.
                    let mut ep = walker.epoch(prev_fence_op, op);
                    ep.point = point;
                    point += 1;
                    f(&walker, &ep);
                }
                op = *n;
            }
        }
    }
    at_return
}

fn window<'a>(rec: &'a Recorded, ep: &Epoch) -> Vec<&'a Snapshot> {
    let lo = ep.op_lo.max(1) - 1;
    (lo..=ep.op_hi).map(|j| &rec.snaps[j]).collect()
}

/// The times fsyncs made durable before the window: (mtime, ctime) of each
/// inode fsynced by an operation that returned before the window began.
fn synced_times(rec: &Recorded, ep: &Epoch) -> oracle::Times {
    let mut out = oracle::Times::new();
    for j in 1..ep.op_lo {
        if let Some(ino) = rec.synced[j] {
            if let Some(t) = rec.snaps[j].times.get(&ino) {
                out.insert(ino, *t);
            }
        }
    }
    out
}

fn op_label(w: &Workload, j: usize) -> String {
    if j == 0 {
        "mount".into()
    } else if j <= w.ops.len() {
        w.ops[j - 1].name()
    } else {
        "unmount".into()
    }
}

fn ops_label(w: &Workload, ep: &Epoch) -> String {
    if ep.op_lo == ep.op_hi {
        op_label(w, ep.op_hi)
    } else {
        format!("{} .. {}", op_label(w, ep.op_lo), op_label(w, ep.op_hi))
    }
}

/// Crash states per fence of an interrupted recovery.
const RECOVERY_POINT_CAP: usize = 3;
/// A recovery of up to this many fences is interrupted at every one; a
/// longer one (finishing a multi-step change) at RECOVERY_SAMPLE of them.
const RECOVERY_FENCES: usize = 24;
const RECOVERY_SAMPLE: usize = 6;

/// Mount a crash image and apply every rule of the oracle. When recovery
/// itself writes more than the superblocks (a journal replay, an orphan
/// reclaim), it is also interrupted at each of its fences (nothing in
/// flight, everything, the first store alone): mounting that image again
/// must give exactly the same state. Returns how many such interrupted
/// recoveries were checked.
pub fn check_image(
    image: &[u8],
    window: &[&Snapshot],
    synced: &oracle::Times,
) -> Result<u64, String> {
    guarded(|| {
        let mut media = Media::anonymous(image.len() as u64).map_err(|e| e.to_string())?;
        media.write_at(0, image).map_err(|e| e.to_string())?;
        let rec = Arc::new(Recorder::new());
        media.set_observer(Some(rec.clone()));
        let fs = Fs::mount(media, FsOptions::default())
            .map_err(|e| format!("mount (recovery) failed: {e}"))?;
        let trace = rec.take();
        oracle::fsck_clean(&fs.media).map_err(|e| format!("after recovery: {e}"))?;
        let probs = oracle::consistency(&fs);
        if !probs.is_empty() {
            return Err(format!("inconsistent after recovery: {}", probs.join("; ")));
        }
        let snap = oracle::capture(&fs).map_err(|e| format!("reading the tree: {e}"))?;
        oracle::compare(&snap, window, synced)?;
        let n = check_recovery_crashes(image, &trace, &snap)?;
        oracle::usability(fs).map_err(|e| format!("not usable after recovery: {e}"))?;
        Ok(n)
    })
}

fn check_recovery_crashes(image: &[u8], trace: &[Event], want: &Snapshot) -> Result<u64, String> {
    let fences = trace.iter().filter(|e| matches!(e, Event::Fence)).count();
    if fences <= 2 {
        // Only the superblock rewrite of every mount (the seq0 workload covers it).
        return Ok(0);
    }
    let mut w = Walker::new(image.to_vec());
    let mut checked = 0;
    let mut seen = HashSet::new();
    // A long recovery (a multi-step change finished by mount) is interrupted
    // at about RECOVERY_SAMPLE of its fences, spread evenly, the last one
    // included.
    let stride = if fences > RECOVERY_FENCES {
        fences.div_ceil(RECOVERY_SAMPLE)
    } else {
        1
    };
    let mut fence = 0usize;
    for ev in trace {
        match ev {
            Event::Store { off, data } => w.store(*off, data),
            Event::Flush { off, len } => w.flush(*off, *len),
            Event::Op(_) => {}
            Event::Fence => {
                fence += 1;
                if !fence.is_multiple_of(stride) && fence != fences {
                    w.fence();
                    continue;
                }
                let ep = w.epoch(0, 0);
                for choice in ep.choices(w.fences() as u64).take(RECOVERY_POINT_CAP) {
                    if !seen.insert(w.state_hash(&ep, &choice)) {
                        continue;
                    }
                    checked += 1;
                    let img = w.image(&ep, &choice);
                    let what = || {
                        format!(
                            "recovery interrupted after {} of its fences (persisted {:?})",
                            w.fences(),
                            ep.persisted_ranges(&choice)
                        )
                    };
                    let media = Media::anonymous(img.len() as u64).map_err(|e| e.to_string())?;
                    media.write_at(0, &img).map_err(|e| e.to_string())?;
                    let fs = Fs::mount(media, FsOptions::default())
                        .map_err(|e| format!("{}: mount failed: {e}", what()))?;
                    oracle::fsck_clean(&fs.media).map_err(|e| format!("{}: {e}", what()))?;
                    let got = oracle::capture(&fs).map_err(|e| format!("{}: {e}", what()))?;
                    if got.nodes != want.nodes || got.data != want.data {
                        return Err(format!(
                            "{}: the second recovery gives another state than the first",
                            what()
                        ));
                    }
                }
                w.fence();
            }
        }
    }
    Ok(checked)
}

// ---------------------------------------------------------------------------
// Budget
// ---------------------------------------------------------------------------

/// Share `total` among demands: everyone gets min(demand, level), the level
/// as high as the total allows; what is left goes one each in order.
pub fn water_fill(demands: &[u64], total: u64) -> Vec<u64> {
    let sum: u64 = demands.iter().sum();
    if sum <= total {
        return demands.to_vec();
    }
    let (mut lo, mut hi) = (0u64, demands.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let s: u64 = demands.iter().map(|d| (*d).min(mid)).sum();
        if s <= total {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut out: Vec<u64> = demands.iter().map(|d| (*d).min(lo)).collect();
    let mut left = total - out.iter().sum::<u64>();
    for (o, d) in out.iter_mut().zip(demands) {
        if left == 0 {
            break;
        }
        if *d > *o {
            *o += 1;
            left -= 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

/// Every workload: those of the small base image (seq0, seq1, seq2,
/// direct), then those of the big one (big).
pub fn all_workloads(bases: &Bases) -> Result<Vec<Workload>, String> {
    let mut out = workload::generate(&bases.small)?;
    out.extend(workload::generate_direct());
    out.extend(workload::generate_big());
    Ok(out)
}

/// Select workloads: a comma-separated list of `all`, `seq0`, `seq1`,
/// `seq2`, `big`, `direct`, exact names, or prefixes ending in `*` (in generation order).
pub fn select(all: Vec<Workload>, sel: &str) -> Result<Vec<Workload>, String> {
    let parts: Vec<&str> = sel.split(',').filter(|p| !p.is_empty()).collect();
    let matches = |name: &str, p: &str| match p {
        "all" => true,
        "seq0" | "seq1" | "seq2" | "big" | "direct" => name.starts_with(&format!("{p}/")),
        p if p.ends_with('*') => name.starts_with(&p[..p.len() - 1]),
        p => name == p,
    };
    for p in &parts {
        if !all.iter().any(|w| matches(&w.name, p)) {
            return Err(format!("no workload matches {p:?} (see --list)"));
        }
    }
    let out: Vec<Workload> = all
        .into_iter()
        .filter(|w| parts.iter().any(|p| matches(&w.name, p)))
        .collect();
    if out.is_empty() {
        return Err("no workload selected".into());
    }
    Ok(out)
}

struct WorkResult {
    points: usize,
    direct: direct::Counts,
    recovery_states: u64,
    /// Largest number of units in flight when an operation returned.
    in_flight_at_return: usize,
    states: u64,
    failures: u64,
    failed: Vec<Failure>,
    error: Option<String>,
}

fn check_workload(base: &Base, w: &Workload, quotas: &[u64], cfg: &Config) -> WorkResult {
    let mut res = WorkResult {
        points: 0,
        direct: direct::Counts::default(),
        recovery_states: 0,
        in_flight_at_return: 0,
        states: 0,
        failures: 0,
        failed: Vec::new(),
        error: None,
    };
    let rec = match guarded(|| workload::record(base, w, cfg.inject)) {
        Ok(r) => r,
        Err(e) => {
            res.error = Some(format!("recording failed: {e}"));
            return res;
        }
    };
    res.direct = rec.direct;
    let mut seen = HashSet::new();
    let wseed = cfg.seed ^ hash_str(&w.name);
    let at_return = walk(base, w, &rec, |walker, ep| {
        res.points += 1;
        if cfg.max_failures_per_workload > 0 && res.failed.len() >= cfg.max_failures_per_workload {
            return;
        }
        let q = quotas.get(ep.point).copied().unwrap_or(1);
        let win = window(&rec, ep);
        let synced = synced_times(&rec, ep);
        let mut taken = 0u64;
        let mut tries = 0u64;
        let mut it = ep.choices(wseed ^ (ep.point as u64).wrapping_mul(0x9e37_79b9));
        while taken < q && tries < 4 * q + 16 {
            let Some(choice) = it.next() else { break };
            tries += 1;
            // The same image is checked once per window: a later window
            // accepts less (what completed before it must be there).
            if !seen.insert((walker.state_hash(ep, &choice), ep.op_lo, ep.op_hi)) {
                continue;
            }
            taken += 1;
            res.states += 1;
            let img = walker.image(ep, &choice);
            let r = check_image(&img, &win, &synced);
            if let Ok(n) = r {
                res.recovery_states += n;
            }
            if let Err(e) = r {
                res.failures += 1;
                if cfg.max_failures_per_workload == 0
                    || res.failed.len() < cfg.max_failures_per_workload
                {
                    res.failed.push(Failure {
                        workload: w.name.clone(),
                        point: ep.point,
                        fences: ep.fences,
                        ops: ops_label(w, ep),
                        subset: ep.encode(&choice),
                        persisted: ep.persisted_ranges(&choice),
                        error: e,
                    });
                }
                if cfg.max_failures_per_workload > 0
                    && res.failed.len() >= cfg.max_failures_per_workload
                {
                    break;
                }
            }
        }
    });
    res.in_flight_at_return = at_return.into_iter().max().unwrap_or(0);
    res
}

/// Crash states each crash point of a workload wants, and whether the point
/// lies at an operation boundary (its window spans the end of an operation,
/// or it is the end of the last one).
fn wants(base: &Base, w: &Workload, cfg: &Config) -> Result<Vec<(u64, bool)>, String> {
    let rec = guarded(|| workload::record(base, w, cfg.inject))?;
    let mut out = Vec::new();
    walk(base, w, &rec, |_, ep| {
        out.push((ep.wanted(cfg.point_cap), ep.op_lo != ep.op_hi))
    });
    if let Some(last) = out.last_mut() {
        last.1 = true;
    }
    Ok(out)
}

/// Share a workload's budget among its crash points. With fewer states than
/// points, the points at operation boundaries (the prefixes of the
/// operations) get theirs first, then the others in order.
fn point_quotas(wants: &[(u64, bool)], budget: u64) -> Vec<u64> {
    let demands: Vec<u64> = wants.iter().map(|w| w.0).collect();
    if budget >= wants.len() as u64 {
        return water_fill(&demands, budget);
    }
    let mut q = vec![0u64; wants.len()];
    let mut left = budget;
    for boundary in [true, false] {
        for (i, (d, b)) in wants.iter().enumerate() {
            if left > 0 && *b == boundary && *d > 0 && q[i] == 0 {
                q[i] = 1;
                left -= 1;
            }
        }
    }
    q
}

/// Run the harness.
pub fn run(cfg: &Config) -> Result<Summary, String> {
    let t0 = Instant::now();
    let p = crate::util::progress::Progress::steps("crashtest: counting crash points", 0);
    let bases = Bases::make()?;
    let ws = select(all_workloads(&bases)?, &cfg.workload)?;
    // Pass 1: what every crash point wants; share the budget.
    p.set_total(ws.len() as u64);
    let wanted: Vec<Result<Vec<(u64, bool)>, String>> = parallel(ws.len(), cfg.jobs, |i| {
        let r = wants(bases.of(&ws[i]), &ws[i], cfg);
        p.inc(1);
        r
    });
    drop(p);
    let per_w: Vec<u64> = wanted
        .iter()
        .map(|r| r.as_ref().map_or(0, |v| v.iter().map(|x| x.0).sum()))
        .collect();
    let budgets = water_fill(&per_w, cfg.max_states);
    let quotas: Vec<Vec<u64>> = wanted
        .iter()
        .zip(&budgets)
        .map(|(r, b)| match r {
            Ok(v) => point_quotas(v, *b),
            Err(_) => Vec::new(),
        })
        .collect();
    // Pass 2: check.
    let p =
        crate::util::progress::Progress::steps("crashtest: checking workloads", ws.len() as u64);
    let results = parallel(ws.len(), cfg.jobs, |i| {
        let r = check_workload(bases.of(&ws[i]), &ws[i], &quotas[i], cfg);
        p.inc(1);
        r
    });
    drop(p);
    let mut s = Summary {
        workloads: ws.len(),
        seed: cfg.seed,
        max_states: cfg.max_states,
        ..Default::default()
    };
    for (w, r) in ws.iter().zip(results) {
        s.crash_points += r.points;
        s.direct.add(r.direct);
        s.crash_states += r.states;
        s.recovery_states += r.recovery_states;
        s.in_flight_at_return = s.in_flight_at_return.max(r.in_flight_at_return);
        s.failures += r.failures;
        if let Some(e) = r.error {
            s.failures += 1;
            s.failed.push(Failure {
                workload: w.name.clone(),
                point: 0,
                fences: 0,
                ops: String::new(),
                subset: "none".into(),
                persisted: Vec::new(),
                error: e,
            });
        }
        if !r.failed.is_empty() || r.failures > 0 {
            s.failed_workloads.push(w.name.clone());
        }
        s.failed.extend(r.failed);
    }
    if s.failed_workloads.is_empty() && !s.failed.is_empty() {
        s.failed_workloads = s.failed.iter().map(|f| f.workload.clone()).collect();
        s.failed_workloads.dedup();
    }
    s.seconds = t0.elapsed().as_secs_f64();
    Ok(s)
}

/// Re-run one crash state from its reproducer; describes what happened.
pub fn replay(repro: &str, inject: Option<Bug>) -> Result<String, String> {
    let (name, rest) = repro
        .split_once('@')
        .ok_or("a reproducer reads WORKLOAD@POINT:SUBSET")?;
    let (point, subset) = rest
        .split_once(':')
        .ok_or("a reproducer reads WORKLOAD@POINT:SUBSET")?;
    let point: usize = point.parse().map_err(|_| "bad crash point number")?;
    let bases = Bases::make()?;
    let w = select(all_workloads(&bases)?, name)?.remove(0);
    let base = bases.of(&w);
    let rec = guarded(|| workload::record(base, &w, inject))?;
    let mut out = None;
    walk(base, &w, &rec, |walker, ep| {
        if ep.point != point {
            return;
        }
        let r = ep.decode(subset).map(|choice| {
            let img = walker.image(ep, &choice);
            let win = window(&rec, ep);
            let desc = format!(
                "workload {}\ncrash point {} (after {} fences; during {}), {} units in flight, persisted {:?}\nacceptable states: after operations {}..={}\n",
                w.name,
                ep.point,
                ep.fences,
                ops_label(&w, ep),
                ep.units.len(),
                ep.persisted_ranges(&choice),
                ep.op_lo.max(1) - 1,
                ep.op_hi
            );
            (desc, check_image(&img, &win, &synced_times(&rec, ep)).map(|_| ()))
        });
        out = Some(r);
    });
    match out {
        None => Err(format!("workload {} has no crash point {point}", w.name)),
        Some(Err(e)) => Err(e),
        Some(Ok((desc, Ok(())))) => Ok(format!("{desc}result: ok")),
        Some(Ok((desc, Err(e)))) => Err(format!("{desc}result: FAILED: {e}")),
    }
}
