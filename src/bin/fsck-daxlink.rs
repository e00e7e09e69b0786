//! fsck-daxlink: check and repair a daxlink image that is not mounted.
//!
//! Options as fsck(8) passes them: `-n` check only (image mapped read-only),
//! `-y` repair everything, `-a`/`-p` (preen) = `-y`, `-f` accepted and ignored
//! (every run is a full check). Without `-n` or `-y` it only checks, like `-n`.
//! The image is locked as a mount locks it: a repair run needs it unused, a
//! check-only run shares it with read-only mounts; otherwise exit 8 and one line
//! naming the process holding it.
//! It names itself as invoked (`fsck.daxlink` when installed) and shows a
//! progress bar on stderr when that is a terminal.
//! Exit status: 0 clean, 1 errors corrected, 4 errors left, 8 operational
//! error, 16 usage error.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

#[derive(Parser, Debug)]
#[command(
    name = "fsck-daxlink",
    version,
    about = "Check (and with -y repair) a daxlink filesystem image that is not mounted",
    after_help = "Exit status: 0 clean, 1 errors corrected, 4 errors left uncorrected, 8 operational error, 16 usage error."
)]
struct Args {
    /// Check only; open the image read-only and answer "no" to every repair.
    #[arg(short = 'n', conflicts_with_all = ["yes", "preen", "auto"])]
    no: bool,
    /// Repair every problem found.
    #[arg(short = 'y')]
    yes: bool,
    /// Preen (automatic repair), as fsck(8) -p: same as -y.
    #[arg(short = 'p')]
    preen: bool,
    /// Automatic repair, as fsck(8) -a: same as -y.
    #[arg(short = 'a')]
    auto: bool,
    /// Force a check (accepted for fsck(8); every run is a full check).
    #[arg(short = 'f')]
    force: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// The image file or device.
    image: PathBuf,
}

fn main() -> ExitCode {
    let prog = daxlink::util::out::invoked_name("fsck.daxlink");
    daxlink::media::lock::on_wait(daxlink::util::out::stderr_notice);
    let parsed = Args::command()
        .bin_name(&prog)
        .display_name(&prog)
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m));
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { 16 } else { 0 });
        }
    };
    let _ = args.force; // every run is a full check
    let repair = (args.yes || args.preen || args.auto) && !args.no;
    let name = args.image.display().to_string();
    if !args.json && daxlink::util::progress::enable_on_terminal() {
        eprintln!(
            "{prog}: checking {name}{}",
            if repair { " (repairing)" } else { "" }
        );
    }
    let report = daxlink::tools::fsck::check_path(&args.image, repair);
    if args.json {
        daxlink::outln!("{}", report.to_json(&name));
    } else {
        for n in &report.notes {
            daxlink::outln!("note: {n}");
        }
        for f in &report.findings {
            daxlink::outln!("{}", f.line(repair));
        }
        if report.error.is_some() {
            eprintln!("{prog}: {}", report.summary(&name));
        } else {
            daxlink::outln!("{}", report.summary(&name));
            if let Some(a) = report.advice(&name, &prog) {
                daxlink::outln!("{a}");
            }
        }
    }
    ExitCode::from(report.exit_code() as u8)
}
