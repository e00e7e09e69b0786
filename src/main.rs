//! The `daxlink` command: mount (also in the mount.fuse3 form `daxlink IMAGE DIR -o OPTS`).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use daxlink::tools::client;
use daxlink::tools::mount::mount_main;
use daxlink::tools::mount::opts::{parse_opts, MountOpts};
use daxlink::util::progress::plural;

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
        /// The image file or pmem device holding the filesystem.
        image: PathBuf,
        /// The directory to mount on.
        dir: PathBuf,
        /// Mount options, comma-separated (docs/USAGE.md lists each): threads=N (FUSE
        /// worker threads, 1 to 64; default one per CPU, 2 to 16), cache=keep|open
        /// (default keep), writeback (off by default), transport=dev|uring (default
        /// dev), persist=cpu|msync|auto, ro, rw, norecovery (or noload; with ro:
        /// no journal replay or orphan reclaim, nothing written), allow_other,
        /// allow_root, page_model=proxy|upstream|legacy (default proxy),
        /// layout_timeout_ms=N (default 2000), max_pins=N (default
        /// 65536), max_pinned=BYTES (K, M, G; default 1G), max_pins_per_user=N
        /// (default 16384), max_pinned_per_user=BYTES (default 256M; the
        /// per-user caps spare CAP_IPC_LOCK), relatime (default),
        /// strictatime, noatime, nodiratime, lazytime, dev, nodev, suid, nosuid,
        /// exec, noexec, sync, dirsync, direct=on|off (default on: direct access
        /// for processes that can write the image), recall_timeout_ms=N
        /// (default 5000).
        #[arg(short = 'o', action = clap::ArgAction::Append)]
        options: Vec<String>,
        /// Stay in the foreground.
        #[arg(short = 'f', long)]
        foreground: bool,
    },
    /// Remount the daxlink filesystem on DIR: `-o ro` or `-o rw` (what
    /// `mount -o remount,ro DIR` does through mount.fuse3).
    Remount {
        /// The mount point of a daxlink filesystem.
        dir: PathBuf,
        /// ro or rw (and the kernel's flags: nosuid, nodev, noexec, sync, dirsync).
        #[arg(short = 'o', action = clap::ArgAction::Append)]
        options: Vec<String>,
    },
    /// Share SRC's blocks with DST (FICLONERANGE semantics; creates DST if missing).
    /// `cp --reflink=always` cannot work on FUSE: the kernel never forwards FICLONE.
    Reflink {
        /// The file whose blocks are shared (opened for reading).
        src: PathBuf,
        /// The file that receives them (opened for writing).
        dst: PathBuf,
        /// Byte offset in SRC (a multiple of 4096).
        #[arg(long, default_value_t = 0)]
        src_offset: u64,
        /// Byte offset in DST (a multiple of 4096).
        #[arg(long, default_value_t = 0)]
        dst_offset: u64,
        /// Bytes to clone; 0 = to the end of SRC.
        #[arg(long, default_value_t = 0)]
        length: u64,
    },
    /// Share a range of DST with SRC where both hold identical bytes (FIDEDUPERANGE semantics).
    Dedupe {
        /// The file whose blocks are shared (opened for reading).
        src: PathBuf,
        /// The file that receives them (opened for writing).
        dst: PathBuf,
        /// Byte offset in SRC (a multiple of 4096).
        #[arg(long)]
        src_offset: u64,
        /// Byte offset in DST (a multiple of 4096).
        #[arg(long)]
        dst_offset: u64,
        /// Bytes to compare and share.
        #[arg(long)]
        length: u64,
    },
    /// Give FILE private copies of its shared blocks.
    Unshare {
        /// A file on a daxlink filesystem.
        file: PathBuf,
        /// Byte offset in FILE.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// 0 = to the end of the file.
        #[arg(long, default_value_t = 0)]
        length: u64,
    },
    /// Show FILE's extents: logical offset, physical block, length, shared flag, refcount.
    Extents {
        /// A file on a daxlink filesystem.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pin a range of FILE (pin_user_pages, as an RDMA registration would) and hold it.
    Pin {
        /// A file on a daxlink filesystem.
        file: std::path::PathBuf,
        /// Byte offset in FILE.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Bytes to pin.
        #[arg(long, default_value_t = 4096)]
        length: u64,
        /// A write pin (the device will write).
        #[arg(long)]
        write: bool,
        /// A long-term pin (FOLL_LONGTERM; refused by the upstream model, which
        /// also refuses any pin of a file the caller may not open for writing).
        #[arg(long)]
        longterm: bool,
        /// Seconds to hold the pin (default: until interrupted).
        #[arg(long)]
        hold: Option<u64>,
    },
    /// Reverse map: every (inode, path, offset) mapping the block under FILE at OFFSET, and its pins.
    Owners {
        /// A file on a daxlink filesystem.
        file: std::path::PathBuf,
        /// Byte offset in FILE.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Memory failure of the block under FILE at OFFSET (the owners the page model reaches get EIO).
    Poison {
        /// A file on a daxlink filesystem.
        file: std::path::PathBuf,
        /// Byte offset in FILE.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Run scenarios S1-S9 of the pinning problem under the page models and print what happened.
    Demo {
        /// legacy, upstream, proxy or all.
        #[arg(long, default_value = "all")]
        page_model: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print every step of every scenario.
        #[arg(short, long)]
        verbose: bool,
        /// Also write a self-contained HTML report (index.html, with a picture of
        /// every step) and the JSON it is drawn from (demo.json) into DIR, and
        /// print the page's path.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// The device is a real process (daxlink-holder, next to daxlink): a
        /// write pin is its direct mmap of the file and it stores through
        /// it, instead of the simulated DMA_WRITE ioctl.
        #[arg(long)]
        real: bool,
    },
    /// Show sharing statistics of the filesystem holding PATH.
    Stat {
        /// Any path on a daxlink filesystem.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Requests the daemon of the mount on DIR received, per FUSE opcode
    /// (since mount or the last --reset). CAP_SYS_ADMIN or the owner of DIR.
    Counters {
        /// The mount point (the root of a daxlink mount).
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Zero the counters after reading them.
        #[arg(long)]
        reset: bool,
    },
    /// Crash-consistency test: record workloads, enumerate crash states, check each.
    Crashtest(daxlink::tools::crash::CrashArgs),
    /// Run CMD with direct access (the libdaxlink_client.so shim preloaded):
    /// its reads and overwrites of daxlink files are loads and stores into
    /// the image when the mount offers it and this user may write the image.
    Run {
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<std::ffi::OsString>,
    },
}

fn fail(what: &str, e: std::io::Error) -> i32 {
    eprintln!("daxlink {what}: {e}");
    1
}

const SUBCOMMANDS: &[&str] = &[
    "mount",
    "pin",
    "owners",
    "poison",
    "demo",
    "reflink",
    "dedupe",
    "unshare",
    "extents",
    "remount",
    "stat",
    "counters",
    "crashtest",
    "run",
    "help",
    "-h",
    "--help",
    "-V",
    "--version",
];

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    daxlink::media::lock::on_wait(daxlink::util::out::stderr_notice);
    let mut args: Vec<String> = std::env::args().collect();
    if daxlink::util::out::invoked_name("daxlink") == "mount.daxlink" {
        args = mount_helper_args(&args);
    }
    // mount.fuse3 calls `daxlink SOURCE DIR -o opts`.
    if args.len() >= 3 && !SUBCOMMANDS.contains(&args[1].as_str()) {
        args.insert(1, "mount".into());
    }
    let is_mount = args.get(1).map(String::as_str) == Some("mount");
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if is_mount && e.use_stderr() => {
            // Every failure of `daxlink mount` is exit 32 and one line, as mount(8) expects.
            eprintln!("daxlink mount: {}", one_line(&e.render().to_string()));
            std::process::exit(32);
        }
        Err(e) => e.exit(),
    };
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
                std::process::exit(32);
            }
            mount_main(image, dir, &raw, o, foreground)
        }
        Cmd::Remount { dir, options } => {
            daxlink::tools::mount::remount::remount_main(&dir, &options.join(","))
        }
        Cmd::Reflink {
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } => match client::reflink_described(&src, &dst, src_offset, dst_offset, length) {
            Ok(n) => {
                daxlink::outln!("cloned {}", plural(n, "byte", "bytes"));
                0
            }
            Err(e) => fail("reflink", e),
        },
        Cmd::Dedupe {
            src,
            dst,
            src_offset,
            dst_offset,
            length,
        } => match client::dedupe(&src, &dst, src_offset, dst_offset, length) {
            Ok((true, n)) => {
                daxlink::outln!("deduped {}", plural(n, "byte", "bytes"));
                0
            }
            Ok((false, _)) => {
                daxlink::outln!("contents differ: nothing deduped");
                0
            }
            Err(e) => fail("dedupe", e),
        },
        Cmd::Unshare {
            file,
            offset,
            length,
        } => match client::unshare(&file, offset, length) {
            Ok(()) => 0,
            Err(e) => fail("unshare", e),
        },
        Cmd::Extents { file, json } => match client::extents(&file) {
            Ok(e) => {
                daxlink::out!("{}", client::extents_report(&e, json));
                if json {
                    daxlink::outln!();
                }
                0
            }
            Err(e) => fail("extents", e),
        },
        Cmd::Pin {
            file,
            offset,
            length,
            write,
            longterm,
            hold,
        } => pin_cmd(&file, offset, length, write, longterm, hold),
        Cmd::Owners { file, offset, json } => match client::owners(&file, offset) {
            Ok(v) => {
                if json {
                    daxlink::outln!("{v}");
                } else {
                    daxlink::outln!(
                        "block {}{}",
                        v["block"],
                        if v["poisoned"] == true {
                            " (poisoned)"
                        } else {
                            ""
                        }
                    );
                    for o in v["owners"].as_array().into_iter().flatten() {
                        daxlink::outln!(
                            "  owner inode {} offset {} {}",
                            o["inode"],
                            o["offset"],
                            o["path"].as_str().unwrap_or("(no path you can look up)")
                        );
                    }
                    if let Some(n) = v["hidden_owners"].as_u64().filter(|n| *n > 0) {
                        daxlink::outln!(
                            "  and {} you may not read",
                            plural(n, "other owner", "other owners")
                        );
                    }
                    for l in v["leases"].as_array().into_iter().flatten() {
                        daxlink::outln!(
                            "  lease {} inode {} pid {} {}",
                            l["id"],
                            l["inode"],
                            l["pid"],
                            if l["write"] == true { "write" } else { "read" },
                        );
                    }
                    for p in v["pins"].as_array().into_iter().flatten() {
                        daxlink::outln!(
                            "  pin {} inode {} offset {} {}{}",
                            p["id"],
                            p["inode"],
                            p["offset"],
                            if p["write"] == true { "write" } else { "read" },
                            if p["longterm"] == true {
                                " long-term"
                            } else {
                                ""
                            }
                        );
                    }
                }
                0
            }
            Err(e) => fail("owners", e),
        },
        Cmd::Poison { file, offset } => match client::poison(&file, offset) {
            Ok((b, n, all)) => {
                daxlink::outln!(
                    "block {b} poisoned: {n} of {} notified (their reads fail with EIO)",
                    plural(all as u64, "owner", "owners")
                );
                0
            }
            Err(e) => fail("poison", e),
        },
        Cmd::Demo {
            page_model,
            json,
            verbose,
            report,
            real,
        } => {
            use daxlink::pages::PageModel;
            let models = match page_model.as_str() {
                "all" => vec![PageModel::Legacy, PageModel::Upstream, PageModel::Proxy],
                m => match PageModel::parse(m) {
                    Some(m) => vec![m],
                    None => {
                        eprintln!(
                            "daxlink demo: --page-model must be legacy, upstream, proxy or all"
                        );
                        std::process::exit(2);
                    }
                },
            };
            demo(&models, json, verbose, report.as_deref(), real)
        }
        Cmd::Stat { path, json } => match client::stat(&path) {
            Ok(s) => {
                if json {
                    daxlink::outln!(
                        "{}",
                        serde_json::json!({
                            "shared_bytes": s.shared_bytes, "saved_bytes": s.saved_bytes,
                            "refcount_records": s.refcount_records, "total_bytes": s.total_bytes,
                            "free_bytes": s.free_bytes,
                        })
                    );
                } else {
                    daxlink::outln!(
                        "shared: {} in {}",
                        plural(s.shared_bytes, "byte", "bytes"),
                        plural(s.refcount_records, "range", "ranges")
                    );
                    daxlink::outln!(
                        "saved by sharing: {}",
                        plural(s.saved_bytes, "byte", "bytes")
                    );
                    daxlink::outln!(
                        "used: {} of {}",
                        s.total_bytes - s.free_bytes,
                        plural(s.total_bytes, "byte", "bytes")
                    );
                }
                0
            }
            Err(e) => fail("stat", e),
        },
        Cmd::Counters { dir, json, reset } => match daxlink::tools::counters::read(&dir, reset) {
            Ok(c) if json => {
                daxlink::outln!("{}", c.json());
                0
            }
            Ok(c) => {
                daxlink::out!("{}", c.table());
                0
            }
            Err(e) => fail("counters", e),
        },
        Cmd::Crashtest(a) => daxlink::tools::crash::cli(a),
        Cmd::Run { cmd } => daxlink::tools::run::run(&cmd),
    };
    std::process::exit(code);
}

