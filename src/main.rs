//! The `daxlink` command: mount (also in the mount.fuse3 form `daxlink IMAGE DIR -o OPTS`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use daxlink::mount::{mount_main, parse_opts, MountOpts};

#[derive(Parser)]
#[command(
    name = "daxlink",
    version,
    about = "daxlink: a persistent-memory filesystem with reflink, served through FUSE"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount IMAGE (an image file, /dev/pmemN or /dev/daxN.M) on DIR.
    Mount {
        image: PathBuf,
        dir: PathBuf,
        /// Mount options: page_model=proxy|upstream|legacy, threads=N,
        /// persist=cpu|msync, ro, allow_other, and the standard ones.
        #[arg(short = 'o', action = clap::ArgAction::Append)]
        options: Vec<String>,
        /// Stay in the foreground.
        #[arg(short = 'f', long)]
        foreground: bool,
    },
}

const SUBCOMMANDS: &[&str] = &["mount", "help", "-h", "--help", "-V", "--version"];

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args: Vec<String> = std::env::args().collect();
    // mount.fuse3 calls `daxlink SOURCE DIR -o opts`.
    if args.len() >= 3 && !SUBCOMMANDS.contains(&args[1].as_str()) {
        args.insert(1, "mount".into());
    }
    let cli = Cli::parse_from(args);
    let code = match cli.cmd {
        Cmd::Mount {
            image,
            dir,
            options,
            foreground,
        } => {
            let raw = options.join(",");
            let mut o = MountOpts::default();
            if let Err(e) = parse_opts(&mut o, &raw) {
                eprintln!("daxlink: {e}");
                std::process::exit(1);
            }
            mount_main(image, dir, &raw, o, foreground)
        }
    };
    std::process::exit(code);
}
