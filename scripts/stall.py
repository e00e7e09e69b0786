#!/usr/bin/env python3
"""Root's stat latency while another user runs long operations (issue: one
user's long operation must not stall everyone). Run by scripts/bench-stall.sh.

  stall.py probe MNT SECONDS        -> prints "p50 p99 max" of stat() in microseconds
  stall.py attack KIND DIR SECONDS  -> runs KIND (dedupe, clone, punch) in DIR until SECONDS pass
"""
import os, subprocess, sys, time

DAXLINK = os.environ.get("STALL_DAXLINK", "daxlink")

FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
BS = 4096


def probe(mnt, secs):
    path = os.path.join(mnt, "probe")
    if not os.path.exists(path):
        open(path, "w").close()
    lat = []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t0 = time.perf_counter_ns()
        os.stat(path)
        # A name the kernel has not cached: every lookup reaches the daemon.
        try:
            os.stat(os.path.join(mnt, "missing-%d" % len(lat)))
        except FileNotFoundError:
            pass
        lat.append((time.perf_counter_ns() - t0) / 1000)
        time.sleep(0.002)
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("%.0f %.0f %.0f %d" % (pick(0.5), pick(0.99), lat[-1], len(lat)))


def dedupe(d, end):
    # Two sparse 16 TiB files, deduped 1 GiB at a time (the cap of one call)
    # with `daxlink dedupe` (FUSE forwards no FIDEDUPERANGE).
    a, b = os.path.join(d, "da"), os.path.join(d, "db")
    for p in (a, b):
        with open(p, "w") as f:
            f.truncate(16 << 40)
    off = 0
    while time.monotonic() < end:
        subprocess.run([DAXLINK, "dedupe", a, b, "--src-offset", str(off), "--dst-offset",
                        str(off), "--length", str(1 << 30)], check=True, stdout=subprocess.DEVNULL)
        off = (off + (1 << 30)) % (16 << 40)


def clone(d, end):
    # A source of 100,000 extents (every other block written), cloned again and again.
    src = os.path.join(d, "csrc")
    fd = os.open(src, os.O_RDWR | os.O_CREAT, 0o600)
    if os.fstat(fd).st_size < (2 * 100_000 - 1) * BS:
        for i in range(100_000):
            os.pwrite(fd, b"x" * BS, 2 * i * BS)
    n = 0
    while time.monotonic() < end:
        dst = os.path.join(d, "cdst%d" % (n % 2))
        subprocess.run([DAXLINK, "reflink", src, dst], check=True, stdout=subprocess.DEVNULL)
        n += 1


def punch(d, end):
    # Allocate 1 GiB, punch all of it, again.
    p = os.path.join(d, "punch")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    while time.monotonic() < end:
        libc.fallocate(fd, 0, 0, 1 << 30)
        libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 1 << 30)


def main():
    if sys.argv[1] == "probe":
        probe(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "attack":
        kind, d, secs = sys.argv[2], sys.argv[3], float(sys.argv[4])
        {"dedupe": dedupe, "clone": clone, "punch": punch}[kind](d, time.monotonic() + secs)
    else:
        sys.exit(__doc__)


main()
