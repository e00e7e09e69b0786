#!/usr/bin/env bash
# Benchmarks: daxlink against tmpfs, plus reflink, mount and memory figures.
#
#   bash scripts/bench.sh                # full run (about 5-10 minutes on 2 cores)
#   BENCH_QUICK=1 bash scripts/bench.sh  # small sizes, under a minute: checks the script works
#
# As root: builds and installs daxlink (scripts/install.sh; BENCH_NO_INSTALL=1 skips it),
# makes a daxlink image on /dev/shm mounted at one directory and a tmpfs of the same size
# at another, and runs every tests/fio/*.fio job on both with the same parameters. Then,
# on daxlink only: clone time of a large single-extent file against a small one, clone time
# against the source's extent count, copy-on-write random-write throughput on a fresh clone
# against unshared files, mount time of an empty image and of one holding those files, and
# the daemon's resident memory. Timings are repeated (BENCH_REPEAT, default 5; 3 when
# quick; each fio job 3 times, alternating which filesystem goes first) and the median
# is reported. Prints tables and writes everything as JSON to
# BENCH_OUT (default /tmp/daxlink-bench-DATE.json). BENCH_BIN=DIR runs DIR/daxlink and
# DIR/mkfs-daxlink (e.g. target/release) instead of installing. Everything it mounted or
# created is unmounted and removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it mounts a FUSE filesystem and a tmpfs)"
command -v fio >/dev/null || die "fio is not installed (scripts/test.sh installs it: apt-get install fio)"
command -v python3 >/dev/null || die "python3 is needed for the report (scripts/bench_report.py)"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  FS_SIZE=1G JOB_SIZE=64M VERIFY_SIZE=16M RUNTIME=5 NRFILES=500
  BIG=64M SMALL=4M EXTENTS="1 100 1000" COW_SIZE=32M REPEAT=${BENCH_REPEAT:-3} COW_REPEAT=1
  FIO_REPEAT=1
else
  FS_SIZE=4G JOB_SIZE=512M VERIFY_SIZE=128M RUNTIME=15 NRFILES=4000
  BIG=1G SMALL=4M EXTENTS="1 1000 10000 100000" COW_SIZE=256M REPEAT=${BENCH_REPEAT:-5} COW_REPEAT=5
  FIO_REPEAT=3
fi
OUT=${BENCH_OUT:-/tmp/daxlink-bench-$(date +%Y%m%d-%H%M%S).json}

if [ -n "${BENCH_BIN:-}" ]; then
  # Binaries of a build directory (e.g. target/release), nothing installed.
  DAXLINK=$BENCH_BIN/daxlink MKFS=$BENCH_BIN/mkfs-daxlink
