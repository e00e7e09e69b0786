#!/usr/bin/env python3
"""Helpers for scripts/bench.sh.

  bench_report.py fragment FILE N   write FILE with N extents that cannot merge: one
                                    4 KiB block at every other block (holes between)
  bench_report.py creates DIR N     create DIR and N empty files in it from a python
                                    loop; print JSON: the rate, and at 100, 1,000, ...
                                    entries the create cost of the last stretch and the
                                    cost of a lookup that misses
  bench_report.py dropcache FILE    fsync FILE and drop its pages from the page cache
  bench_report.py report RAW OUT    read what bench.sh left in RAW (fio JSON files,
                                    samples.tsv, ...), print the tables, write OUT as JSON
  bench_report.py plots OUT DIR [PREFIX]
                                    draw the SVG plots of report OUT into DIR
  bench_report.py markdown OUT      print the headline and scale tables of report OUT
                                    as markdown (for docs/BENCHMARKS.md)
"""

import glob
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_svg  # noqa: E402

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


def creates(d, n):
    os.mkdir(d)
    marks = [m for m in (100, 1000, 10000, 100000, 1000000) if m < n] + [n]
    out, done, spent = [], 0, 0.0
    for m in marks:
        t = time.perf_counter()
        for i in range(done, m):
            os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
        dt = time.perf_counter() - t
        spent += dt
        seg = m - done
        done = m
        # Lookups of names that are not there (each a new name, so no cached
        # negative entry answers it): what a directory of this size costs to search.
        k = 300
        t = time.perf_counter()
        for j in range(k):
            try:
                os.stat(f"{d}/missing-{m}-{j}")
            except FileNotFoundError:
                pass
        miss = (time.perf_counter() - t) / k
        out.append({"entries": m, "create_us": dt * 1e6 / seg, "miss_lookup_us": miss * 1e6})
    print(json.dumps({"files": n, "create_s": spent, "rate_per_s": n / spent if spent else None,
                      "marks": out}))


def dropcache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
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


HL_JOBS = [("seqwrite", "sequential write 1 MiB"), ("seqread", "sequential read 1 MiB"),
           ("randread", "random read 4 KiB"), ("randwrite", "random write 4 KiB")]
TARGETS = {"seqwrite": 0.40, "seqread": 0.50, "randread": 0.35, "randwrite": 0.30, "creates": 0.50}
# Direct access (fio under `daxlink run`): ratio to tmpfs, 1 job.
TARGETS_DIRECT = {"seqwrite": 0.8, "seqread": 1.2, "randread": 1.5, "randwrite": 0.9}


