#!/usr/bin/env bash
# Metadata benchmarks side by side: daxlink over /dev/fuse (the default
# transport), daxlink over io_uring (transport=uring, if the kernel lets
# /sys/module/fuse/parameters/enable_uring be turned on), libfuse's passthrough_hp over a
# tmpfs directory (if its binary is there) and tmpfs itself, in one run:
#   creates   a python loop creating N empty files (open(..., "wb").close()), N=10,000;
#   cp -a     of a tree (/usr/share/doc, or a generated tree of ~5,000 files if that has
#             fewer than 2,000 entries; BENCH_META_TREE=DIR picks another) into the filesystem;
#   rm -rf    of that copy;
#   ls -l     of a 10,000-entry directory, warm (listed just before) and cold (after
#             `echo 2 > /proc/sys/vm/drop_caches`);
#   stat      of each of those 10,000 entries by a python loop, warm (after the warm ls -l).
# Each is run BENCH_META_REPEAT times (default 3) and the median kept; the table gives the
# time, the ratio tmpfs time / fs time (1.0 = as fast as tmpfs)
# and, on daxlink, the FUSE requests of the operation (`daxlink counters --json`, reset
# before and read after, less what the counter read itself costs).
#
# As root. BENCH_BIN=DIR runs DIR/daxlink and DIR/mkfs-daxlink (e.g. target/release);
# otherwise the installed /usr/local/sbin ones. PASSTHROUGH_HP=PATH names the
# passthrough_hp binary (default: passthrough_hp on PATH); without one its column says
# "not built". BENCH_OUT=FILE writes the medians and every sample as JSON.
# Everything mounted or created is unmounted and removed on exit, also on failure or ^C.
set -euo pipefail

die() { echo "bench-meta: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it mounts FUSE filesystems and tmpfs)"
command -v python3 >/dev/null || die "python3 is needed"

N=${BENCH_META_N:-10000}
REPEAT=${BENCH_META_REPEAT:-3}
if [ -n "${BENCH_BIN:-}" ]; then
  DAXLINK=$BENCH_BIN/daxlink MKFS=$BENCH_BIN/mkfs-daxlink
else
  DAXLINK=/usr/local/sbin/daxlink MKFS=/usr/local/sbin/mkfs.daxlink
fi
[ -x "$DAXLINK" ] && [ -x "$MKFS" ] || die "no daxlink binaries ($DAXLINK, $MKFS)"
PHP=${PASSTHROUGH_HP:-$(command -v passthrough_hp || true)}
[ -n "$PHP" ] && [ ! -x "$PHP" ] && PHP=

WORK=$(mktemp -d /tmp/daxlink-bench-meta.XXXXXX)
IMG=/dev/shm/daxlink-bench-meta-$$.img
UIMG=/dev/shm/daxlink-bench-meta-uring-$$.img
RAW=$WORK/samples.tsv
mkdir -p "$WORK/daxlink" "$WORK/uring" "$WORK/tmpfs" "$WORK/passthrough_hp" "$WORK/phsrc" "$WORK/gen"
: >"$RAW"

cleanup() {
  local rc=$? d
  set +e
  trap - EXIT INT TERM
  for d in daxlink uring passthrough_hp tmpfs phsrc; do
    if mountpoint -q "$WORK/$d"; then umount "$WORK/$d" 2>/dev/null || umount -l "$WORK/$d"; fi
  done
  for d in $(seq 1 250); do
    pgrep -f -- "daxlink mount /dev/shm/daxlink-bench-meta-(uring-)?$$.img " >/dev/null || break
    sleep 0.04
  done
  rm -f "$IMG" "$UIMG"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The filesystems: daxlink and tmpfs always, uring and passthrough_hp when possible.
FSES="daxlink"
umask 077
"$MKFS" -s 4G "$IMG" >/dev/null
"$DAXLINK" mount "$IMG" "$WORK/daxlink"
if echo Y 2>/dev/null >/sys/module/fuse/parameters/enable_uring; then
  "$MKFS" -s 4G "$UIMG" >/dev/null
  "$DAXLINK" mount "$UIMG" "$WORK/uring" -o transport=uring
  FSES="$FSES uring"
  URING=on
else
  URING="not available (enable_uring cannot be set)"
fi
umask 022
mount -t tmpfs -o size=4G tmpfs "$WORK/tmpfs"
FSES="$FSES tmpfs"
if [ -n "$PHP" ]; then
  mount -t tmpfs -o size=4G tmpfs "$WORK/phsrc"
  "$PHP" "$WORK/phsrc" "$WORK/passthrough_hp"
  for _ in $(seq 1 100); do mountpoint -q "$WORK/passthrough_hp" && break; sleep 0.05; done
  mountpoint -q "$WORK/passthrough_hp" || die "passthrough_hp did not mount"
  FSES="$FSES passthrough_hp"
fi

# The tree for cp -a: /usr/share/doc, or ~5,000 generated files when that is small.
TREE=${BENCH_META_TREE:-/usr/share/doc}
if [ ! -d "$TREE" ] || [ "$(find "$TREE" | wc -l)" -lt 2000 ]; then
  TREE=$WORK/gen/tree
  python3 - "$TREE" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(50):
    p = os.path.join(root, f"d{d:02}", "sub")
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p if f % 2 else os.path.dirname(p), f"f{f:03}"), "wb") as fh:
            fh.write(os.urandom(f * 97 % 20000))
