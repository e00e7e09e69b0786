#!/usr/bin/env bash
# Benchmarks: daxlink against tmpfs, plus reflink, scale, mount and memory figures, and SVG plots.
#
#   bash scripts/bench.sh                # full run (26 minutes on 2 cores under load 7-10,
#                                        # 8 of them for the 1 TiB image; and about 5 more
#                                        # for benches/direct_cost.rs)
#   BENCH_QUICK=1 bash scripts/bench.sh  # small sizes, about 2 minutes: checks the script works
#
# As root: builds and installs daxlink (scripts/install.sh; BENCH_NO_INSTALL=1 skips it),
# makes a daxlink image on /dev/shm mounted at one directory and a tmpfs of the same size
# at another, then:
#  - headline: fio psync on a 1 GiB file (3 s a run, median of 3, the filesystems
#    alternating): sequential write and read 1 MiB, random read and write 4 KiB, with
#    numjobs 1, 2 and 4 (a file per job, 1 GiB in all), and 100,000 file creates from a
#    python loop; ratio daxlink/tmpfs against the targets, for daxlink over /dev/fuse (the
#    default transport), over io_uring (a second image mounted with transport=uring;
#    the script turns the kernel's /sys/module/fuse/parameters/enable_uring on) and
#    "direct": the same fio jobs on the /dev/fuse mount under `daxlink run` (the direct-
#    access shim libdaxlink_client.so preloaded: reads and overwrites are loads and
#    stores into the image), with the direct-access targets (docs/BENCHMARKS.md);
#  - cost against directory size (create and missed-lookup time as the directory grows to
#    100,000 entries) and against file size (cp and daxlink reflink of 4 MiB to 1 GiB);
#  - the other tests/fio/*.fio jobs on both (randrw, mmap, fsync-append, small files, the
#    verify jobs);
#  - on daxlink: clone time of a large single-extent file against a small one and against
#    the source's extent count, copy-on-write random writes on a fresh clone, mount time
#    and daemon memory, the page-model cost (benches/page_cost.rs), what direct access costs
#    each page model and what its FOPEN_DIRECT_IO costs the kernel path
#    (benches/direct_cost.rs), and DRAM per file and
#    per extent (tests/dram.rs);
#  - scale: for a 16 GiB and a 1 TiB sparse image in BENCH_BIG_DIR (default /var/tmp, a
#    disk directory) holding 100,000 files (benches/scale_image.rs makes them): mkfs time
#    and bytes written, mount time, daemon VmRSS/VmHWM, and how much of the image the
#    mount faulted in (`fincore` of the image, Rss of the daemon's mapping).
# Timings are repeated (BENCH_REPEAT, default 5; 3 when quick) and the median reported.
# Prints tables, writes everything as JSON to BENCH_OUT (default
# /tmp/daxlink-bench-DATE.json) and SVG plots next to it (OUT-fio-ratio.svg,
# OUT-clone-vs-extents.svg, OUT-cost-vs-file-size.svg, OUT-cost-vs-dir-size.svg).
# Ends with scripts/bench-meta.sh (metadata on daxlink, passthrough_hp and tmpfs; OUT-meta.json).
# BENCH_BIN=DIR runs DIR/daxlink and DIR/mkfs-daxlink (e.g. target/release) instead of
# installing; BENCH_BIG_SIZES overrides the scale sizes ("16G 1T"; "1G 4G" when quick).
# Everything it mounted or created is unmounted and removed on exit, also on failure or
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it mounts a FUSE filesystem and a tmpfs)"
command -v fio >/dev/null || die "fio is not installed (scripts/test.sh installs it: apt-get install fio)"
command -v python3 >/dev/null || die "python3 is needed for the report (scripts/bench_report.py)"
command -v fincore >/dev/null || die "fincore (util-linux) is needed for the scale figures"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  FS_SIZE=1G JOB_SIZE=64M VERIFY_SIZE=16M RUNTIME=1 NRFILES=500
  BIG=64M SMALL=4M EXTENTS="1 100 1000" COW_SIZE=32M REPEAT=${BENCH_REPEAT:-3} COW_REPEAT=1
  FIO_REPEAT=1
  HL_SIZE=64M HL_RUNTIME=1 HL_REPEAT=1 CREATES=5000 FILE_SIZES="1M 4M 16M"
  BIG_SIZES=${BENCH_BIG_SIZES:-1G 4G} BIG_FILES=5000
