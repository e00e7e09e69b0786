#!/usr/bin/env bash
# The main job: build and install, make an image on /dev/shm, mount it,
# show a few files, unmount, check, then run the pinning demonstration and
# write its HTML report (path printed at the end). Run as root on Debian.
# Afterwards the image is unmounted and removed, and the mount point removed
# if this script made it; KEEP=1 leaves the image mounted instead.
# DAXLINK_IMAGE, DAXLINK_MNT and DAXLINK_REPORT (default /tmp/daxlink-report)
# choose the paths.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
IMG=${DAXLINK_IMAGE:-/dev/shm/daxlink-demo.img}
MNT=${DAXLINK_MNT:-/mnt/daxlink-demo}
REPORT=${DAXLINK_REPORT:-/tmp/daxlink-report}
KEEP=${KEEP:-0}
made_mnt=0
[ -d "$MNT" ] || made_mnt=1
mkdir -p "$MNT"
mountpoint -q "$MNT" && umount "$MNT"
rm -f "$IMG"
cleanup() {
  if [ "$KEEP" = 1 ]; then
    return
  fi
  if mountpoint -q "$MNT"; then
    umount "$MNT" || umount -l "$MNT"
  fi
  flock -w 10 "$IMG" true 2>/dev/null || true  # the daemon holds the image until it exits
  rm -f "$IMG"
  if [ "$made_mnt" = 1 ]; then
    rmdir "$MNT" 2>/dev/null || true
  fi
}
trap cleanup EXIT
echo "== mkfs -t daxlink (1 GiB image on /dev/shm)"
(umask 077; truncate -s 1G "$IMG")  # the image is root's alone (docs/SECURITY.md)
mkfs -t daxlink -L demo "$IMG"
echo "== mount -t fuse.daxlink $IMG $MNT"
mount -t fuse.daxlink "$IMG" "$MNT"
grep " $MNT " /proc/mounts
echo "== a few files"
echo "hello from persistent memory" > "$MNT/hello.txt"
mkdir -p "$MNT/docs"
cp README.md "$MNT/docs/"
ln -s ../hello.txt "$MNT/docs/link"
dd if=/dev/urandom of="$MNT/random.bin" bs=1M count=64 status=none
setfattr -n user.origin -v demo "$MNT/hello.txt" 2>/dev/null || true
ls -la "$MNT" "$MNT/docs"
cat "$MNT/docs/link"
sum1=$(sha256sum < "$MNT/random.bin")
df -h "$MNT"
echo "== unmount, fsck, mount again"
umount "$MNT"
flock -w 10 "$IMG" true  # the daemon holds the image until it has exited
fsck -t daxlink -n "$IMG"
mount -t fuse.daxlink "$IMG" "$MNT"
sum2=$(sha256sum < "$MNT/random.bin")
[ "$sum1" = "$sum2" ] && echo "random.bin survived the remount (sha256 matches)"
D=/usr/local/sbin/daxlink
echo "== reflink: cp shares blocks (copy_file_range), writes copy on write"
df --output=used -B1 "$MNT" | tail -1 | sed 's/^/used before cp: /'
cp "$MNT/random.bin" "$MNT/copy.bin"
df --output=used -B1 "$MNT" | tail -1 | sed 's/^/used after cp:  /'
"$D" extents "$MNT/copy.bin"
dd if=/dev/zero of="$MNT/copy.bin" bs=4k count=1 seek=100 conv=notrunc status=none
echo "after writing one block into copy.bin:"
"$D" extents "$MNT/copy.bin"
"$D" reflink "$MNT/random.bin" "$MNT/clone2.bin"
"$D" stat "$MNT"
umount "$MNT"
flock -w 10 "$IMG" true
fsck -t daxlink -n "$IMG"
echo "== the pinning problem: scenarios S1-S9 under the legacy, upstream and proxy page models"
# Prints the table, then "report: PATH" (a picture of every step; open it in a browser).
"$D" demo --page-model all --report "$REPORT"
if [ "$KEEP" = 1 ]; then
  mount -t fuse.daxlink "$IMG" "$MNT"
  echo "== done: KEEP=1, $IMG is mounted at $MNT (umount $MNT; rm $IMG when finished)"
else
  echo "== done: unmounting and removing $IMG (KEEP=1 keeps it)"
fi
