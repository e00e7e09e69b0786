#!/usr/bin/env bash
# fio psync 4 KiB random read and write, 1, 2 and 4 jobs, on transport=dev and transport=uring,
# for two builds of daxlink side by side in one run (e.g. before and after a change to the
# io_uring transport). As root: scripts/bench-rings.sh BEFORE_DIR AFTER_DIR, each a directory
# holding daxlink and mkfs-daxlink (e.g. a saved target/release). Each of the four mounts is its
# own image on /dev/shm; within each run the four go in an order that turns by one each run.
# Prints a markdown table of IOPS (median of the runs) and the load average before and after.
# Environment: RINGS_SIZE (total file size per job set, default 256M), RINGS_RUNTIME (s, 3),
# RINGS_REPEAT (3).
set -euo pipefail
die() { echo "bench-rings: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 BEFORE_DIR AFTER_DIR"
[ "$(id -u)" = 0 ] || die "run as root (it mounts)"
command -v fio >/dev/null || die "fio is not installed (apt-get install fio)"
SIZE=${RINGS_SIZE:-256M} RUNTIME=${RINGS_RUNTIME:-3} REPEAT=${RINGS_REPEAT:-3}
declare -A BIN=([before]=$1 [after]=$2)
for b in before after; do
  [ -x "${BIN[$b]}/daxlink" ] && [ -x "${BIN[$b]}/mkfs-daxlink" ] || die "${BIN[$b]}: no daxlink build"
done
WORK=$(mktemp -d /tmp/daxlink-rings.XXXXXX)
CONFIGS="before:dev before:uring after:dev after:uring"
cleanup() {
  set +e
  for c in $CONFIGS; do
    d=$WORK/${c/:/-}
    if mountpoint -q "$d"; then umount "$d" 2>/dev/null || umount -l "$d"; fi
    rm -f "/dev/shm/daxlink-rings-$$-${c/:/-}.img"
  done
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT
for c in $CONFIGS; do
  IFS=: read -r b t <<<"$c"
  img=/dev/shm/daxlink-rings-$$-$b-$t.img
  mkdir -p "$WORK/$b-$t"
  "${BIN[$b]}/mkfs-daxlink" --size 1G "$img" >/dev/null
  "${BIN[$b]}/daxlink" mount "$img" "$WORK/$b-$t" -o "transport=$t"
done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
job() { # job DIR NJ RW [options]
  local dir=$1 nj=$2 rw=$3
  shift 3
  echo --name=r --directory="$dir" --numjobs="$nj" --size=$(( $(numfmt --from=iec "$SIZE") / nj )) \
    --rw="$rw" --bs=4k --ioengine=psync --time_based --runtime="$RUNTIME" --group_reporting "$@"
}
RES=$WORK/results.tsv
: >"$RES"
set -- $CONFIGS
for nj in 1 2 4; do
  for c in $CONFIGS; do
    d=$WORK/${c/:/-}
    rm -rf "$d/j"
    mkdir -p "$d/j"
    # shellcheck disable=SC2046
    fio --output=/dev/null $(job "$d/j" "$nj" read --create_only=1) >/dev/null
  done
  for i in $(seq 1 "$REPEAT"); do
    # The order turns by one each run.
    order=$(for k in 0 1 2 3; do n=$(( (k + i) % 4 + 1 )); echo "${!n}"; done)
    for rw in randread randwrite; do
      for c in $order; do
        d=$WORK/${c/:/-}
        # shellcheck disable=SC2046
        iops=$(fio --output-format=json $(job "$d/j" "$nj" "$rw") |
          python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["read"]["iops"]+j["write"]["iops"]))')
        printf '%s\t%s\t%s\t%s\n' "$rw" "$nj" "$c" "$iops" >>"$RES"
        printf '  %-9s j%s %-12s run %s: %s IOPS\n' "$rw" "$nj" "$c" "$i" "$iops" >&2
      done
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RES" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    rw, nj, c, iops = line.split()
    rows.setdefault((rw, int(nj)), {}).setdefault(c, []).append(int(iops))
cols = ["before:dev", "after:dev", "before:uring", "after:uring"]
print("| job | jobs | " + " | ".join(cols) + " | uring after/before |")
print("|---|---|" + "---|" * (len(cols) + 1))
for (rw, nj), d in sorted(rows.items()):
    med = {c: statistics.median(d[c]) for c in cols}
    print(f"| {rw} 4k | {nj} | " + " | ".join(f"{med[c]:,.0f}" for c in cols)
          + f" | {med['after:uring'] / med['before:uring']:.2f} |")
EOF