else
  FS_SIZE=4G JOB_SIZE=256M VERIFY_SIZE=128M RUNTIME=3 NRFILES=4000
  BIG=1G SMALL=4M EXTENTS="1 1000 10000 100000" COW_SIZE=256M REPEAT=${BENCH_REPEAT:-5} COW_REPEAT=3
  FIO_REPEAT=3
  HL_SIZE=1G HL_RUNTIME=3 HL_REPEAT=3 CREATES=100000 FILE_SIZES="4M 16M 64M 256M 1G"
  BIG_SIZES=${BENCH_BIG_SIZES:-16G 1T} BIG_FILES=100000
fi
# Mounts of each scale image: each one reads the image back from the disk.
SCALE_REPEAT=$(( REPEAT < 3 ? REPEAT : 3 ))
BIG_DIR=${BENCH_BIG_DIR:-/var/tmp}
OUT=${BENCH_OUT:-/tmp/daxlink-bench-$(date +%Y%m%d-%H%M%S).json}
mkdir -p "$(dirname "$OUT")"

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
[ -f "$(dirname "$DAXLINK")/libdaxlink_client.so" ] \
  || die "libdaxlink_client.so is not next to $DAXLINK (the direct column runs fio under \`daxlink run\`)"

WORK=$(mktemp -d /tmp/daxlink-bench.XXXXXX)
IMG=/dev/shm/daxlink-bench-$$.img
DMNT=$WORK/daxlink
TMNT=$WORK/tmpfs
UIMG=/dev/shm/daxlink-bench-uring-$$.img
UMNT=$WORK/uring
RAW=$WORK/raw
mkdir -p "$DMNT" "$TMNT" "$UMNT" "$RAW"
# mnt_of FS: where daxlink (transport=dev), direct (the same mount, fio under `daxlink run`),
# uring (transport=uring) or tmpfs is mounted.
mnt_of() { case $1 in daxlink | direct) echo "$DMNT" ;; uring) echo "$UMNT" ;; *) echo "$TMNT" ;; esac; }
# run_of FS: the command prefix fio runs under on FS.
run_of() { [ "$1" = direct ] && echo "$DAXLINK run --"; true; }

