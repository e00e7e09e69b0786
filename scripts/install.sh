#!/usr/bin/env bash
# Build daxlink in release mode and install daxlink, mkfs.daxlink, fsck.daxlink,
# libdaxlink_client.so (the shim of `daxlink run`), daxlink-holder and daxlink-fsx (the
# file system exerciser) into /usr/local/sbin, so that
# `mkfs -t daxlink`, `fsck -t daxlink`, `mount -t daxlink IMAGE DIR` and `mount -t fuse.daxlink IMAGE DIR` (and
# /etc/fstab) work. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v setpriv >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Not --quiet: cargo shows its progress bar on a terminal (and one line per crate
# otherwise), so a first build of several minutes does not look hung.
cargo build --release --workspace
install -m 0755 target/release/daxlink /usr/local/sbin/daxlink
install -m 0755 target/release/mkfs-daxlink /usr/local/sbin/mkfs.daxlink
install -m 0755 target/release/fsck-daxlink /usr/local/sbin/fsck.daxlink
# The direct-access shim, next to daxlink: `daxlink run` looks for it there.
install -m 0755 target/release/libdaxlink_client.so /usr/local/sbin/libdaxlink_client.so
# The holder process of `daxlink demo --real`, next to daxlink: the demo looks for it there.
install -m 0755 target/release/daxlink-holder /usr/local/sbin/daxlink-holder
# The file system exerciser (docs/TESTING.md, "fsx under daxlink run").
install -m 0755 target/release/daxlink-fsx /usr/local/sbin/daxlink-fsx
# mount(8) runs mount.fuse3 for type fuse.daxlink; it looks for `daxlink` on a standard PATH.
# For type daxlink (`mount -t daxlink`, fstab type daxlink) mount(8) runs
# /sbin/mount.daxlink SPEC DIR -o OPTS, looking only in /sbin, /sbin/fs.d and
# /sbin/fs (libmount's helper path, not PATH): daxlink run under that name is
# the helper, linked from /usr/local/sbin and from /sbin.
ln -sfn daxlink /usr/local/sbin/mount.daxlink
ln -sfn /usr/local/sbin/mount.daxlink /sbin/mount.daxlink
echo "installed: $(ls /usr/local/sbin/{daxlink,mkfs.daxlink,fsck.daxlink,mount.daxlink,libdaxlink_client.so,daxlink-holder,daxlink-fsx} /sbin/mount.daxlink | tr '\n' ' ')"
