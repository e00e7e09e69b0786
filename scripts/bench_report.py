#!/usr/bin/env python3
"""Helpers for scripts/bench.sh.

  bench_report.py fragment FILE N   write FILE with N extents that cannot merge: one
                                    4 KiB block at every other block (holes between)
  bench_report.py report RAW OUT    read what bench.sh left in RAW (fio JSON files,
                                    samples.tsv), print the tables, write OUT as JSON
"""

import glob
import json
import os
import statistics
import sys

BLOCK = 4096


def fragment(path, n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(n):
            buf = (i.to_bytes(8, "little") * (BLOCK // 8))[:BLOCK]
            os.pwrite(fd, buf, 2 * i * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_fio(path):
    with open(path) as f:
        s = f.read()
    d = json.loads(s[s.index("{"):])
    r = {"read_kib_s": 0.0, "write_kib_s": 0.0, "read_iops": 0.0, "write_iops": 0.0,
         "read_bytes": 0, "write_bytes": 0, "ios": 0, "fio_cpu_ms": 0.0, "errors": 0}
    for j in d["jobs"]:
        for rw in ("read", "write"):
            r[rw + "_kib_s"] += j[rw]["bw"]
            r[rw + "_iops"] += j[rw]["iops"]
            r[rw + "_bytes"] += j[rw]["io_bytes"]
            r["ios"] += j[rw]["total_ios"]
        # fio's own CPU (user + system, so including the kernel's side of the I/O).
        r["fio_cpu_ms"] += (j["usr_cpu"] + j["sys_cpu"]) / 100 * j.get("job_runtime", 0)
        r["errors"] += 1 if j.get("error", 0) else 0
    r["kib_s"] = r["read_kib_s"] + r["write_kib_s"]
    r["iops"] = r["read_iops"] + r["write_iops"]
    # The daxlink daemon's CPU during the run, measured by bench.sh.
    cpu = path[:-5] + ".cpu"
    r["daemon_cpu_ms"] = float(open(cpu).read()) if os.path.exists(cpu) else 0.0
    r["cpu_us_per_io"] = ((r["fio_cpu_ms"] + r["daemon_cpu_ms"]) * 1000 / r["ios"]
                          if r["ios"] else None)
    return r


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def table(title, head, rows):
    print()
    print(title)
    cells = [head] + [[fmt(c) if not isinstance(c, str) else c for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
    print(line(cells[0]))
    print("  ".join("-" * x for x in w))
    for r in cells[1:]:
        print(line(r))


def fmt_ratio(r):
    return "-" if r is None else f"{r:.3f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def report(raw, out):
    info, samples = {}, {}
    with open(os.path.join(raw, "samples.tsv")) as f:
        for line in f:
            kind, key, val = line.rstrip("\n").split("\t", 2)
            if kind == "info":
                info[key] = val
            else:
                samples.setdefault(key, []).append(float(val))

    # fio suite
    runs = {}
    for p in glob.glob(os.path.join(raw, "fio--*.json")):
        _, fs, label, _ = os.path.basename(p)[:-5].split("--", 3)
        runs.setdefault(label, {}).setdefault(fs, []).append(load_fio(p))
    # Per job and filesystem: the run of median bandwidth, and every run.
    fio = {}
    for label, by_fs in runs.items():
        for fs, rs in by_fs.items():
            rs.sort(key=lambda r: r["kib_s"])
            m = dict(rs[(len(rs) - 1) // 2], runs=len(rs), all_kib_s=[r["kib_s"] for r in rs])
            cpus = [r["cpu_us_per_io"] for r in rs if r["cpu_us_per_io"] is not None]
            m["cpu_us_per_io"] = med(cpus)
            m["all_cpu_us_per_io"] = cpus
            fio.setdefault(label, {})[fs] = m
    order = sorted(l for l in fio if not l.startswith("verify"))
    order += [l for l in ("verify-write", "verify-only", "verify-only-copy") if l in fio]
    rows, fio_json = [], []
    for label in order:
        d, t = fio[label].get("daxlink"), fio[label].get("tmpfs")
        rr = ratio(d and d["kib_s"], t and t["kib_s"])
        rows.append([label,
                     d and d["kib_s"] / 1024, d and round(d["iops"]),
                     t and t["kib_s"] / 1024, t and round(t["iops"]), fmt_ratio(rr),
                     d and d["cpu_us_per_io"], t and t["cpu_us_per_io"]])
        fio_json.append({"job": label, "daxlink": d, "tmpfs": t, "ratio_daxlink_tmpfs": rr})
    table("fio (buffered, 1 job; MiB/s and IOPS are read + write, the run of median bandwidth; "
          "ratio = daxlink/tmpfs bandwidth;\n CPU us/IO = CPU time of fio, kernel side included, "
          "plus the daxlink daemon's, per I/O: median of the runs)",
          ["job", "daxlink MiB/s", "daxlink IOPS", "tmpfs MiB/s", "tmpfs IOPS", "ratio",
           "daxlink CPU us/IO", "tmpfs CPU us/IO"], rows)
    print("(verify-only-copy: verify-only.fio on a `cp` of the verified file; cp reflinks on "
          "daxlink and copies on tmpfs)")

    # clone: big vs small single extent
    big, small = None, None
    keys = sorted(k for k in samples if k.startswith("clone_ms.falloc_"))
    rows, clone_json = [], []
    for k in keys:
        name = k[len("clone_ms.falloc_"):]
        m = med(samples[k])
        rows.append([f"fallocate {name}", int(info.get(f"extents.falloc_{name}", "0")), m,
                     min(samples[k]), max(samples[k])])
        clone_json.append({"file": f"falloc_{name}", "extents": int(info.get(f"extents.falloc_{name}", "0")),
                           "median_ms": m, "samples_ms": samples[k]})
    size_of = lambda s: float(s[:-1]) * {"K": 1, "M": 1 << 10, "G": 1 << 20}[s[-1]]
    if len(clone_json) == 2:
        a, b = sorted(clone_json, key=lambda c: -size_of(c["file"].split("_")[1]))
        big, small = a, b
    table("clone time (`daxlink reflink`, wall time incl. process start; ms)",
          ["source", "extents", "median", "min", "max"], rows)
    if big and small:
        print(f"ratio {big['file']} / {small['file']}: {big['median_ms'] / small['median_ms']:.2f}")

    rows, ext_json = [], []
    frag = sorted((int(k.split("_")[-1]), k) for k in samples if k.startswith("clone_ms.frag_"))
    base = None
    for n, k in frag:
        m = med(samples[k])
        got = int(info.get(f"extents.frag_{n}", "0"))
        if base is None:
            base = m
        per = (m - base) * 1000 / got if got > 1 and base is not None else None
        rows.append([f"{n}", got, m, min(samples[k]), max(samples[k]), per])
        ext_json.append({"extents_wanted": n, "extents": got, "median_ms": m, "samples_ms": samples[k],
                         "us_per_extent_over_1": per})
    table("clone time against the source's extent count (ms; one 4 KiB block every other block)",
          ["wanted", "extents", "median", "min", "max", "us/extent"], rows)

    # copy-on-write
    cow = {}
    for p in glob.glob(os.path.join(raw, "cow--*.json")):
        _, name, _ = os.path.basename(p)[:-5].split("--", 2)
        cow.setdefault(name, []).append(load_fio(p))
    rows, cow_json = [], []
    plain = med([r["write_kib_s"] for r in cow.get("never_shared", [])])
    for name in ("fresh_clone", "unshared_clone", "never_shared"):
        if name not in cow:
            continue
        bw = med([r["write_kib_s"] for r in cow[name]])
        iops = med([r["write_iops"] for r in cow[name]])
        cpu = med([r["cpu_us_per_io"] for r in cow[name]])
        dcpu = med([r["daemon_cpu_ms"] * 1000 / r["ios"] for r in cow[name] if r["ios"]])
        rows.append([name, bw / 1024, round(iops), fmt_ratio(ratio(bw, plain)), cpu, dcpu])
        cow_json.append({"file": name, "write_kib_s": bw, "write_iops": iops, "runs": cow[name],
                         "ratio_to_never_shared": ratio(bw, plain), "cpu_us_per_io": cpu,
                         "daemon_cpu_us_per_io": dcpu})
    table("copy-on-write: fio randwrite 4k over the whole file (median of runs)",
          ["file", "MiB/s", "IOPS", "vs never_shared", "CPU us/IO", "daemon CPU us/IO"], rows)

    # mount, rss, misc
    rows = []
    for k in ("mount_ms.empty", "mount_ms.with_files", "unshare_ms.cow",
              "cp_verify_file_ms.daxlink", "cp_verify_file_ms.tmpfs"):
        if k in samples:
            rows.append([k, med(samples[k]), min(samples[k]), max(samples[k]), len(samples[k])])
    table("timings (ms)", ["what", "median", "min", "max", "runs"], rows)
    tags = []
    for k in samples:
        if k.startswith("mem_kib."):
            tag = k.split(".")[1]
            if tag not in tags:
                tags.append(tag)
    rows, mem_json = [], {}
    for tag in tags:
        g = lambda f: med(samples.get(f"mem_kib.{tag}.{f}", []))  # noqa: E731
        mib = lambda x: x / 1024 if x is not None else None  # noqa: E731
        mapped = (g("RssFile") or 0) + (g("RssShmem") or 0)
        mem_json[tag] = {f: g(f) for f in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")}
        rows.append([tag, mib(g("VmRSS")), mib(g("VmHWM")), mib(g("RssAnon")), mib(mapped)])
    table("daemon memory (MiB, /proc/PID/status; image pages = RssFile + RssShmem, the mapped "
          "image itself)", ["when", "VmRSS", "VmHWM (peak)", "RssAnon", "image pages"], rows)

    result = {
        "info": info,
        "fio": fio_json,
        "clone_single_extent": clone_json,
        "clone_big_over_small": (big["median_ms"] / small["median_ms"]) if big and small else None,
        "clone_vs_extents": ext_json,
        "cow": cow_json,
        "daemon_memory_kib": mem_json,
        "samples": samples,
    }
    stat = os.path.join(raw, "stat.txt")
    if os.path.exists(stat):
        with open(stat) as f:
            result["daxlink_stat_after_reflink"] = f.read()
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print()
    print(f"JSON: {out}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "fragment":
        fragment(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