CLEAN_BIG=
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
  for d in "$DMNT" "$TMNT" "$UMNT"; do
    if mountpoint -q "$d"; then umount "$d" 2>/dev/null || umount -l "$d"; fi
  done
  wait_daemon_gone
  rm -f "$IMG" "$UIMG"
  [ -n "$CLEAN_BIG" ] && rm -f "$CLEAN_BIG"
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
info headline_size "$HL_SIZE"
info headline_runtime_s "$HL_RUNTIME"
info headline_repeat "$HL_REPEAT"
info creates "$CREATES"
info big_dir "$BIG_DIR"
info big_sizes "$BIG_SIZES"
info big_files "$BIG_FILES"
info cpu "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
info mem_total_kib "$(awk '/^MemTotal/{print $2}' /proc/meminfo)"
info loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
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
# The same filesystem over FUSE-over-io_uring, for the headline only.
echo Y >/sys/module/fuse/parameters/enable_uring || die "this kernel has no FUSE over io_uring"
"$MKFS" --size "$FS_SIZE" "$UIMG" >/dev/null
"$DAXLINK" mount "$UIMG" "$UMNT" -o transport=uring

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
# ---------------------------------------------------------------- headline
# fio psync, HL_SIZE in all (a file per job), HL_RUNTIME s a run, HL_REPEAT runs; within
# each run the four jobs go daxlink then tmpfs, or the other way round in even runs.
echo "== headline: fio psync, $HL_SIZE in all, ${HL_RUNTIME}s a run, $HL_REPEAT runs, numjobs 1 2 4"
HL_JOBS="seqwrite:write:1M seqread:read:1M randread:randread:4k randwrite:randwrite:4k"
hl_fio() { # hl_fio FS DIR NJ RW BS [fio options]
  local dir=$2 nj=$3 rw=$4 bs=$5
  shift 5
  echo --name=hl --directory="$dir" --numjobs="$nj" --size=$(( $(numfmt --from=iec "$HL_SIZE") / nj )) \
    --rw="$rw" --bs="$bs" --ioengine=psync --time_based --runtime="$HL_RUNTIME" "$@"
}
# The order of the filesystems turns by one each run (creates: the three mounts; fio: and
# direct, which shares daxlink's files).
order_of() { case $(($1 % 3)) in 1) echo daxlink uring tmpfs ;; 2) echo uring tmpfs daxlink ;; *) echo tmpfs daxlink uring ;; esac; }
hl_order_of() { case $(($1 % 4)) in 1) echo daxlink direct uring tmpfs ;; 2) echo direct uring tmpfs daxlink ;; 3) echo uring tmpfs daxlink direct ;; *) echo tmpfs daxlink direct uring ;; esac; }
for nj in 1 2 4; do
  for fs in daxlink uring tmpfs; do
    mnt=$(mnt_of $fs)
    mkdir -p "$mnt/hl"
    # Lay out (write) the files once for every run with this numjobs.
    # shellcheck disable=SC2046
    fio --output=/dev/null $(hl_fio $fs "$mnt/hl" $nj read 1M --create_only=1) >/dev/null
  done
  for i in $(seq 1 "$HL_REPEAT"); do
    order=$(hl_order_of "$i")
    for j in $HL_JOBS; do
      IFS=: read -r name rw bs <<<"$j"
      for fs in $order; do
        mnt=$(mnt_of $fs)
        printf '   %-10s j%-2s %-8s run %s\n' "$name" "$nj" "$fs" "$i"
        base="$RAW/fio--$fs--hl.$name.j$nj--$i"
        case $fs in daxlink | direct) c0=$(daemon_cpu_ms) ;; esac
        # shellcheck disable=SC2046
        $(run_of $fs) fio --output-format=json --output="$base.json" $(hl_fio $fs "$mnt/hl" $nj "$rw" "$bs") \
          2>"$RAW/fio.err" || { cat "$RAW/fio.err" >&2; die "fio headline $name j$nj on $fs"; }
        case $fs in daxlink | direct) echo $(( $(daemon_cpu_ms) - c0 )) >"$base.cpu" ;; esac
      done
    done
  done
  rm -rf "$DMNT/hl" "$TMNT/hl" "$UMNT/hl"
done

# File creates from a python loop into one directory, with the create and missed-lookup
# cost as the directory grows (bench_report.py creates); alternating like the fio runs.
echo "== headline: $CREATES file creates (python loop, one directory), $HL_REPEAT runs"
for i in $(seq 1 "$HL_REPEAT"); do
  for fs in $(order_of "$i"); do
    mnt=$(mnt_of $fs)
    python3 scripts/bench_report.py creates "$mnt/creates" "$CREATES" >"$RAW/creates--$fs--$i.json"
    printf '   creates  %-8s run %s: %s\n' "$fs" "$i" \
      "$(python3 -c 'import json,sys; print("{:,.0f} creates/s".format(json.load(open(sys.argv[1]))["rate_per_s"]))' "$RAW/creates--$fs--$i.json")"
    t=$(now_ns); rm -rf "$mnt/creates"; sample "rm_creates_ms.$fs" "$(ms_since "$t")"
  done
