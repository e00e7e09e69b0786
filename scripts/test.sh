#!/usr/bin/env bash
# The whole test suite: installs what the tests need (fuse3, fio, xfsprogs, attr,
# acl, e2fsprogs, util-linux (script, fincore), rsync, tar, python3 (the benchmark
# report, its plot check and the report test) and chromium (the report test),
# builds and installs the tools, checks formatting and lints, runs every test
# (unit, property, mounted integration tests). Run as root on Debian.
#
# `scripts/test.sh --stress` runs the same with a CPU hog on every core (one
# busy loop per CPU, all killed at exit): the suite must pass on a loaded
# machine too, not only on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stress" ]; then
  hogs=()
  for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    hogs+=($!)
  done
  trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
  echo "stress: ${#hogs[@]} CPU hog(s) running beside the suite"
fi
pkgs=()
for p in fuse3 fio xfsprogs attr acl e2fsprogs util-linux rsync tar python3 chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
bash scripts/install.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Mounted tests use /dev/fuse and mount(2): run as root. Tests run in parallel
# (each mounts its own image); cap threads on small machines.
cargo test --workspace --release --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
# The suites that use the data path, names, permissions, reflinks and the
# page model, again over FUSE-over-io_uring (transport=uring; the kernel's
# switch on; tests/uring.rs checks that the ring threads serve).
echo Y > /sys/module/fuse/parameters/enable_uring
DAXLINK_TEST_OPTS=transport=uring cargo test --release --no-fail-fast \
  --test posix --test trust --test reflink --test fio --test interfaces --test datapath \
  --test pages --test goingdown --test shutdown --test reflink_stress -- --test-threads="${TEST_THREADS:-4}"
echo "all tests passed"