else
  if [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    echo "== build and install (scripts/install.sh)"
    bash scripts/install.sh
  fi
  DAXLINK=/usr/local/sbin/daxlink MKFS=/usr/local/sbin/mkfs.daxlink
fi
[ -x "$DAXLINK" ] && [ -x "$MKFS" ] || die "daxlink is not installed (run scripts/install.sh)"

WORK=$(mktemp -d /tmp/daxlink-bench.XXXXXX)
IMG=/dev/shm/daxlink-bench-$$.img
DMNT=$WORK/daxlink
TMNT=$WORK/tmpfs
RAW=$WORK/raw
mkdir -p "$DMNT" "$TMNT" "$RAW"

daemon_pid() { pgrep -f -- "daxlink mount $IMG " | head -n1; }
wait_daemon_gone() {
  local i
  for i in $(seq 1 500); do
    [ -z "$(daemon_pid)" ] && return 0
    sleep 0.02
  done
  echo "bench: warning: daxlink daemon still running 10 s after umount" >&2
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  for d in "$DMNT" "$TMNT"; do
    if mountpoint -q "$d"; then umount "$d" 2>/dev/null || umount -l "$d"; fi
  done
  wait_daemon_gone
  rm -f "$IMG"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
# sample NAME VALUE: one measurement (the report takes the median per NAME).
sample() { printf 'sample\t%s\t%s\n' "$1" "$2" >>"$RAW/samples.tsv"; }
info() { printf 'info\t%s\t%s\n' "$1" "$2" >>"$RAW/samples.tsv"; }
ms_since() { local us=$(( ($(now_ns) - $1) / 1000 )); printf '%d.%03d' $((us / 1000)) $((us % 1000)); }

dax_mount() { "$DAXLINK" mount "$IMG" "$DMNT"; }
dax_umount() { umount "$DMNT"; wait_daemon_gone; }

# rss TAG: the daemon's memory (KiB) from /proc/PID/status: VmRSS, its peak VmHWM, and
# the split of VmRSS into RssAnon (the daemon's own heap and stacks) and RssFile +
# RssShmem (pages of the mapped image it has touched: the "pmem" itself, not overhead).
rss() {
  local pid k
  pid=$(daemon_pid)
  [ -n "$pid" ] || die "no daxlink daemon found for $IMG"
  for k in VmRSS VmHWM RssAnon RssFile RssShmem; do
    sample "mem_kib.$1.$k" "$(awk -v k="$k:" '$1 == k {print $2}' "/proc/$pid/status")"
  done
}

info quick "$QUICK"
info fs_size "$FS_SIZE"
info job_size "$JOB_SIZE"
info verify_size "$VERIFY_SIZE"
info runtime_cap_s "$RUNTIME"
info nrfiles "$NRFILES"
info repeat "$REPEAT"
info fio_repeat "$FIO_REPEAT"
info cow_repeat "$COW_REPEAT"
info nproc "$(nproc)"
info kernel "$(uname -r)"
info fio_version "$(fio --version)"
info commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
info date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"

echo "== daxlink image $IMG ($FS_SIZE) at $DMNT, tmpfs ($FS_SIZE) at $TMNT"
"$MKFS" --size "$FS_SIZE" "$IMG" >/dev/null
# Mount time of the empty image.
for _ in $(seq 1 "$REPEAT"); do
  t=$(now_ns); dax_mount; sample mount_ms.empty "$(ms_since "$t")"
  dax_umount
done
dax_mount
rss after_mount_empty
mount -t tmpfs -o "size=$FS_SIZE" tmpfs "$TMNT"

# ---------------------------------------------------------------- fio suite
fio_env() { # fio_env DIR FILE SIZE: the environment every job file expects
  export FIO_DIR=$1 FIO_FILE=$2 FIO_SIZE=$3 FIO_RUNTIME=$RUNTIME FIO_NRFILES=$NRFILES
}
# CPU time (ms) the daemon has used so far (utime + stime of all its threads): a measure
# of work per I/O that other load on the machine disturbs much less than wall time.
TICK_MS=$(( 1000 / $(getconf CLK_TCK) ))
daemon_cpu_ms() { awk -v t="$TICK_MS" '{print ($14 + $15) * t}' "/proc/$(daemon_pid)/stat"; }
# run_fio FS LABEL JOBFILE RUN [fio options]: JSON into $RAW/fio--FS--LABEL--RUN.json and,
# on daxlink, the daemon's CPU ms during the run into ...cpu. Files are laid out first
# (--create_only), outside the measured run.
run_fio() {
  local fs=$1 label=$2 job=$3 base="$RAW/fio--$1--$2--$4" c0
  shift 4
  fio --create_only=1 --output=/dev/null "$@" "$job" 2>"$RAW/fio.err" || { cat "$RAW/fio.err" >&2; die "fio layout $job failed on $fs"; }
  [ "$fs" = daxlink ] && c0=$(daemon_cpu_ms)
  if ! fio --output-format=json --output="$base.json" "$@" "$job" 2>"$RAW/fio.err"; then
    cat "$RAW/fio.err" >&2
    die "fio $job failed on $fs"
  fi
  [ "$fs" = daxlink ] && echo $(( $(daemon_cpu_ms) - c0 )) >"$base.cpu"
  return 0
}
echo "== fio suite (size $JOB_SIZE, verify $VERIFY_SIZE, cap ${RUNTIME}s a job, $NRFILES small files, $FIO_REPEAT runs)"
for job in tests/fio/*.fio; do
  name=$(basename "$job" .fio)
  case $name in verify-*) continue ;; esac
  for i in $(seq 1 "$FIO_REPEAT"); do
    # Alternate which filesystem goes first.
    order="daxlink tmpfs"; [ $((i % 2)) = 0 ] && order="tmpfs daxlink"
    for fs in $order; do
      mnt=$DMNT; [ $fs = tmpfs ] && mnt=$TMNT
      mkdir -p "$mnt/fio"
      fio_env "$mnt/fio" "$mnt/fio/unused" "$JOB_SIZE"
      printf '   %-16s %-8s' "$name" "$fs"
      t=$(now_ns)
      run_fio $fs "$name" "$job" "$i"
      echo " $(ms_since "$t") ms wall"
      rm -rf "$mnt/fio"
    done
  done
done
rss after_fio_suite
# The verify jobs in sequence: write + verify, verify only, cp (a reflink on daxlink,
# a copy on tmpfs) and verify only on the copy.
for fs in daxlink tmpfs; do
  mnt=$DMNT; [ $fs = tmpfs ] && mnt=$TMNT
  fio_env "$mnt" "$mnt/verify.dat" "$VERIFY_SIZE"
  echo "   verify-*         $fs"
  run_fio $fs verify-write tests/fio/verify-write.fio 1
  run_fio $fs verify-only tests/fio/verify-only.fio 1
  t=$(now_ns); cp "$mnt/verify.dat" "$mnt/verify.copy"; sample "cp_verify_file_ms.$fs" "$(ms_since "$t")"
  FIO_FILE=$mnt/verify.copy run_fio $fs verify-only-copy tests/fio/verify-only.fio 1
  rm -f "$mnt/verify.dat" "$mnt/verify.copy"
done
rm -rf "${DMNT:?}"/* "${TMNT:?}"/*
umount "$TMNT"
# The reflink figures start from a fresh image: the fio suite leaves inode-table blocks
# scattered through the free space, and a large fallocate there gets many extents.
dax_umount
"$MKFS" --force --size "$FS_SIZE" "$IMG" >/dev/null
dax_mount

# ---------------------------------------------------------------- reflink
extent_count() { "$DAXLINK" extents --json "$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
clone_times() { # clone_times BASE SAMPLE: REPEAT timed clones of BASE.src (each removed)
  local i t
  for i in $(seq 1 "$REPEAT"); do
    t=$(now_ns); "$DAXLINK" reflink "$1.src" "$DMNT/clone.tmp" >/dev/null
    sample "$2" "$(ms_since "$t")"
    rm -f "$DMNT/clone.tmp"
  done
}
echo "== clone time: $BIG single-extent file against $SMALL"
mkdir -p "$DMNT/r"
for sz in "$BIG" "$SMALL"; do
  fallocate -l "$sz" "$DMNT/r/falloc-$sz.src"
  info "extents.falloc_$sz" "$(extent_count "$DMNT/r/falloc-$sz.src")"
  clone_times "$DMNT/r/falloc-$sz" "clone_ms.falloc_$sz"
done

echo "== clone time against extent count ($EXTENTS)"
for n in $EXTENTS; do
  # One 4 KiB block written every other block: no two extents can merge.
  python3 scripts/bench_report.py fragment "$DMNT/r/frag-$n.src" "$n"
  got=$(extent_count "$DMNT/r/frag-$n.src")
  info "extents.frag_$n" "$got"
  [ "$got" = "$n" ] || echo "bench: warning: frag-$n has $got extents, not $n" >&2
  clone_times "$DMNT/r/frag-$n" "clone_ms.frag_$n"
done
# One clone of each kept, so the image used for the mount timings holds shared extents.
for f in "$DMNT"/r/*.src; do "$DAXLINK" reflink "$f" "${f%.src}.clone" >/dev/null; done

echo "== copy-on-write: fio randwrite 4k on a fresh clone against unshared files ($COW_SIZE)"
cow_fio() { # cow_fio NAME RUN FILE
  local base="$RAW/cow--$1--$2" c0
  c0=$(daemon_cpu_ms)
  fio --output-format=json --output="$base.json" --name=cow --filename="$3" --size="$COW_SIZE" \
    --rw=randwrite --bs=4k --ioengine=psync --fallocate=none --end_fsync=1 \
    --runtime="$RUNTIME" >/dev/null 2>"$RAW/cow.err" || { cat "$RAW/cow.err" >&2; die "fio cow $1"; }
  echo $(( $(daemon_cpu_ms) - c0 )) >"$base.cpu"
}
mkdir -p "$DMNT/cow"
fio --output-format=json --output="$RAW/cow-layout.json" --name=layout \
  --filename="$DMNT/cow/src" --size="$COW_SIZE" --rw=write --bs=1M --ioengine=psync >/dev/null
for i in $(seq 1 "$COW_REPEAT"); do
  rm -f "$DMNT/cow/clone" "$DMNT/cow/unshared" "$DMNT/cow/plain"
  "$DAXLINK" reflink "$DMNT/cow/src" "$DMNT/cow/clone" >/dev/null
  "$DAXLINK" reflink "$DMNT/cow/src" "$DMNT/cow/unshared" >/dev/null
  t=$(now_ns); "$DAXLINK" unshare "$DMNT/cow/unshared"; sample "unshare_ms.cow" "$(ms_since "$t")"
  fio --output-format=json --output=/dev/null --name=plain --filename="$DMNT/cow/plain" \
    --size="$COW_SIZE" --rw=write --bs=1M --ioengine=psync >/dev/null
  # The three files in a rotating order.
  runs=("fresh_clone clone" "unshared_clone unshared" "never_shared plain")
  for k in 0 1 2; do
    set -- ${runs[$(( (k + i) % 3 ))]}
    cow_fio "$1" "$i" "$DMNT/cow/$2"
  done
done
rm -rf "$DMNT/cow"
"$DAXLINK" stat "$DMNT" >"$RAW/stat.txt" || true
rss after_reflink

echo "== mount time of the image holding those files"
dax_umount
for _ in $(seq 1 "$REPEAT"); do
  t=$(now_ns); dax_mount; sample mount_ms.with_files "$(ms_since "$t")"
  rss after_mount_with_files
  dax_umount
done

echo "== page model cost: DRAM per GiB and with 100,000 pins, pin + unpin latency, proxy vs legacy I/O"
# In process (an anonymous 1.25 GiB image) and through two FUSE mounts of its own.
if cargo test --release --quiet --test page_cost -- --ignored --nocapture >"$RAW/page_cost.txt" 2>&1; then
  grep -v '^PAGE_COST_JSON\|^running\|^test \|^$' "$RAW/page_cost.txt" | sed 's/^/  /'
else
  echo "  page_cost failed: see $RAW/page_cost.txt"
fi

python3 scripts/bench_report.py report "$RAW" "$OUT"