done

umount "$UMNT"
rm -f "$UIMG"

# Cost against file size: cp (copy_file_range; shares blocks on daxlink, copies on tmpfs)
# and `daxlink reflink` of files of FILE_SIZES, written by fio first.
echo "== cost against file size ($FILE_SIZES): cp on both, daxlink reflink"
for sz in $FILE_SIZES; do
  for fs in daxlink tmpfs; do
    mnt=$DMNT; [ $fs = tmpfs ] && mnt=$TMNT
    mkdir -p "$mnt/fsz"
    fio --output=/dev/null --name=fsz --filename="$mnt/fsz/src" --size="$sz" --rw=write --bs=1M \
      --ioengine=psync >/dev/null
    for _ in $(seq 1 "$REPEAT"); do
      t=$(now_ns); cp "$mnt/fsz/src" "$mnt/fsz/copy"; sample "filesize_cp_ms.$fs.$sz" "$(ms_since "$t")"
      rm -f "$mnt/fsz/copy"
      if [ $fs = daxlink ]; then
        t=$(now_ns); "$DAXLINK" reflink "$mnt/fsz/src" "$mnt/fsz/copy" >/dev/null
        sample "filesize_reflink_ms.$sz" "$(ms_since "$t")"
        rm -f "$mnt/fsz/copy"
      fi
    done
    rm -rf "$mnt/fsz"
  done
done

