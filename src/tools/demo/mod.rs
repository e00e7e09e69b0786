//! `daxlink demo`: the dax-reflink pinning problem, scenarios S1-S9 of
//! docs/KERNEL.md section 3, run through a mounted daxlink with real
//! syscalls under each page model, with invariants 1-7 checked after every
//! step. Every step also records the page model's state after it (the
//! daemon's `Fs::snapshot`), which `daxlink demo --report` draws
//! (`crate::tools::report`).

#![forbid(unsafe_code)]

mod device;
mod mount;
pub mod scenarios;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::{json, Value};

use crate::fuse::ioctl::SNAPSHOT_EXTRA_MAX;
use crate::pages::PageModel;
use crate::tools::client;
use mount::DemoMount;
pub use scenarios::{Scenario, SCENARIOS};

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

/// What the device did through a pin during a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub pin: u64,
    pub write: bool,
    /// False when the model refused it (a write through a read pin).
    pub accepted: bool,
    /// `--real`: the process that stored through its direct mapping.
    pub process: Option<u32>,
}

/// One step of a scenario as it ran.
#[derive(Clone, Debug)]
pub struct Step {
    pub text: String,
    /// Invariants that broke at this step (first seen here).
    pub breaks: Vec<u8>,
    /// A layout change waited and failed (EBUSY) or a pin was refused here.
    pub stopped: bool,
    pub device: Option<Device>,
    /// The page model after the step (`Fs::snapshot`); `None` if the
    /// daemon could not give it.
    pub state: Option<Value>,
}

impl Step {
    /// The step as the table and `--json` print it.
    pub fn line(&self) -> String {
        if self.breaks.is_empty() {
            self.text.clone()
        } else {
            format!("{}  [breaks {}]", self.text, list(&self.breaks))
        }
    }
}

pub struct ScenarioResult {
    pub scenario: &'static str,
    pub model: PageModel,
    pub outcome: Outcome,
    pub violated: BTreeSet<u8>,
    pub steps: Vec<Step>,
    pub kernel: &'static str,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn free_blocks(p: &Path) -> u64 {
    client::stat(p).map(|s| s.free_bytes / BS).unwrap_or(0)
}

/// Runs one scenario, recording steps, observed violations and snapshots.
pub(crate) struct Run<'a> {
    m: &'a mut DemoMount,
    steps: Vec<Step>,
    violated: BTreeSet<u8>,
    blocked: bool,
    refused: bool,
    /// The next step is where something was refused or waited in vain.
    stop_pending: bool,
    device: Option<Device>,
    /// Every block an earlier snapshot showed: later ones describe them too.
    seen: BTreeSet<u64>,
    /// `--real`: write pins are real processes' direct mappings.
    real: bool,
    holders: Vec<device::Holder>,
    /// Said at the next step (who holds a pin just made).
    note: Option<String>,
}

