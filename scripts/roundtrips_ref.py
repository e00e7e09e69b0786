#!/usr/bin/env python3
"""The sequences of tests/roundtrips.rs on another FUSE server, counted from
its libfuse debug output (`--debug-fuse` of libfuse's example
passthrough_hp: one "unique: N, opcode: NAME (n), ..." line per request).

    passthrough_hp --debug-fuse --foreground SRC MNT 2>LOG &
    scripts/roundtrips_ref.py SRC MNT LOG

SRC must be empty: the files the uncached sequences use are made in SRC
directly (not through the mount), so the kernel has not seen them.
Prints one markdown row per sequence: name, requests, requests by opcode.
"""

import collections
import os
import re
import subprocess
import sys
import tempfile
import time

src, mnt, log = sys.argv[1:4]
OP = re.compile(r"^unique: \d+, opcode: (\w+) \(")


def size():
    return os.path.getsize(log)


def settled():
    """The log's length once it has not grown for 300 ms (RELEASE and
    RELEASEDIR come after close returns)."""
    prev = size()
    while True:
        time.sleep(0.3)
        cur = size()
        if cur == prev:
            return cur
        prev = cur


def delta(f):
    a = settled()
    f()
    b = settled()
    with open(log, "rb") as fh:
        fh.seek(a)
        text = fh.read(b - a).decode(errors="replace")
    return collections.Counter(
        m.group(1) for m in map(OP.match, text.splitlines()) if m
    )


def show(what, c):
    ops = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
    print(f"| {what} | {sum(c.values())} | {ops} |", flush=True)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def p(*a):
    return os.path.join(mnt, *a)


def read_old():
    """As Rust's std::fs::read: open, fstat for the size, read to EOF, close."""
    fd = os.open(p("old"), os.O_RDONLY | os.O_CLOEXEC)
    n = os.fstat(fd).st_size
    data = os.read(fd, n + 1)
    assert data == b"twelve bytes" and os.read(fd, 32) == b""
    os.close(fd)


def write(name):
    """As Rust's std::fs::write: open(O_CREAT|O_TRUNC), write, close."""
    fd = os.open(p(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    os.write(fd, b"hello")
    os.close(fd)


def missing():
    try:
        os.stat(p("none"))
    except FileNotFoundError:
        return
    raise AssertionError("none exists")


# The uncached files, made behind the mount's back before any use.
with open(os.path.join(src, "old"), "wb") as f:
    f.write(b"twelve bytes")
os.mkdir(os.path.join(src, "big"))
for i in range(1000):
    open(os.path.join(src, "big", f"f{i:04}"), "w").close()

print("| sequence | requests | by opcode |")
show("stat uncached", delta(lambda: os.stat(p("old"))))
show("stat cached", delta(lambda: os.stat(p("old"))))
show("open+read+close, first", delta(read_old))
show("open+read+close, cached", delta(read_old))
show("open+read+close, cached again", delta(read_old))
show("stat of a missing name", delta(missing))
show("stat of a missing name, again", delta(missing))
show(
    "create+write+close (std::fs::write), negative entry cached",
    delta(lambda: write("none")),
)
show("create+write+close (std::fs::write)", delta(lambda: write("new")))
py = p("py")
show(
    "create+write+close (python3)",
    delta(lambda: sh(f"python3 -c \"open('{py}','wb').write(b'hello')\"")),
)
show("mkdir", delta(lambda: os.mkdir(p("dir"))))
show("unlink", delta(lambda: os.unlink(p("new"))))
show("rename", delta(lambda: os.rename(p("py"), p("dir", "py2"))))
big = p("big")
show("ls, 1,000 entries, cold", delta(lambda: sh(f"ls {big}")))
show("ls, 1,000 entries, warm", delta(lambda: sh(f"ls {big}")))
show("ls -l, 1,000 entries, after ls", delta(lambda: sh(f"ls -l {big}")))
show("ls -l, 1,000 entries, warm", delta(lambda: sh(f"ls -l {big}")))
with tempfile.TemporaryDirectory() as t:
    # The tree of tests/roundtrips.rs `small_tree` (contents differ).
    os.makedirs(os.path.join(t, "a", "b"))
    os.makedirs(os.path.join(t, "c"))
    for i in range(12):
        d = ["", "a", "a/b", "c"][i % 4]
        with open(os.path.join(t, d, f"f{i}"), "wb") as f:
            f.write(os.urandom(i * 750))
    os.symlink("a/f1", os.path.join(t, "link"))
    tree = p("tree")
    # passthrough_hp 3.14 fails utimensat on symlinks and more (cp: "preserving
    # times: Operation not supported"): the copy is made, so count it anyway.
    show("cp -a, 4 directories, 12 files, 1 symlink", delta(lambda: sh(f"cp -a {t} {tree} 2>/dev/null || true")))
    show("rm -rf of it", delta(lambda: sh(f"rm -rf {tree}")))