def headline_report(fio, raw, samples):
    """daxlink over /dev/fuse ("daxlink"), over io_uring ("uring"), direct (fio under
    `daxlink run` on the /dev/fuse mount) and tmpfs."""
    rows, out = [], {"fio": [], "creates": None}
    yes = lambda m: "-" if m is None else ("yes" if m else "NO")  # noqa: E731
    for nj in (1, 2, 4):
        for name, desc in HL_JOBS:
            runs = fio.get(f"hl.{name}.j{nj}")
            if not runs:
                continue
            d, u, t = runs.get("daxlink"), runs.get("uring"), runs.get("tmpfs")
            x = runs.get("direct")
            mib = lambda x: med(x["all_kib_s"]) / 1024 if x else None  # noqa: E731
            allr = lambda x: [k / 1024 for k in x["all_kib_s"]] if x else []  # noqa: E731
            dm, um, tm, xm = mib(d), mib(u), mib(t), mib(x)
            r, ru, rx = ratio(dm, tm), ratio(um, tm), ratio(xm, tm)
            tx = TARGETS_DIRECT[name] if nj == 1 else None
            meets_x = None if tx is None or rx is None else rx >= tx
            tg = TARGETS[name] if nj == 1 else None
            meets = None if tg is None or r is None else r >= tg
            meets_u = None if tg is None or ru is None else ru >= tg
            rows.append([f"{desc}, {nj} job{'s' if nj > 1 else ''}", dm, um, xm, tm, fmt_ratio(r),
                         fmt_ratio(ru), fmt_ratio(rx),
                         "-" if tg is None else f">= {tg:.2f} / {tx:.2f}",
                         f"{yes(meets)} / {yes(meets_u)} / {yes(meets_x)}"])
            out["fio"].append({"job": name, "desc": desc, "numjobs": nj, "daxlink_mib_s": dm,
                               "uring_mib_s": um, "tmpfs_mib_s": tm,
                               "daxlink_runs_mib_s": allr(d), "uring_runs_mib_s": allr(u),
                               "tmpfs_runs_mib_s": allr(t), "ratio": r, "ratio_uring": ru,
                               "target": tg, "meets_target": meets, "meets_target_uring": meets_u,
                               "direct_mib_s": xm, "direct_runs_mib_s": allr(x), "ratio_direct": rx,
                               "target_direct": tx, "meets_target_direct": meets_x})
    rates = {}
    for p in glob.glob(os.path.join(raw, "creates--*.json")):
        _, fs, _ = os.path.basename(p)[:-5].split("--", 2)
        with open(p) as f:
            rates.setdefault(fs, []).append(json.load(f))
    if rates:
        per_s = lambda fs: [c["rate_per_s"] for c in rates.get(fs, [])]  # noqa: E731
        dr, ur, tr = med(per_s("daxlink")), med(per_s("uring")), med(per_s("tmpfs"))
        r, ru = ratio(dr, tr), ratio(ur, tr)
        n = next(iter(rates.values()))[0]["files"]
        meets = None if r is None else r >= TARGETS["creates"]
        meets_u = None if ru is None else ru >= TARGETS["creates"]
        rows.append([f"{n:,} file creates (python loop), creates/s", dr, ur, "-", tr, fmt_ratio(r),
                     fmt_ratio(ru), "-", f">= {TARGETS['creates']:.2f}", f"{yes(meets)} / {yes(meets_u)}"])
        out["creates"] = {"files": n, "daxlink_per_s": dr, "uring_per_s": ur, "tmpfs_per_s": tr,
                          "daxlink_runs_per_s": per_s("daxlink"), "uring_runs_per_s": per_s("uring"),
                          "tmpfs_runs_per_s": per_s("tmpfs"),
                          "ratio": r, "ratio_uring": ru, "target": TARGETS["creates"],
                          "meets_target": meets, "meets_target_uring": meets_u, "runs": rates}
    table("headline: fio psync, 1 GiB in all (a file per job), daxlink over /dev/fuse, daxlink over "
          "io_uring (transport=uring), direct (fio under `daxlink run`) and tmpfs alternating,\n median "
          "of the runs (MiB/s; creates/s for creates); ratio = daxlink/tmpfs; target: kernel path / "
          "direct; meets: /dev/fuse / io_uring / direct",
          ["job", "daxlink", "daxlink uring", "direct", "tmpfs", "ratio", "ratio uring",
           "ratio direct", "target", "meets"],
          rows)
    return out


