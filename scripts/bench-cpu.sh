#!/usr/bin/env bash
# What one FUSE round trip costs, by where the caller and the daemon run: a python loop
# creating N empty files (5 requests each: LOOKUP, the parent's GETATTR, CREATE, python's
# isatty IOCTL, RELEASE; docs/ROUNDTRIPS.md) on a daxlink mount over /dev/fuse with
#   free        the scheduler placing caller and daemon threads as it likes;
#   same-cpu    every daemon thread and the caller pinned to CPU 0;
#   other-cpu   every daemon thread on CPU 0, the caller on CPU 1;
# and, when the kernel offers FUSE over io_uring, on a transport=uring mount (one ring thread
# pinned per CPU) with the caller free and pinned to CPU 0; tmpfs beside. Prints creates/s,
# the median of BENCH_CPU_REPEAT runs (default 3). Then `cp -a` of BENCH_CPU_TREE (default
# /usr/share/doc) and `rm -rf` of the copy over /dev/fuse, free and with the daemon and the
# caller on CPU 0, beside tmpfs (median milliseconds).
# As root, on a machine with at least 2 CPUs. BENCH_BIN=DIR runs DIR/daxlink and
# DIR/mkfs-daxlink (e.g. target/release); otherwise the installed ones.
set -euo pipefail
die() { echo "bench-cpu: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs"
N=${BENCH_CPU_N:-10000}
REPEAT=${BENCH_CPU_REPEAT:-3}
if [ -n "${BENCH_BIN:-}" ]; then
  DAXLINK=$BENCH_BIN/daxlink MKFS=$BENCH_BIN/mkfs-daxlink
else
  DAXLINK=/usr/local/sbin/daxlink MKFS=/usr/local/sbin/mkfs.daxlink
fi
WORK=$(mktemp -d /tmp/daxlink-bench-cpu.XXXXXX)
IMG=/dev/shm/daxlink-bench-cpu-$$.img
UIMG=/dev/shm/daxlink-bench-cpu-uring-$$.img
mkdir -p "$WORK/dev" "$WORK/uring" "$WORK/tmpfs"
cleanup() {
  local rc=$? d
  set +e
  trap - EXIT INT TERM
  for d in dev uring tmpfs; do
    if mountpoint -q "$WORK/$d"; then
      for _ in $(seq 1 100); do umount "$WORK/$d" 2>/dev/null && break; sleep 0.05; done
      mountpoint -q "$WORK/$d" && umount -l "$WORK/$d"
    fi
  done
  sleep 0.3
  rm -f "$IMG" "$UIMG"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

umask 077
"$MKFS" -s 2G "$IMG" >/dev/null
"$DAXLINK" mount "$IMG" "$WORK/dev"
URING=
if echo Y 2>/dev/null >/sys/module/fuse/parameters/enable_uring; then
  "$MKFS" -s 2G "$UIMG" >/dev/null
  "$DAXLINK" mount "$UIMG" "$WORK/uring" -o transport=uring
  URING=yes
fi
umask 022
mount -t tmpfs -o size=2G tmpfs "$WORK/tmpfs"
daemon_of() { pgrep -f -- "daxlink mount $1 " | head -1; }
pin_daemon() { local t; for t in /proc/"$1"/task/*; do taskset -p -c "$2" "${t##*/}" >/dev/null; done; }
# creates DIR CPUS: creates/s of one loop, the caller on CPUS.
k=0
creates() {
  k=$((k + 1))
  taskset -c "$2" python3 -c '
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
t0 = time.perf_counter()
for i in range(n):
    open(f"{d}/f{i}", "wb").close()
print(f"{n / (time.perf_counter() - t0):.0f}")
' "$1/c$k" "$N"
  rm -rf "$1/c$k"
}
median() { python3 -c 'import statistics, sys; print(int(statistics.median(map(int, sys.argv[1:]))))' "$@"; }
row() { # LABEL DIR CPUS [SETUP]
  local label=$1 dir=$2 cpus=$3 s=() r
  for r in $(seq 1 "$REPEAT"); do s+=("$(creates "$dir" "$cpus")"); done
  printf '| %s | %s/s | %s |\n' "$label" "$(median "${s[@]}")" "${s[*]}"
}
ALL=0-$(($(nproc) - 1))
D=$(daemon_of "$IMG")
echo "== $(date -u '+%F %T') UTC; $(uptime | sed 's/^ *//'); N=$N, $REPEAT runs"
echo "| placement | creates (median) | runs |"
echo "|---|---|---|"
row "tmpfs" "$WORK/tmpfs" "$ALL"
row "dev, free" "$WORK/dev" "$ALL"
pin_daemon "$D" 0
row "dev, daemon and caller on CPU 0" "$WORK/dev" 0
row "dev, daemon on CPU 0, caller on CPU 1" "$WORK/dev" 1
pin_daemon "$D" "$ALL"
if [ -n "$URING" ]; then
  row "uring, free" "$WORK/uring" "$ALL"
  row "uring, caller on CPU 0" "$WORK/uring" 0
else
  echo "(uring: enable_uring cannot be set)"
fi

# cp -a and rm -rf of a tree: free, and with everything on CPU 0.
TREE=${BENCH_CPU_TREE:-/usr/share/doc}
ms() { local s; s=$(date +%s%N); "$@"; echo $((($(date +%s%N) - s) / 1000000)); }
tree_row() { # LABEL DIR CPUS
  local label=$1 dir=$2 cpus=$3 c=() r=() i
  for i in $(seq 1 "$REPEAT"); do
    c+=("$(ms taskset -c "$cpus" cp -a "$TREE" "$dir/t$i")")
    sync
    r+=("$(ms taskset -c "$cpus" rm -rf "$dir/t$i")")
  done
  printf '| %s | %s ms | %s ms |\n' "$label" "$(median "${c[@]}")" "$(median "${r[@]}")"
}
echo
echo "== cp -a and rm -rf of $TREE ($(find "$TREE" | wc -l) entries); median of $REPEAT"
echo "| placement | cp -a | rm -rf |"
echo "|---|---|---|"
tree_row "tmpfs, free" "$WORK/tmpfs" "$ALL"
tree_row "dev, free" "$WORK/dev" "$ALL"
tree_row "tmpfs, on CPU 0" "$WORK/tmpfs" 0
pin_daemon "$D" 0
tree_row "dev, daemon and caller on CPU 0" "$WORK/dev" 0
pin_daemon "$D" "$ALL"
