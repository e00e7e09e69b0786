#!/bin/bash
# Scale benchmark (as root): what mkfs writes and an empty mount reads, for
# several device sizes. For each size: make a sparse image in DIR with
# `mkfs-daxlink --sparse` (time; bytes allocated, from du), drop the page
# cache, mount it (time; bytes of the image resident afterwards, from
# fincore; the daemon's VmRSS), unmount, remove the image.
#
#   scripts/scale.sh [BINDIR] [DIR] [SIZE...]
#   scripts/scale.sh target/release /var/tmp 16G 1T
#
# Use a disk directory (/var/tmp) for large sizes: the images are sparse and
# mkfs allocates only a few hundred KiB, whatever the size.
set -u
B=${1:-target/release}; D=${2:-/var/tmp}; shift 2 2>/dev/null || shift $#
SIZES=${*:-16G 1T}
MNT=$(mktemp -d /tmp/daxlink-scale-mnt.XXXXXX)
IMG=""
cleanup() {
    mountpoint -q "$MNT" && umount "$MNT"
    [ -n "$IMG" ] && rm -f "$IMG"
    rmdir "$MNT" 2>/dev/null
}
trap cleanup EXIT INT TERM
now() { date +%s.%N; }
for S in $SIZES; do
    IMG=$D/daxlink-scale-$$-$S.img
    rm -f "$IMG"
    (umask 077; truncate -s "$S" "$IMG")
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); "$B/mkfs-daxlink" -q --sparse "$IMG" || exit 1; t1=$(now)
    mk=$(echo "$t1 - $t0" | bc)
    alloc=$(du -k "$IMG" | cut -f1)
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); "$B/daxlink" mount "$IMG" "$MNT" || exit 1; t1=$(now)
    mt=$(echo "$t1 - $t0" | bc)
    pid=$(pgrep -f "mount $IMG $MNT -f" | head -1)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    res=$(fincore -b -n -o RES "$IMG")
    umount "$MNT"; sleep 0.5
    rm -f "$IMG"; IMG=""
    printf 'size %-5s mkfs %6.3f s, %8d KiB allocated | empty mount %6.3f s, %10d bytes of the image resident, daemon VmRSS %d KiB\n' \
        "$S" "$mk" "$alloc" "$mt" "$res" "$rss"
done