def size_costs(raw, samples):
    # Directory size: create cost and missed-lookup cost at each mark, median of runs.
    marks = {}
    for p in glob.glob(os.path.join(raw, "creates--*.json")):
        _, fs, _ = os.path.basename(p)[:-5].split("--", 2)
        with open(p) as f:
            for m in json.load(f)["marks"]:
                marks.setdefault(fs, {}).setdefault(m["entries"], []).append(m)
    dir_size, rows = {}, []
    for fs in sorted(marks):
        dir_size[fs] = [{"entries": e,
                         "create_us": med([m["create_us"] for m in ms]),
                         "miss_lookup_us": med([m["miss_lookup_us"] for m in ms])}
                        for e, ms in sorted(marks[fs].items())]
    for e in sorted({x["entries"] for v in dir_size.values() for x in v}):
        g = {fs: next((x for x in v if x["entries"] == e), None) for fs, v in dir_size.items()}
        rows.append([f"{e:,}"] + [g.get(fs) and g[fs][k] for k in ("create_us", "miss_lookup_us")
                                   for fs in ("daxlink", "tmpfs")])
    if rows:
        table("cost against directory size (µs; create = mean over the stretch up to that many "
              "entries; lookup of a name that is not there)",
              ["entries", "daxlink create", "tmpfs create", "daxlink miss", "tmpfs miss"], rows)
    # File size: cp on both, daxlink reflink.
    sizes = sorted({k.split(".", 2)[2] for k in samples if k.startswith("filesize_cp_ms.")},
                   key=size_bytes)
    file_size, rows = [], []
    for sz in sizes:
        e = {"size": sz, "bytes": size_bytes(sz),
             "daxlink_cp_ms": med(samples.get(f"filesize_cp_ms.daxlink.{sz}", [])),
             "tmpfs_cp_ms": med(samples.get(f"filesize_cp_ms.tmpfs.{sz}", [])),
             "daxlink_reflink_ms": med(samples.get(f"filesize_reflink_ms.{sz}", []))}
        file_size.append(e)
        rows.append([sz, e["daxlink_cp_ms"], e["tmpfs_cp_ms"], e["daxlink_reflink_ms"]])
    if rows:
        table("cost against file size (ms, median; cp shares blocks on daxlink and copies on "
              "tmpfs; reflink includes process start)",
              ["size", "daxlink cp", "tmpfs cp", "daxlink reflink"], rows)
    return dir_size, file_size


def size_bytes(s):
    s = s.strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


def scale_report(raw, samples, info):
    out, rows = [], []
    sizes = info.get("big_sizes", "").split()
    for sz in sizes:
        if f"scale.{sz}.skipped" in info:
            out.append({"size": sz, "skipped": info[f"scale.{sz}.skipped"]})
            rows.append([sz, "skipped: " + info[f"scale.{sz}.skipped"]] + ["-"] * 7)
            continue
        p = os.path.join(raw, f"scale--{sz}.json")
        if not os.path.exists(p):
            continue
        with open(p) as f:
            made = json.load(f)
        g = lambda k: med(samples.get(f"scale.{sz}.{k}", []))  # noqa: E731
        e = dict(made, size=sz, mount_ms=g("mount_ms"), mount_ms_runs=samples.get(f"scale.{sz}.mount_ms", []),
                 vmrss_kib=g("VmRSS"), vmhwm_kib=g("VmHWM"), rss_anon_kib=g("RssAnon"),
                 rss_file_kib=g("RssFile"), map_rss_kib=g("map_rss_kib"),
                 fincore_bytes=g("fincore_bytes"))
        out.append(e)
        mib = lambda x: None if x is None else x / 1024  # noqa: E731
        rows.append([sz, f"{made['files']:,}", made["mkfs_ms"], made["mkfs_bytes_written"] / (1 << 20),
                     e["mount_ms"], mib(e["vmrss_kib"]), mib(e["vmhwm_kib"]), mib(e["map_rss_kib"]),
                     None if e["fincore_bytes"] is None else e["fincore_bytes"] / (1 << 20)])
    if rows:
        table("scale: sparse images in BENCH_BIG_DIR with empty files (mkfs in process on a sparse "
              "file; mount = `daxlink mount` with the image's pages dropped first; MiB)",
              ["size", "files", "mkfs ms", "mkfs wrote", "mount ms", "VmRSS", "VmHWM",
               "mapping Rss", "image in page cache"], rows)
    return out


