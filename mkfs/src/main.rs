//! mkfs-daxlink [--size SIZE] [--force] [--label L] IMAGE
//!
//! Names itself as invoked (`mkfs.daxlink` when installed) and shows a progress
//! bar on stderr when that is a terminal.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};
use daxlink::format::BLOCK_SIZE;
use daxlink::fs::make::MkfsOptions;
use daxlink::tools::mkfs::{mkfs_image, parse_size};

#[derive(Parser)]
#[command(
    name = "mkfs-daxlink",
    version,
    about = "Make a daxlink filesystem on an image file or pmem device"
)]
struct Args {
    /// Size of the image to create (e.g. 512M, 4G); needed when IMAGE does not exist.
    #[arg(short, long, value_parser = parse_size_arg)]
    size: Option<u64>,
    /// Format over an existing daxlink filesystem or another filesystem's
    /// signature (ext2/3/4, xfs, btrfs, swap, ...), which mkfs otherwise refuses.
    #[arg(short, long)]
    force: bool,
    /// Volume label (up to 64 bytes).
    #[arg(short = 'L', long, default_value = "")]
    label: String,
    /// Number of inodes (default: one per 16 KiB).
    #[arg(short = 'N', long)]
    inodes: Option<u64>,
    /// Do not print the geometry or a progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Leave an image file on a disk filesystem sparse (default: allocate all
    /// of it, so that no store into the mapping lands in a hole that the disk
    /// may have no room for).
    #[arg(long)]
    sparse: bool,
    /// The image file (created with --size, mode 0600, if it does not exist;
    /// an existing one is formatted at its size unless --size is given) or a
    /// pmem device (/dev/pmemN, /dev/daxN.M).
    image: PathBuf,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("bad size '{s}' (examples: 512M, 4G, 1048576)"))
}

fn main() {
    let prog = daxlink::util::out::invoked_name("mkfs.daxlink");
    daxlink::media::lock::on_wait(daxlink::util::out::stderr_notice);
    let a = Args::command()
        .bin_name(&prog)
        .display_name(&prog)
        .get_matches();
    let a = Args::from_arg_matches(&a).unwrap_or_else(|e| e.exit());
    if a.label.len() > 64 {
        eprintln!("{prog}: label is longer than 64 bytes");
        std::process::exit(1);
    }
    if !a.quiet {
        daxlink::util::progress::enable_on_terminal();
    }
    let o = MkfsOptions {
        label: a.label.clone(),
        inodes: a.inodes,
        journal_blocks: None,
        // SAFETY-free: the caller's ids own the root directory, as mkfs.ext4 does.
        root_uid: nix_ids().0,
        root_gid: nix_ids().1,
        sparse: a.sparse,
    };
    match mkfs_image(&a.image, a.size, a.force, &o) {
        Ok(made) => {
            for w in &made.warnings {
                eprintln!("{prog}: warning: {w}");
            }
            let sb = made.sb;
            if !a.quiet {
                let mib = |b: u64| b * BLOCK_SIZE / (1 << 20);
                daxlink::outln!("daxlink filesystem on {}", a.image.display());
                daxlink::outln!("  label       {:?}", sb.label);
                daxlink::outln!(
                    "  uuid        {}",
                    sb.uuid
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                );
                daxlink::outln!("  block size  {BLOCK_SIZE}");
                daxlink::outln!(
                    "  blocks      {} ({} MiB)",
                    sb.total_blocks,
                    mib(sb.total_blocks)
                );
                daxlink::outln!(
                    "  journal     {} blocks at {}",
                    sb.journal_blocks,
                    sb.journal_start
                );
                daxlink::outln!(
                    "  inodes      {} ({} blocks at {})",
                    sb.inode_count,
                    sb.inode_blocks(),
                    sb.inode_start
                );
                daxlink::outln!(
                    "  bitmap      {} blocks at {}",
                    sb.bitmap_blocks,
                    sb.bitmap_start
                );
                daxlink::outln!(
                    "  data        {} blocks ({} MiB) from block {}",
                    sb.data_blocks(),
                    mib(sb.data_blocks()),
                    sb.data_start
                );
            }
        }
        Err(e) => {
            eprintln!("{prog}: {e}");
            std::process::exit(1);
        }
    }
}

fn nix_ids() -> (u32, u32) {
    // getuid/getgid cannot fail.
    (
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap_or(0),
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
            .unwrap_or(0),
    )
}
