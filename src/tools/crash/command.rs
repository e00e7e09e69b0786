//! `daxlink crashtest`: its arguments and the command (list, replay or run,
//! and the summary it prints).

#![forbid(unsafe_code)]

use super::*;

/// `daxlink crashtest` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CrashArgs {
    /// Workload: all, seq0, seq1, seq2, big, direct, an exact name (see --list) or a prefix ending in '*'.
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// Crash states to check in the whole run at most.
    #[arg(long, default_value_t = 20_000)]
    pub max_states: u64,
    /// Seed of the sampled crash states (default: from the clock; always printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
    /// Re-run one crash state: WORKLOAD@POINT:SUBSET as printed for a failure.
    #[arg(long)]
    pub replay: Option<String>,
    /// Crash states per crash point at most.
    #[arg(long, default_value_t = 64)]
    pub per_point: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Inject a known bug (skip-flush, skip-fence, dirent-in-place,
    /// apply-before-commit, no-intent, fsync-no-times, direct-skip-flush,
    /// direct-skip-fence, direct-wrong-block, direct-stale-map) to see the
    /// harness catch it.
    #[arg(long)]
    pub inject: Option<String>,
    /// List the workloads and exit.
    #[arg(long)]
    pub list: bool,
}

/// Run `daxlink crashtest`; returns the exit status (0 no failure, 1 failures, 2 usage).
pub fn cli(a: CrashArgs) -> i32 {
    crate::util::progress::enable_on_terminal();
    let inject = match a.inject.as_deref().map(|s| (s, Bug::parse(s))) {
        None => None,
        Some((_, Some(b))) => Some(b),
        Some((s, None)) => {
            eprintln!(
                "daxlink crashtest: unknown bug {s:?} (one of: {})",
                Bug::ALL.map(|b| b.name()).join(", ")
            );
            return 2;
        }
    };
    if a.list {
        let r = Bases::make().and_then(|b| all_workloads(&b));
        return match r.and_then(|all| select(all, &a.workload)) {
            Ok(ws) => {
                for w in ws {
                    crate::outln!("{}", w.name);
                }
                0
            }
            Err(e) => {
                eprintln!("daxlink crashtest: {e}");
                2
            }
        };
    }
    if let Some(r) = a.replay {
        return match replay(&r, inject) {
            Ok(s) => {
                crate::outln!("{s}");
                0
            }
            Err(e) => {
                crate::outln!("{e}");
                1
            }
        };
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let cfg = Config {
        workload: a.workload,
        max_states: a.max_states,
        seed,
        point_cap: a.per_point,
        jobs: a.jobs,
        inject,
        ..Config::default()
    };
    if !a.json {
        eprintln!(
            "crashtest: seed {seed}, at most {} crash states{}",
            cfg.max_states,
            inject
                .map(|b| format!(", injected bug {}", b.name()))
                .unwrap_or_default()
        );
    }
    let s = match run(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("daxlink crashtest: {e}");
            return 2;
        }
    };
    if a.json {
        crate::outln!("{}", s.to_json());
    } else {
        for f in &s.failed {
            crate::outln!(
                "FAIL {} (crash point {}, during {}): {}",
                f.workload,
                f.point,
                f.ops,
                f.error
            );
            crate::outln!("  persisted beyond the durable image: {:?}", f.persisted);
            crate::outln!(
                "  replay: daxlink crashtest{} --replay '{}'",
                inject
                    .map(|b| format!(" --inject {}", b.name()))
                    .unwrap_or_default(),
                f.repro()
            );
        }
        crate::outln!(
            "workloads: {}  crash points: {}  crash states: {} (+{} in recovery)  failures: {} (in {})  in flight at return: {}  seed: {}  {:.1}s",
            s.workloads,
            s.crash_points,
            s.crash_states,
            s.recovery_states,
            s.failures,
            crate::util::progress::plural(s.failed_workloads.len() as u64, "workload", "workloads"),
            s.in_flight_at_return,
            s.seed,
            s.seconds
        );
    }
    if s.failures == 0 {
        0
    } else {
        1
    }
}
