//! Part 2 of benches/direct_cost.rs: what FOPEN_DIRECT_IO costs the kernel
//! path. While a file has a writable lease, new kernel opens of it bypass
//! the page cache; this runs the same fio jobs on the same file with and
//! without such a lease (the order turning each time) and counts the READ
//! requests that reached the daemon per I/O.

use super::*;

/// (fio rw, block size, page cache warmed first)
const ROWS: [(&str, &str, bool); 4] = [
    ("randread", "4k", true),
    ("read", "1M", true),
    ("randread", "4k", false),
    ("read", "1M", false),
];

/// Read the whole file through the kernel (no lease: it lands in the page cache).
fn warm(p: &Path) {
    let f = File::open(p).unwrap();
    let mut b = vec![0u8; 1 << 20];
    let mut off = 0;
    loop {
        let n = f.read_at(&mut b, off).unwrap();
        if n == 0 {
            break;
        }
        off += n as u64;
    }
}

fn reads(root: &Path) -> u64 {
    let c = daxlink::tools::counters::read(root, false).unwrap().json();
    c["total"]["READ"].as_u64().unwrap_or(0)
}

/// One fio run: (MiB/s, IOPS, I/Os).
fn fio(p: &Path, cfg: &Cfg, rw: &str, bs: &str, warm: bool) -> (f64, f64, f64) {
    let mut c = Command::new("fio");
    c.args([
        "--name=dio",
        "--ioengine=psync",
        "--numjobs=1",
        "--time_based",
    ])
    .arg(format!("--filename={}", p.display()))
    .arg(format!("--size={}", cfg.dio_size))
    .arg(format!("--rw={rw}"))
    .arg(format!("--bs={bs}"))
    .arg(format!("--runtime={}", cfg.fio_secs))
    .arg(format!("--invalidate={}", if warm { 0 } else { 1 }))
    .arg("--output-format=json");
    let o = run_deadline(c, 120);
    assert_eq!(o.rc, 0, "fio: {}", o.stderr);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).expect("fio json");
    let r = &j["jobs"][0]["read"];
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    (f("bw_bytes") / (1 << 20) as f64, f("iops"), f("total_ios"))
}

pub fn run(cfg: &Cfg, json: &mut serde_json::Map<String, serde_json::Value>) {
    let img = Image::new("dcost-dio", cfg.dio_size + (256 << 20));
    let m = Mounted::new(&img.path, "");
    let p = m.path("dio.dat");
    make_file(&p, cfg.dio_size / BS, 1);
    println!(
        "\nFOPEN_DIRECT_IO: fio psync, 1 job, {} MiB file, {} s a run, {} rounds (load {})",
        cfg.dio_size >> 20,
        cfg.fio_secs,
        cfg.rounds,
        loadavg()
    );
    // [row][lease] -> (MiB/s, IOPS, READs per I/O) per round
    let mut res = vec![[Vec::new(), Vec::new()]; ROWS.len()];
    for round in 0..cfg.rounds {
        for (ri, &(rw, bs, w)) in ROWS.iter().enumerate() {
            let order = if (round + ri) % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for lease in order {
                let holder = lease.then(|| hold_lease(&p));
                if w {
                    warm(&p);
                }
                let r0 = reads(m.root());
                let (mib, iops, ios) = fio(&p, cfg, rw, bs, w);
                let per_io = (reads(m.root()) - r0) as f64 / ios.max(1.0);
                if let Some((ch, _out)) = holder {
                    end_hold(ch);
                }
                res[ri][lease as usize].push((mib, iops, per_io));
            }
        }
    }
    println!("| job | no lease MiB/s (READs per I/O) | writable lease MiB/s (READs per I/O) | lease / no lease |");
    println!("|---|---:|---:|---:|");
    for (ri, &(rw, bs, w)) in ROWS.iter().enumerate() {
        let med = |l: usize, k: usize| {
            median(
                res[ri][l]
                    .iter()
                    .map(|x: &(f64, f64, f64)| [x.0, x.1, x.2][k])
                    .collect(),
            )
        };
        let name = format!("{rw} {bs} {}", if w { "warm" } else { "cold" });
        let (a, b) = (med(0, 0), med(1, 0));
        println!(
            "| {name} | {a:.1} ({:.2}) | {b:.1} ({:.2}) | {:.3} |",
            med(0, 2),
            med(1, 2),
            b / a
        );
        let key = name.replace(' ', "_");
        json.insert(format!("dio.{key}.no_lease_mib_s"), a.into());
        json.insert(format!("dio.{key}.lease_mib_s"), b.into());
        json.insert(format!("dio.{key}.no_lease_reads_per_io"), med(0, 2).into());
        json.insert(format!("dio.{key}.lease_reads_per_io"), med(1, 2).into());
    }
    m.unmount();
}