EOF
fi
TREE_ENTRIES=$(find "$TREE" | wc -l)
TREE_BYTES=$(du -sb "$TREE" | cut -f1)

now_ns() { date +%s%N; }
secs_since() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.4f}')" "$1" "$(now_ns)"; }
is_dax() { [ "$1" = daxlink ] || [ "$1" = uring ]; }
# Requests a counter read costs (its OPENDIR, IOCTL, RELEASEDIR), subtracted from each count.
read_count() { "$DAXLINK" counters "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
reset_count() { "$DAXLINK" counters "$1" --json --reset >/dev/null; }
OVERHEAD=$(reset_count "$WORK/daxlink"; read_count "$WORK/daxlink")

# measure FS OP RUN CMD...: times CMD (its own figure if it prints one, else wall clock)
# and, on daxlink, counts its requests; appends a sample.
measure() {
  local fs=$1 op=$2 run=$3 m t0 secs out req= rc=0
  shift 3
  m=$WORK/$fs
  is_dax "$fs" && reset_count "$m"
  t0=$(now_ns)
  # A failing command is timed all the same and marked in the table; its errors go to
  # $WORK/errors.FS.OP (its first line is printed at the end).
  out=$("$@" 2>>"$WORK/errors.$fs.$op") || rc=$?
  secs=$(secs_since "$t0")
  # creates and stat time their own loops (python's start-up left out) and print the seconds.
  case $op in creates | stat_warm) secs=$out ;; esac
  if is_dax "$fs"; then
    sleep 0.2 # RELEASE and RELEASEDIR arrive after close returns
    req=$(( $(read_count "$m") - OVERHEAD ))
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$fs" "$op" "$run" "$secs" "$req" "$rc" >>"$RAW"
}
creates() { python3 -c '
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
t0 = time.perf_counter()
for i in range(n):
    open(f"{d}/f{i}", "wb").close()
print(f"{time.perf_counter() - t0:.4f}")
' "$1" "$2"; }
lsl() { ls -l "$1" >/dev/null; }
stat_all() { python3 -c '
import os, sys, time
d = sys.argv[1]
names = [os.path.join(d, n) for n in os.listdir(d)]
t0 = time.perf_counter()
for p in names:
    os.stat(p)
print(f"{time.perf_counter() - t0:.4f}")
' "$1"; }
drop_caches() { sync; echo 2 >/proc/sys/vm/drop_caches; }

# The 10,000-entry directory for ls -l, made once per filesystem.
for fs in $FSES; do
  python3 -c '
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
for i in range(n):
    open(f"{d}/entry-{i:05}", "wb").close()
' "$WORK/$fs/lsdir" "$N"
done

echo "== $(date -u '+%F %T') UTC; $(uptime | sed 's/^ *//')"
echo "== creates N=$N, cp -a / rm -rf of $TREE ($TREE_ENTRIES entries, $TREE_BYTES bytes), ls -l of $N entries; $REPEAT runs each; uring: $URING; passthrough_hp: ${PHP:-not built}"
set -- $FSES
for run in $(seq 1 "$REPEAT"); do
  # A different filesystem goes first in each run.
  order=$(python3 -c 'import sys; f=sys.argv[2:]; r=int(sys.argv[1]) % len(f); print(" ".join(f[r:] + f[:r]))' "$run" "$@")
  for fs in $order; do
    m=$WORK/$fs
    measure "$fs" creates "$run" creates "$m/c$run" "$N"
    rm -rf "$m/c$run"
    sync
    measure "$fs" cp_a "$run" cp -a "$TREE" "$m/t$run"
    sync
    measure "$fs" rm_rf "$run" rm -rf "$m/t$run"
    lsl "$m/lsdir" >/dev/null
    measure "$fs" ls_l_warm "$run" lsl "$m/lsdir"
    measure "$fs" stat_warm "$run" stat_all "$m/lsdir"
    drop_caches
    measure "$fs" ls_l_cold "$run" lsl "$m/lsdir"
  done
  echo "   run $run done"
done

python3 - "$RAW" "${BENCH_OUT:-}" "${PHP:+yes}" "$URING" "$N" "$TREE" "$TREE_ENTRIES" "$TREE_BYTES" "$REPEAT" <<'EOF'
import json, statistics, sys, collections, datetime, os
raw, out, php, uring, n, tree, tree_entries, tree_bytes, repeat = sys.argv[1:10]
t = collections.defaultdict(list)
r = collections.defaultdict(list)
failed = collections.Counter()
for line in open(raw):
    fs, op, run, secs, req, rc = line.rstrip("\n").split("\t")
    if rc != "0":
        failed[fs, op] += 1
    t[fs, op].append(float(secs))
    if req:
        r[fs, op].append(int(req))
ops = ["creates", "cp_a", "rm_rf", "ls_l_warm", "stat_warm", "ls_l_cold"]
names = {"creates": f"creates ({n} files)", "cp_a": f"cp -a ({tree_entries} entries)",
         "rm_rf": "rm -rf of it", "ls_l_warm": f"ls -l, {n} entries, warm",
         "stat_warm": f"stat of {n} entries, warm", "ls_l_cold": f"ls -l, {n} entries, cold"}
fses = ["daxlink", "uring", "passthrough_hp", "tmpfs"]
med = {k: statistics.median(v) for k, v in t.items()}
medr = {k: int(statistics.median(v)) for k, v in r.items()}

def cell(fs, op):
    if (fs, op) not in med:
        if fs == "passthrough_hp" and not php:
            return "not built"
        if fs == "uring":
            return "no uring"
        return "-"
    s = med[fs, op]
    txt = f"{s:.3f} s" if op != "creates" else f"{int(n) / s:,.0f}/s"
    if fs != "tmpfs":
        txt += f" ({med['tmpfs', op] / s:.2f})"
    if (fs, op) in medr:
        txt += f", {medr[fs, op]:,} req"
    if failed[fs, op]:
        txt += f" (failed {failed[fs, op]} of {len(t[fs, op])} runs)"
    return txt

hdr = ["operation", "daxlink (dev)", "daxlink (uring)", "passthrough_hp", "tmpfs"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for op in ops:
    print("| " + " | ".join([names[op]] + [cell(fs, op) for fs in fses]) + " |")
for (fs, op), k in sorted(failed.items()):
    path = os.path.join(os.path.dirname(raw), f"errors.{fs}.{op}")
    first = open(path).readline().strip() if os.path.exists(path) else ""
    print(f"{fs} {op}: {k} run(s) failed; first error: {first}")
if out:
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "loadavg": open("/proc/loadavg").read().split()[:3], "n": int(n), "tree": tree,
           "tree_entries": int(tree_entries), "tree_bytes": int(tree_bytes),
           "repeat": int(repeat), "uring": uring, "passthrough_hp": bool(php),
           "median_seconds": {f"{fs}.{op}": v for (fs, op), v in med.items()},
           "ratio_to_tmpfs": {f"{fs}.{op}": med["tmpfs", op] / v for (fs, op), v in med.items() if fs != "tmpfs"},
           "median_requests": {f"{fs}.{op}": v for (fs, op), v in medr.items()},
           "failed_runs": {f"{fs}.{op}": v for (fs, op), v in failed.items()},
           "samples_seconds": {f"{fs}.{op}": v for (fs, op), v in t.items()},
           "samples_requests": {f"{fs}.{op}": v for (fs, op), v in r.items()}}
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
    print(f"JSON in {out}")
EOF
