#!/usr/bin/env bash
# Where the time goes: a flame graph of the daemon for each fio job of the
# benchmark's headline table (psync, 1 GiB file, 3 s), and the share of its
# samples in the FUSE transport, its own code and the media layer.
#
#   bash scripts/profile.sh [OUTDIR]     # default docs/bench/flame
#
# As root, with perf (apt-get install linux-perf) and fio. Uses the installed
# tools, or PROFILE_BIN=DIR (e.g. target/release). perf samples the daemon's
# threads with the cpu-clock software event (no hardware counters needed), so
# it works in a VM. Everything it mounts is unmounted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/bench/flame}
command -v perf >/dev/null || { echo "profile: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
command -v fio >/dev/null || { echo "profile: fio is not installed" >&2; exit 1; }
if [ -n "${PROFILE_BIN:-}" ]; then
  DAXLINK=$PROFILE_BIN/daxlink MKFS=$PROFILE_BIN/mkfs-daxlink
else
  DAXLINK=/usr/local/sbin/daxlink MKFS=/usr/local/sbin/mkfs.daxlink
fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/daxlink-profile.XXXXXX)
IMG=/dev/shm/daxlink-profile-$$.img
cleanup() {
  set +e
  mountpoint -q "$WORK/mnt" && umount "$WORK/mnt"
  rm -f "$IMG"; rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/mnt"
(umask 077; truncate -s 3G "$IMG")
"$MKFS" -q "$IMG" >/dev/null
"$DAXLINK" mount "$IMG" "$WORK/mnt"
PID=$(pgrep -f -- "daxlink mount $IMG " | head -n1)
fio --name=layout --directory="$WORK/mnt" --filename=f --size=1G --rw=write --bs=1M \
  --ioengine=psync >/dev/null
for job in "seq-write write 1M" "seq-read read 1M" "rand-read randread 4k" "rand-write randwrite 4k"; do
  set -- $job
  perf record -q -e cpu-clock -g -p "$PID" -o "$WORK/perf.data" -- \
    fio --name="$1" --directory="$WORK/mnt" --filename=f --size=1G --rw="$2" --bs="$3" \
      --ioengine=psync --time_based --runtime=3 >/dev/null 2>&1
  perf script -i "$WORK/perf.data" 2>/dev/null |
    python3 scripts/flamegraph.py "daxlink daemon, fio $2 $3 (psync)" "$OUT/$1.svg"
done
echo "profile: flame graphs in $OUT"
