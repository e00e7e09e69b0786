#!/usr/bin/env python3
"""Fold `perf script` output into stacks, draw a flame graph as SVG, and say
where the samples went.

    perf script -i perf.data | python3 scripts/flamegraph.py TITLE OUT.svg

Prints one line of shares: the FUSE transport (the kernel's /dev/fuse read
and write paths, context switches and wake-ups), the daemon's own code
(daxlink, fuser), the media layer (copies, flushes), and the rest.
Standard library only; the SVG needs no script to be read.
"""
import collections
import html
import sys


def fold(lines):
    """perf script text -> Counter of 'root;...;leaf' stacks."""
    stacks = collections.Counter()
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                stacks[";".join(reversed(frames))] += 1
            frames = []
            continue
        if not line.startswith((" ", "\t")):
            frames = []  # a sample header line: command, pid, time, event
            continue
        parts = line.strip().split(" ", 1)
        sym = parts[1] if len(parts) > 1 else parts[0]
        sym = sym.split(" (")[0]
        if "+0x" in sym:
            sym = sym.split("+0x")[0]
        frames.append(sym or "?")
    if frames:
        stacks[";".join(reversed(frames))] += 1
    return stacks


def classify(stack):
    leafward = stack.split(";")
    joined = stack
    for f in reversed(leafward):
        if f.startswith("daxlink::media"):
            return "media"
    if "fuse_dev_do_read" in joined or "fuse_dev_do_write" in joined or "fuse_dev_" in joined:
        return "transport"
    if any(k in joined for k in ("schedule", "finish_task_switch", "__wake_up", "futex")):
        return "transport"
    if "daxlink::" in joined or "fuser::" in joined:
        return "daemon"
    return "other"


def tree(stacks):
    root = {"n": 0, "c": {}}
    for st, n in stacks.items():
        node = root
        node["n"] += n
        for f in st.split(";"):
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += n
    return root


def color(name):
    h = sum(ord(c) for c in name) % 60
    if name.startswith("daxlink::"):
        return f"rgb(90,{150 + h},{200 + h // 3})"
    if "[k]" in name or name.islower() and "::" not in name:
        return f"rgb({205 + h // 2},{90 + h},60)"
    return f"rgb({200 + h // 2},{160 + h // 2},70)"


def draw(root, title, width=1200, row=16):
    out = []
    depth = [0]

    def walk(node, name, x, d, scale):
        w = node["n"] * scale
        if w < 0.5:
            return
        depth[0] = max(depth[0], d)
        label = html.escape(name)
        pct = 100.0 * node["n"] / root["n"]
        out.append((d, x, w, label, pct))
        cx = x
        for k, ch in sorted(node["c"].items()):
            walk(ch, k, cx, d + 1, scale)
            cx += ch["n"] * scale

    scale = (width - 20) / max(root["n"], 1)
    walk(root, "all", 10, 0, scale)
    height = (depth[0] + 1) * row + 60
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fdfdf6"/>',
        f'<text x="10" y="20" font-size="14">{html.escape(title)} '
        f"({root['n']} samples)</text>",
    ]
    for d, x, w, label, pct in out:
        y = height - 20 - (d + 1) * row
        svg.append(
            f'<g><title>{label} ({pct:.1f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
            f'fill="{color(label)}"/>'
        )
        chars = int(w / 7)
        if chars >= 4:
            text = label if len(label) <= chars else label[: chars - 2] + ".."
            svg.append(f'<text x="{x + 2:.1f}" y="{y + row - 4}">{text}</text>')
        svg.append("</g>")
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: perf script | flamegraph.py TITLE OUT.svg")
    stacks = fold(sys.stdin)
    total = sum(stacks.values())
    if total == 0:
        sys.exit("flamegraph.py: no samples in the input")
    share = collections.Counter()
    for st, n in stacks.items():
        share[classify(st)] += n
    with open(sys.argv[2], "w") as f:
        f.write(draw(tree(stacks), sys.argv[1]))
    parts = ", ".join(
        f"{k} {100.0 * share[k] / total:.0f}%" for k in ("transport", "daemon", "media", "other")
    )
    print(f"{sys.argv[1]}: {total} samples: {parts}")


if __name__ == "__main__":
    main()