/// `mount -t daxlink SPEC DIR -o OPTS` runs `/sbin/mount.daxlink SPEC DIR
/// [-sfnv] [-N NS] [-o OPTS] [-t TYPE]` (mount(8), "External helpers"); turn
/// that into `daxlink mount SPEC DIR -o dev,suid,OPTS`. The `dev,suid` in
/// front (which a `nodev`/`nosuid` in OPTS overrides) is what mount.fuse3
/// passes for `mount -t fuse.daxlink`, so both types mount alike, with the
/// kernel's defaults as for ext4; `daxlink mount` run directly keeps
/// fusermount3's `nosuid,nodev` (docs/USAGE.md, mount options).
fn mount_helper_args(args: &[String]) -> Vec<String> {
    let mut pos = Vec::new();
    let mut opts = vec!["dev".to_string(), "suid".to_string()];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.extend(it.next().cloned()),
            // A namespace or type: daxlink has one type, mounts where it runs.
            "-N" | "-t" => {
                it.next();
            }
            // -f (fake: mount(8) asks the helper to do nothing), -s (sloppy),
            // -n (no mtab), -v (verbose): nothing to do for daxlink but -f.
            a if a.starts_with('-') && a.len() > 1 => {
                if a[1..].contains('f') {
                    std::process::exit(0);
                }
            }
            a => pos.push(a.to_string()),
        }
    }
    let mut out = vec!["daxlink".to_string(), "mount".to_string()];
    out.extend(pos);
    out.push("-o".into());
    out.push(opts.join(","));
    out
}