def plots(result_path, outdir, prefix=""):
    with open(result_path) as f:
        r = json.load(f)
    info = r.get("info", {})
    sub = (f"{info.get('date', '?')}, {info.get('cpu', '?')}, {info.get('nproc', '?')} cores, "
           f"commit {info.get('commit', '?')}" + (", QUICK run" if info.get("quick") == "1" else ""))
    written = []

    def save(name, text):
        path = os.path.join(outdir, prefix + name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written.append(path)

    hl = r.get("headline") or {}
    short = ["seq write 1M", "seq read 1M", "rand read 4k", "rand write 4k", "creates"]
    series = []
    for key, label in (("ratio", ""), ("ratio_uring", ", uring"), ("ratio_direct", ", direct")):
        for nj in (1, 2, 4):
            vals = []
            for name, _ in HL_JOBS:
                e = next((x for x in hl.get("fio", []) if x["job"] == name and x["numjobs"] == nj),
                         None)
                vals.append(e and e.get(key))
            vals.append((hl.get("creates") or {}).get(key) if nj == 1 else None)
            if key == "ratio" or any(v is not None for v in vals):
                series.append((f"{nj} job{'s' if nj > 1 else ''}{label}", vals))
    targets = [TARGETS[n] for n, _ in HL_JOBS] + [TARGETS["creates"]]
    save("fio-ratio.svg", bench_svg.bar_plot(
        "daxlink / tmpfs bandwidth (fio psync) and create rate", "job",
        "ratio daxlink / tmpfs", short, series, targets, sub))

    ext = [(e["extents"], e["median_ms"]) for e in r.get("clone_vs_extents", []) if e.get("extents")]
    save("clone-vs-extents.svg", bench_svg.line_plot(
        "clone time against the source's extent count", "extents in the source (log)",
        "daxlink reflink, ms (log)", [("daxlink reflink", ext)], xlog=True, ylog=True, subtitle=sub))

    fsz = r.get("file_size", [])
    mb = lambda e: e["bytes"] / (1 << 20)  # noqa: E731
    save("cost-vs-file-size.svg", bench_svg.line_plot(
        "copy and clone time against file size", "file size, MiB (log)", "ms (log)",
        [("daxlink cp (shares)", [(mb(e), e["daxlink_cp_ms"]) for e in fsz]),
         ("tmpfs cp (copies)", [(mb(e), e["tmpfs_cp_ms"]) for e in fsz]),
         ("daxlink reflink", [(mb(e), e["daxlink_reflink_ms"]) for e in fsz])],
        xlog=True, ylog=True, subtitle=sub))

    ds = r.get("dir_size", {})
    ser = []
    for fs in ("daxlink", "tmpfs"):
        ser.append((f"{fs} create", [(x["entries"], x["create_us"]) for x in ds.get(fs, [])]))
    for fs in ("daxlink", "tmpfs"):
        ser.append((f"{fs} missed lookup", [(x["entries"], x["miss_lookup_us"]) for x in ds.get(fs, [])]))
    save("cost-vs-dir-size.svg", bench_svg.line_plot(
        "create and lookup time against directory size", "entries in the directory (log)",
        "µs per operation (log)", ser, xlog=True, ylog=True, subtitle=sub))
    for p in written:
        print(f"SVG: {p}")


def met(e):
    """Whether a headline row meets its target, over /dev/fuse and over io_uring."""
    word = lambda m: "-" if m is None else ("met" if m else "**not met**")  # noqa: E731
    return f"({word(e['meets_target'])} / {word(e.get('meets_target_uring'))})"


def met_direct(e):
    """The direct column's target and whether it is met."""
    if e.get("target_direct") is None:
        return "-"
    m = e.get("meets_target_direct")
    return f">= {e['target_direct']:.2f} (" + ("-" if m is None else ("met" if m else "**not met**")) + ")"


def markdown(result_path):
    with open(result_path) as f:
        r = json.load(f)
    i = r.get("info", {})
    print(f"{i.get('date', '?')}, commit {i.get('commit', '?')}, {i.get('cpu', '?')}, "
          f"{i.get('nproc', '?')} cores, {int(i.get('mem_total_kib', 0)) >> 20} GiB RAM, "
          f"kernel {i.get('kernel', '?')}, {i.get('fio_version', '?')}; load average "
          f"{i.get('loadavg_start', '?')} at the start, {i.get('loadavg_end', '?')} at the end")
    print()
    print("| job | daxlink MiB/s | daxlink uring MiB/s | direct MiB/s | tmpfs MiB/s | ratio | ratio uring "
          "| ratio direct | target | target direct |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    hl = r.get("headline", {})
    for e in hl.get("fio", []):
        nj = e["numjobs"]
        tg = "-" if e["target"] is None else f">= {e['target']:.2f} " + met(e)
        print(f"| {e['desc']}, {nj} job{'s' if nj > 1 else ''} | {fmt(e['daxlink_mib_s'])} | "
              f"{fmt(e.get('uring_mib_s'))} | {fmt(e.get('direct_mib_s'))} | {fmt(e['tmpfs_mib_s'])} | "
              f"{fmt_ratio(e['ratio'])} | {fmt_ratio(e.get('ratio_uring'))} | "
              f"{fmt_ratio(e.get('ratio_direct'))} | {tg} | {met_direct(e)} |")
    c = hl.get("creates")
    if c:
        tg = f">= {c['target']:.2f} " + met(c)
        print(f"| {c['files']:,} file creates (python loop), creates/s | {fmt(c['daxlink_per_s'], 0)} | "
              f"{fmt(c.get('uring_per_s'), 0)} | - | {fmt(c['tmpfs_per_s'], 0)} | {fmt_ratio(c['ratio'])} | "
              f"{fmt_ratio(c.get('ratio_uring'))} | - | {tg} | - |")
    sc = r.get("scale", [])
    if sc:
        print()
        print("| sparse image | files | mkfs | mkfs wrote | mount | daemon VmRSS / VmHWM | "
              "image read by the mount (fincore) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        mib = lambda x: "-" if x is None else f"{x / (1 << 20):,.0f} MiB"  # noqa: E731
        for e in sc:
            if "skipped" in e:
                print(f"| {e['size']} | skipped: {e['skipped']} | | | | | |")
                continue
            print(f"| {e['size']} | {e['files']:,} | {e['mkfs_ms'] / 1000:.1f} s | "
                  f"{mib(e['mkfs_bytes_written'])} | {fmt(e['mount_ms'], 0)} ms | "
                  f"{mib(e['vmrss_kib'] * 1024)} / {mib(e['vmhwm_kib'] * 1024)} | "
                  f"{mib(e['fincore_bytes'])} |")


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
    headline = headline_report(fio, raw, samples)
    order = sorted(l for l in fio if not l.startswith("verify") and not l.startswith("hl."))
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
    table("other fio jobs (buffered, 1 job; MiB/s and IOPS are read + write, the run of median bandwidth; "
          "ratio = daxlink/tmpfs bandwidth;\n CPU µs/IO = CPU time of fio, kernel side included, "
          "plus the daxlink daemon's, per I/O: median of the runs)",
          ["job", "daxlink MiB/s", "daxlink IOPS", "tmpfs MiB/s", "tmpfs IOPS", "ratio",
           "daxlink CPU µs/IO", "tmpfs CPU µs/IO"], rows)
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
          ["wanted", "extents", "median", "min", "max", "µs/extent"], rows)

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
          ["file", "MiB/s", "IOPS", "vs never_shared", "CPU µs/IO", "daemon CPU µs/IO"], rows)

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

    dir_size, file_size = size_costs(raw, samples)
    scale = scale_report(raw, samples, info)
    result = {
        "info": info,
        "headline": headline,
        "dir_size": dir_size,
        "file_size": file_size,
        "scale": scale,
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
    elif len(sys.argv) == 4 and sys.argv[1] == "creates":
        creates(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "dropcache":
        dropcache(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "markdown":
        markdown(sys.argv[2])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "plots":
        plots(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else "")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
