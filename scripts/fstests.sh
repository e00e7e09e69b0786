#!/usr/bin/env bash
# Run the real fstests (xfstests) and pjdfstest against the installed daxlink
# (scripts/install.sh first), then print each suite's results. Run as root.
# Not part of scripts/test.sh: CI has no copy of these suites, so this is run by
# hand, from checkouts you fetched yourself (docs/TESTING.md, "fstests and
# pjdfstest"):
#
#   FSTESTS_DIR=/opt/xfstests PJDFSTEST_DIR=/opt/pjdfstest bash scripts/fstests.sh
#
# FSTESTS_DIR    an fstests checkout; built here (make) if it is not built yet.
# PJDFSTEST_DIR  a pjdfstest checkout; built here (autoreconf, configure, make)
#                if its binary is missing. SKIP_PJDFSTEST=1 runs fstests only.
# FSTESTS_ARGS   what ./check runs (default "-g perms", which holds generic/355
#                and 683-685); e.g. FSTESTS_ARGS="generic/355 generic/683".
# WORK           images, fstests' config and results (default /dev/shm/daxlink-fstests).
# MNT            mount points (default /mnt/daxlink-fstests).
# KEEP=1         keep the images afterwards (they live in RAM on /dev/shm: fstests'
#                quick group leaves about 3 GB in them); logs and results are kept.
#
# How fstests sees daxlink: FSTYP=fuse with FUSE_SUBTYP=.daxlink, so it mounts
# with `mount -t fuse.daxlink IMAGE DIR -o allow_other` (mount.fuse3 runs
# daxlink). fstests has no mkfs for fuse: the images are made here, fresh on
# every run. It checks the type that `df -T` shows against FSTYP; a daxlink
# mount shows fuse.daxlink (its subtype, as any libfuse daemon mounted through
# mount.fuse3), so fstests is given a df that prints that type as fuse.
# The users fstests' README asks for (fsgqa, fsgqa2, 123456-fsgqa) are created
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
die() {
  echo "fstests.sh: $*" >&2
  exit 2
}
[ "$(id -u)" = 0 ] || die "run as root (fstests and pjdfstest mount, chown and switch users)"
[ -n "${FSTESTS_DIR:-}" ] || die "set FSTESTS_DIR to an fstests checkout (git clone of xfstests-dev)"
[ -x "$FSTESTS_DIR/check" ] || die "FSTESTS_DIR=$FSTESTS_DIR: no fstests checkout there (no executable 'check')"
if [ -z "${SKIP_PJDFSTEST:-}" ]; then
  [ -n "${PJDFSTEST_DIR:-}" ] || die "set PJDFSTEST_DIR to a pjdfstest checkout (or SKIP_PJDFSTEST=1)"
  [ -f "$PJDFSTEST_DIR/pjdfstest.c" ] && [ -d "$PJDFSTEST_DIR/tests" ] ||
    die "PJDFSTEST_DIR=$PJDFSTEST_DIR: no pjdfstest checkout there (no pjdfstest.c and tests/)"
fi
for t in daxlink mkfs.daxlink mount.fuse3; do
  command -v "$t" >/dev/null || die "$t not found: run scripts/install.sh first"
done
FSTESTS_DIR=$(realpath "$FSTESTS_DIR")
FSTESTS_ARGS=${FSTESTS_ARGS:--g perms}
WORK=${WORK:-/dev/shm/daxlink-fstests}
MNT=${MNT:-/mnt/daxlink-fstests}

# What fstests' README lists for Debian (those its build and these tests use).
pkgs=()
for p in acl attr autoconf automake bc gawk gcc libacl1-dev libaio-dev libattr1-dev \
  libcap-dev libgdbm-dev libtool libtool-bin liburing-dev make perl psmisc python3 \
  uuid-dev uuid-runtime xfsprogs xfslibs-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "== installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
for u in fsgqa fsgqa2 123456-fsgqa; do
  id -u "$u" >/dev/null 2>&1 || { echo "== adding user $u (fstests' _require_user)"; useradd -m "$u"; }
done
getent group fsgqa >/dev/null || groupadd fsgqa