impl Run<'_> {
    fn push(&mut self, mut text: String, breaks: Vec<u8>) {
        if let Some(n) = self.note.take() {
            text = format!("{text} [{n}]");
        }
        let extra: Vec<u64> = self.seen.iter().copied().take(SNAPSHOT_EXTRA_MAX).collect();
        let state = client::snapshot(&self.m.dir, &extra).ok();
        if let Some(bs) = state.as_ref().and_then(|s| s["blocks"].as_array()) {
            self.seen
                .extend(bs.iter().filter_map(|b| b["block"].as_u64()));
        }
        self.steps.push(Step {
            text,
            breaks,
            stopped: std::mem::take(&mut self.stop_pending),
            device: self.device.take(),
            state,
        });
    }

    fn step(&mut self, s: impl Into<String>) {
        // Invariants the daemon can see (1, 3, 4, 6, 7 and the sticky 2, 5).
        let new: Vec<u8> = match client::check(&self.m.dir) {
            Ok(v) => v.into_iter().filter(|i| self.violated.insert(*i)).collect(),
            Err(_) => Vec::new(),
        };
        self.push(s.into(), new);
    }

    fn broke(&mut self, inv: &[u8], s: impl Into<String>) {
        self.violated.extend(inv.iter().copied());
        self.push(s.into(), inv.to_vec());
    }

    fn mark_blocked(&mut self) {
        self.blocked = true;
        self.stop_pending = true;
    }

    fn mark_refused(&mut self) {
        self.refused = true;
        self.stop_pending = true;
    }

    /// Pin the first block of `name` (open as `f`). With `--real`, a write
    /// pin that is not long-term is a real process's direct mmap.
    fn pin(&mut self, f: &File, name: &str, write: bool, longterm: bool) -> io::Result<u64> {
        if !(self.real && write && !longterm) {
            return client::pin(f, 0, BS, write, longterm);
        }
        let h = device::Holder::start(&self.m.p(name))?;
        self.note = Some(format!("held by {}: its direct mmap of {name}", h.who()));
        let pin = h.pin;
        self.holders.push(h);
        Ok(pin)
    }

    fn unpin(&mut self, f: &File, h: u64) -> io::Result<()> {
        match self.holders.iter().position(|x| x.pin == h) {
            Some(i) => {
                let x = self.holders.remove(i);
                self.note = Some(format!("{} munmaps and exits", x.who()));
                x.unmap()
            }
            None => client::unpin(f, h),
        }
    }

    /// Kill the daemon and mount again; a holder process is killed first
    /// (its pin ends with it, as the ioctl's pin ends with the daemon).
    fn crash_and_remount(&mut self) -> io::Result<()> {
        for mut h in self.holders.drain(..) {
            self.note = Some(format!("{} was killed first", h.who()));
            h.kill();
        }
        self.m.crash_and_remount()
    }

    /// The device writes `data` at the start of the pinned range.
    fn dma_write(&mut self, f: &File, h: u64, data: &[u8]) -> io::Result<()> {
        if let Some(x) = self.holders.iter_mut().find(|x| x.pin == h) {
            let r = x.store(data);
            self.note = Some(format!("{} stores through its mapping", x.who()));
            self.device = Some(Device {
                pin: h,
                write: true,
                accepted: r.is_ok(),
                process: Some(x.pid()),
            });
            return r;
        }
        let r = client::dma_write(f, h, 0, data);
        self.device = Some(Device {
            pin: h,
            write: true,
            accepted: r.is_ok(),
            process: None,
        });
        r
    }

    /// The device reads `len` bytes at the start of the pinned range.
    fn dma_read(&mut self, f: &File, h: u64, len: usize) -> io::Result<Vec<u8>> {
        let r = client::dma_read(f, h, 0, len);
        self.device = Some(Device {
            pin: h,
            write: false,
            accepted: r.is_ok(),
            process: None,
        });
        r
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
        client::reflink(&self.m.p(src), &self.m.p(dst), 0, 0, 0)
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

pub fn run_scenario(idx: usize, model: PageModel, real: bool) -> io::Result<ScenarioResult> {
    let sc = &SCENARIOS[idx];
    let mut m = DemoMount::new(&format!("{}-{}", sc.name, model.name()), model)?;
    let mut r = Run {
        m: &mut m,
        steps: Vec::new(),
        violated: BTreeSet::new(),
        blocked: false,
        refused: false,
        stop_pending: false,
        device: None,
        seen: BTreeSet::new(),
        real,
        holders: Vec::new(),
        note: None,
    };
    (sc.run)(&mut r)?;
    // A last check: kept as a step only if it finds something new.
    r.step("end");
    if r.steps.last().is_some_and(|s| s.breaks.is_empty()) {
        r.steps.pop();
    }
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
        scenario: sc.name,
        model,
        outcome,
        violated: r.violated,
        steps: r.steps,
        kernel: sc.kernel,
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

/// The `--json` document. With `frames`, each result also carries its steps
/// as recorded (`frames`: text, breaks, stopped, device, state), which is
/// what the report draws; the rest is the same.
pub fn to_json(results: &[ScenarioResult], ok: bool, frames: bool) -> Value {
    let v: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut j = json!({
                "scenario": r.scenario, "model": r.model.name(), "outcome": r.outcome.name(),
                "violated": r.violated.iter().collect::<Vec<_>>(),
                "steps": r.steps.iter().map(Step::line).collect::<Vec<_>>(),
                "kernel": r.kernel,
            });
            if frames {
                j["frames"] = r
                    .steps
                    .iter()
                    .map(|s| {
                        json!({
                            "text": s.text, "breaks": s.breaks, "stopped": s.stopped,
                            "device": s.device.as_ref().map(|d| json!({
                                "pin": d.pin, "write": d.write, "accepted": d.accepted,
                                "process": d.process,
                            })),
                            "state": s.state,
                        })
                    })
                    .collect();
            }
            j
        })
        .collect();
    json!({ "results": v, "ok": ok })
}