echo "== other fio jobs (size $JOB_SIZE, verify $VERIFY_SIZE, cap ${RUNTIME}s a job, $NRFILES small files, $FIO_REPEAT runs)"
for job in tests/fio/*.fio; do
  name=$(basename "$job" .fio)
  # The verify jobs run below; the four headline jobs ran above.
  case $name in verify-* | seq-read | seq-write | rand-read | rand-write) continue ;; esac
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
if cargo bench --quiet --bench page_cost >"$RAW/page_cost.txt" 2>&1; then
  grep -v '^PAGE_COST_JSON\|^running\|^test \|^$' "$RAW/page_cost.txt" | sed 's/^/  /'
else
  echo "  page_cost failed: see $RAW/page_cost.txt"
fi

echo "== direct access per page model (MAP grants/s, pins for direct mmap/s, direct accesses/s) and FOPEN_DIRECT_IO's cost"
# benches/direct_cost.rs: mounts of its own (one per page model, one for fio), processes under
# `daxlink run` (the library built beside target/release/daxlink); BENCH_QUICK=1 runs its short mode.
if DIRECT_COST_QUICK=$QUICK cargo bench --quiet --bench direct_cost >"$RAW/direct_cost.txt" 2>&1; then
  grep -v '^DIRECT_COST_JSON\|^$' "$RAW/direct_cost.txt" | sed 's/^/  /'
else
  echo "  direct_cost failed: see $RAW/direct_cost.txt"
fi

echo "== DRAM per file and per extent: daemon RssAnon with 100,000 of each, minus an empty mount"
# tests/dram.rs fills the images in process, mounts each for real and reads /proc/PID/status.
if cargo test --release --quiet --test dram -- --nocapture dram_per_file >"$RAW/dram.txt" 2>&1; then
  j=$(sed -n 's/^.*DRAM_JSON //p' "$RAW/dram.txt")
  for k in bytes_per_empty_file bytes_per_one_block_file bytes_per_extent; do
    v=$(printf '%s' "$j" | python3 -c "import json,sys; print(json.load(sys.stdin)['$k'])")
    echo "  $k: $v"
    sample "dram.$k" "$v"
  done
else
  echo "  dram failed: see $RAW/dram.txt"
fi

# ---------------------------------------------------------------- scale
# Sparse images of BIG_SIZES in BIG_DIR (a disk directory: today mkfs writes 1/64 of the
# device, ~17 GB for 1 TiB), each made and filled with BIG_FILES empty files in process by
# benches/scale_image.rs (mkfs time and bytes written come from there), then, with the
# image's pages dropped from the page cache: mount time, the daemon's VmRSS/VmHWM, and how
# much of the image the mount faulted in (fincore: resident pages of the image file;
# smaps: Rss of the daemon's mapping of it).
echo "== scale: sparse images of $BIG_SIZES in $BIG_DIR with $BIG_FILES files"
cargo bench --quiet --bench scale_image --no-run >"$RAW/bench_scale_build.txt" 2>&1 \
  || { cat "$RAW/bench_scale_build.txt" >&2; die "cannot build benches/scale_image.rs"; }
for sz in $BIG_SIZES; do
  BIMG=$BIG_DIR/daxlink-bench-$$-$sz.img
  CLEAN_BIG=$BIMG
  bytes=$(numfmt --from=iec "$sz")
  # mkfs writes about 1/64 of the device today; keep 2 GiB spare on the disk.
  need=$(( bytes / 64 + (2 << 30) ))
  avail=$(( $(df --output=avail -B1 "$BIG_DIR" | tail -n1) ))
  if [ "$avail" -lt "$need" ]; then
    echo "   $sz: skipped, $BIG_DIR has $((avail >> 20)) MiB free, mkfs may need $((need >> 20)) MiB"
    info "scale.$sz.skipped" "only $((avail >> 20)) MiB free in $BIG_DIR"
    continue
  fi
  BENCH_SCALE_IMAGE=$BIMG BENCH_SCALE_SIZE=$sz BENCH_SCALE_FILES=$BIG_FILES \
    cargo bench --quiet --bench scale_image >"$RAW/scale-$sz.txt" 2>&1 \
    || { cat "$RAW/scale-$sz.txt" >&2; die "benches/scale_image.rs failed for $sz"; }
  grep '^BENCH_SCALE_JSON ' "$RAW/scale-$sz.txt" | cut -d' ' -f2- >"$RAW/scale--$sz.json"
  for i in $(seq 1 "$SCALE_REPEAT"); do
    python3 scripts/bench_report.py dropcache "$BIMG"
    t=$(now_ns); "$DAXLINK" mount "$BIMG" "$DMNT"; ms=$(ms_since "$t"); sample "scale.$sz.mount_ms" "$ms"
    pid=$(pgrep -f -- "daxlink mount $BIMG " | head -n1)
    for k in VmRSS VmHWM RssAnon RssFile; do
      sample "scale.$sz.$k" "$(awk -v k="$k:" '$1 == k {print $2}' "/proc/$pid/status")"
    done
    sample "scale.$sz.map_rss_kib" "$(awk -v f="$BIMG" '$NF == f {m=1; next} /^[0-9a-f]+-[0-9a-f]+ /{m=0} m && $1 == "Rss:" {s += $2} END {print s+0}' "/proc/$pid/smaps")"
    sample "scale.$sz.fincore_bytes" "$(fincore -b -n -o RES "$BIMG" | tr -d ' ')"
    [ "$i" = 1 ] && sample "scale.$sz.entries_root" "$(find "$DMNT" -maxdepth 1 -mindepth 1 | wc -l)"
    umount "$DMNT"
    for _ in $(seq 1 500); do pgrep -f -- "daxlink mount $BIMG " >/dev/null || break; sleep 0.02; done
    echo "   $sz run $i: mount $ms ms"
  done
  rm -f "$BIMG"
  CLEAN_BIG=
done
info loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

python3 scripts/bench_report.py report "$RAW" "$OUT"
python3 scripts/bench_report.py plots "$OUT" "$(dirname "$OUT")" "$(basename "${OUT%.json}")-"


# Metadata side by side with passthrough_hp: its own mounts, table and JSON.
BENCH_META_REPEAT=$((QUICK == 1 ? 1 : 3)) BENCH_OUT="${OUT%.json}-meta.json" bash scripts/bench-meta.sh
