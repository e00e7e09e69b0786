#!/usr/bin/env bash
# Root's stat latency while user nobody runs long operations on the same mount:
# a 16 TiB dedupe of two sparse files (1 GiB a call), clones of a 100,000-extent
# file, and 1 GiB allocate-and-punch, each and then all three at once. Prints
# p50/p99/max of stat() (a cached name and a missed lookup, in microseconds)
# idle and under each attack, and the ratio to idle (goal: within 2x).
#
#   bash scripts/bench-stall.sh           # 20 s a phase
#   STALL_SECS=5 bash scripts/bench-stall.sh
#
# As root, after scripts/install.sh or with STALL_BIN=target/release. Takes
# about 2 minutes plus the time to write the 100,000-extent file.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${STALL_BIN:-/usr/local/sbin}
DAXLINK=$BIN/daxlink
MKFS=$BIN/mkfs-daxlink
[ -x "$MKFS" ] || MKFS=$BIN/mkfs.daxlink
SECS=${STALL_SECS:-20}
work=$(mktemp -d /dev/shm/daxlink-stall.XXXXXX)
mnt="$work/mnt"
mkdir "$mnt"
cleanup() {
  pkill -u 65534 -f scripts/stall.py 2>/dev/null || true
  mountpoint -q "$mnt" && umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$MKFS" -q --size 2G "$work/img"
"$DAXLINK" mount "$work/img" "$mnt" -o allow_other
chmod 755 "$work"
mkdir "$mnt/u"; chown 65534:65534 "$mnt/u"
as_nobody() { STALL_DAXLINK=$DAXLINK setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
probe() { /usr/bin/python3 scripts/stall.py probe "$mnt" "$SECS"; }
printf '%-22s %10s %10s %10s %8s\n' phase "p50 us" "p99 us" "max us" "p99/idle"
read -r i50 i99 imax n < <(probe)
printf '%-22s %10s %10s %10s %8s\n' idle "$i50" "$i99" "$imax" 1.0
# The clone source takes a while to write: do it before timing.
as_nobody /usr/bin/python3 scripts/stall.py attack clone "$mnt/u" 0 >/dev/null
run() {
  local name=$1; shift
  local pids=()
  for k in "$@"; do
    as_nobody /usr/bin/python3 scripts/stall.py attack "$k" "$mnt/u" "$((SECS + 5))" & pids+=($!)
  done
  sleep 2
  read -r p50 p99 pmax n < <(probe)
  wait "${pids[@]}" || true
  printf '%-22s %10s %10s %10s %8.1f\n' "$name" "$p50" "$p99" "$pmax" "$(echo "$p99 / $i99" | bc -l)"
}
run dedupe-16TiB dedupe
run clone-100k-extents clone
run punch-1GiB punch
run all-three dedupe clone punch