/// `daxlink demo`: runs every scenario under each of `models` and prints the
/// table (or, with `json`, one JSON document). Returns the results and
/// whether every model behaved as expected; `Err` holds the exit status
/// after a scenario could not run. The HTML report is `tools::report`'s,
/// written from these results by the command.
pub fn main(
    models: &[PageModel],
    json: bool,
    verbose: bool,
    real: bool,
) -> Result<(Vec<ScenarioResult>, bool), i32> {
    let mut results: Vec<ScenarioResult> = Vec::new();
    for model in models {
        for (i, sc) in SCENARIOS.iter().enumerate() {
            match run_scenario(i, *model, real) {
                Ok(r) => results.push(r),
                Err(e) => {
                    eprintln!("daxlink demo: {} under {}: {e}", sc.name, model.name());
                    return Err(2);
                }
            }
        }
    }
    let ok = models.iter().all(|m| {
        let rs: Vec<&ScenarioResult> = results.iter().filter(|r| r.model == *m).collect();
        model_ok(*m, &rs)
    });
    if json {
        crate::outln!("{}", to_json(&results, ok, false));
    } else {
        crate::out!("{}", table(models, &results, verbose));
        crate::outln!();
        for m in models {
            let rs: Vec<&ScenarioResult> = results.iter().filter(|r| r.model == *m).collect();
            let expect = match m {
                PageModel::Legacy => "breaks invariants in at least 6 scenarios",
                PageModel::Upstream => "never corrupts (blocks or refuses instead)",
                PageModel::Proxy => "safe in all nine",
            };
            crate::outln!(
                "{:<9} {}: {}",
                m.name(),
                expect,
                if model_ok(*m, &rs) { "yes" } else { "NO" }
            );
        }
    }
    Ok((results, ok))
}

/// Lay out rows of cells in columns as wide as their widest cell, two
/// spaces apart, so no two cells ever run together.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let w: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w[c] - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn cell(r: Option<&ScenarioResult>) -> String {
    match r {
        Some(r) if r.violated.is_empty() => r.outcome.name().to_string(),
        Some(r) => format!(
            "{} (breaks {})",
            r.outcome.name(),
            list(&r.violated.iter().copied().collect::<Vec<_>>())
        ),
        None => "-".into(),
    }
}

fn table(models: &[PageModel], results: &[ScenarioResult], verbose: bool) -> String {
    let mut out = String::new();
    out.push_str(
        "The dax-reflink pinning problem, reproduced on daxlink (invariants: docs/KERNEL.md section 3)\n",
    );
    out.push_str(
        "  1 no reuse while pinned  2 pin isolation  3 write pins exclusive  4 complete rmap\n",
    );
    out.push_str("  5 poison reaches everyone  6 dirty attribution  7 refcount conservation\n\n");
    let find =
        |name: &str, m: PageModel| results.iter().find(|r| r.scenario == name && r.model == m);
    let mut head = vec![String::new(), "scenario".to_string()];
    head.extend(models.iter().map(|m| m.name().to_string()));
    let mut rows = vec![head];
    for sc in SCENARIOS {
        let mut row = vec![sc.name.to_string(), sc.what.to_string()];
        row.extend(models.iter().map(|m| cell(find(sc.name, *m))));
        rows.push(row);
    }
    let t = columns(&rows);
    if !verbose {
        out.push_str(&t);
        return out;
    }
    // Verbose: the header, then each scenario's row, kernel code and steps.
    out.push_str(t.lines().next().unwrap_or(""));
    out.push('\n');
    for (line, sc) in t.lines().skip(1).zip(SCENARIOS) {
        out.push_str(line);
        out.push('\n');
        out.push_str(&format!("     kernel: {}\n", sc.kernel));
        for m in models {
            if let Some(r) = find(sc.name, *m) {
                out.push_str(&format!("     {}:\n", m.name()));
                for s in &r.steps {
                    out.push_str(&format!("       - {}\n", s.line()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::columns;

    #[test]
    fn columns_never_run_together() {
        let rows = vec![
            vec!["S3".to_string(), "a long description".into(), "x".into()],
            vec![
                "S10".to_string(),
                "short".into(),
                "corrupted (breaks 2)".into(),
            ],
        ];
        let t = columns(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "S3   a long description  x");
        assert_eq!(lines[1], "S10  short               corrupted (breaks 2)");
    }
}