mkdir -p "$WORK" "$MNT/test" "$MNT/scratch" "$MNT/pjd"
chmod 0700 "$WORK"
cleanup() {
  for d in "$MNT/test" "$MNT/scratch" "$MNT/pjd"; do
    if mountpoint -q "$d"; then umount "$d" || umount -l "$d" || true; fi
  done
}
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -f "$WORK"/*.img' EXIT
cleanup

echo "== daxlink: $(daxlink --version 2>&1 | head -1) ($(command -v daxlink)); tree $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
status=0

# ---- fstests
if [ ! -x "$FSTESTS_DIR/ltp/fsstress" ]; then
  echo "== building fstests in $FSTESTS_DIR"
  make -C "$FSTESTS_DIR" -j"$(nproc)" >"$WORK/fstests-build.log" 2>&1 ||
    die "fstests build failed: see $WORK/fstests-build.log"
fi
echo "== fstests $(git -C "$FSTESTS_DIR" rev-parse --short HEAD 2>/dev/null || echo '(not a git checkout)')"
for i in test scratch; do
  mkfs.daxlink -q -f -s 2G "$WORK/$i.img"
done
cat >"$WORK/df" <<'EOF'
#!/bin/sh
# df for fstests: a daxlink mount's type (fuse.daxlink) printed as FSTYP, fuse.
df "$@" | sed 's/ fuse\.daxlink / fuse         /'
EOF
chmod 0755 "$WORK/df"
cat >"$WORK/local.config" <<EOF
export FSTYP=fuse
export FUSE_SUBTYP=.daxlink
export TEST_DEV=$WORK/test.img
export TEST_DIR=$MNT/test
export SCRATCH_DEV=$WORK/scratch.img
export SCRATCH_MNT=$MNT/scratch
export TEST_FS_MOUNT_OPTS="-o allow_other"
export MOUNT_OPTIONS="-o allow_other"
export DF_PROG="$WORK/df -T -P"
export RESULT_BASE=$WORK/results
EOF
# shellcheck disable=SC2086 # FSTESTS_ARGS is a list of words for ./check
if ! (cd "$FSTESTS_DIR" && HOST_OPTIONS="$WORK/local.config" ./check $FSTESTS_ARGS) \
  >"$WORK/fstests.log" 2>&1; then
  status=1
fi
# One line per test, then check's summary (the diffs of failures are in the log).
grep -E '^[a-z0-9]+/[0-9]+ |^(Ran|Not run|Passed|Failures|Failed)' "$WORK/fstests.log" ||
  { cat "$WORK/fstests.log"; status=1; }
echo "   full output: $WORK/fstests.log, results: $WORK/results"
cleanup

# ---- pjdfstest
if [ -z "${SKIP_PJDFSTEST:-}" ]; then
  PJDFSTEST_DIR=$(realpath "$PJDFSTEST_DIR")
  if [ ! -x "$PJDFSTEST_DIR/pjdfstest" ]; then
    echo "== building pjdfstest in $PJDFSTEST_DIR"
    (cd "$PJDFSTEST_DIR" && autoreconf -ifs && ./configure && make pjdfstest) \
      >"$WORK/pjdfstest-build.log" 2>&1 || die "pjdfstest build failed: see $WORK/pjdfstest-build.log"
  fi
  echo "== pjdfstest $(git -C "$PJDFSTEST_DIR" rev-parse --short HEAD 2>/dev/null || echo '(not a git checkout)')"
  mkfs.daxlink -q -f -s 2G "$WORK/pjd.img"
  mount -t fuse.daxlink "$WORK/pjd.img" "$MNT/pjd" -o allow_other
  # pjdfstest works in the current directory, as root.
  if ! (cd "$MNT/pjd" && prove -r "$PJDFSTEST_DIR/tests") >"$WORK/pjdfstest.log" 2>&1; then
    status=1
  fi
  # prove's totals, and its table of failures if any.
  if grep -q '^Test Summary Report' "$WORK/pjdfstest.log"; then
    sed -n '/^Test Summary Report/,$p' "$WORK/pjdfstest.log"
  else
    grep -E '^(All tests successful|Files=|Result:)' "$WORK/pjdfstest.log" || status=1
  fi
  echo "   full output: $WORK/pjdfstest.log"
  cleanup
fi
[ "$status" = 0 ] && echo "== all passed" || echo "== FAILURES (see the logs above)"
exit "$status"