/// A clap error message on one line: "error: X\n  <A>\n\nUsage: U\n\nFor more..." ->
/// "X <A> (usage: U)".
fn one_line(msg: &str) -> String {
    let mut parts = Vec::new();
    let mut usage = None;
    for l in msg.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = l.strip_prefix("Usage:") {
            usage = Some(u.trim().to_string());
        } else if !l.starts_with("For more information") && !l.starts_with("tip:") {
            parts.push(l.strip_prefix("error:").unwrap_or(l).trim().to_string());
        }
    }
    let mut s = parts.join(" ");
    if let Some(u) = usage {
        s.push_str(&format!(" (usage: {u})"));
    }
    s
}

fn pin_cmd(
    file: &std::path::Path,
    offset: u64,
    length: u64,
    write: bool,
    longterm: bool,
    hold: Option<u64>,
) -> i32 {
    // Read-write where the caller may (page_model=upstream pins only
    // through a descriptor open for writing), else read-only for a read pin.
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file);
    let f = match rw {
        Ok(f) => f,
        Err(_) if !write => match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) => return fail("pin", named(file, e)),
        },
        Err(e) => return fail("pin", named(file, e)),
    };
    match client::pin(&f, offset, length, write, longterm) {
        Ok(id) => {
            daxlink::outln!(
                "pin {id}: {} at {offset} of {} ({})",
                plural(length, "byte", "bytes"),
                file.display(),
                if write { "write" } else { "read" }
            );
            match hold {
                Some(s) => std::thread::sleep(std::time::Duration::from_secs(s)),
                None => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
            }
            // Closing the file releases the pin too; unpin explicitly first.
            if let Err(e) = client::unpin(&f, id) {
                return fail("unpin", e);
            }
            0
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "daxlink pin: cannot pin bytes {offset}..{} of {}: the range must be non-empty \
                 and lie within the file ({})",
                offset.saturating_add(length),
                file.display(),
                plural(size, "byte", "bytes")
            );
            1
        }
        Err(e) => fail("pin", named(file, e)),
    }
}

/// `e` with the path it concerns in front, unless it names one already.
fn named(p: &std::path::Path, e: std::io::Error) -> std::io::Error {
    if e.raw_os_error().is_some() {
        std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    } else {
        e
    }
}

/// `daxlink demo`: the exit status. With `report`, also writes the HTML
/// report and its JSON into that directory and prints the page's path.
fn demo(
    models: &[daxlink::pages::PageModel],
    json: bool,
    verbose: bool,
    report: Option<&Path>,
    real: bool,
) -> i32 {
    let (results, ok) = match daxlink::tools::demo::main(models, json, verbose, real) {
        Ok(r) => r,
        Err(status) => return status,
    };
    if let Some(dir) = report {
        match daxlink::tools::report::write(dir, models, &results, ok) {
            Ok(page) => {
                let line = format!("report: {}", page.display());
                // Keep stdout one JSON document under --json.
                if json {
                    eprintln!("{line}");
                } else {
                    daxlink::outln!("{line}");
                }
            }
            Err(e) => {
                eprintln!("daxlink demo: writing the report to {}: {e}", dir.display());
                return 2;
            }
        }
    }
    if ok {
        0
    } else {
        1
    }
}
