"""Hand-written SVG plots for scripts/bench.sh (python3 standard library only).

plot(...) returns the text of one self-contained SVG: a title, both axes with
ticks, tick labels and axis labels, a legend, and the data as polylines with
markers (line plots) or grouped bars (bar plots). Logarithmic axes get decade
ticks. Everything is escaped, so the output is well-formed XML.
"""

import math
from xml.sax.saxutils import escape

W, H = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 80, 190, 50, 70
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _attr(v):
    return escape(str(v), {'"': "&quot;"})


def _num(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if a >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _val(v):
    """A bar's value, two significant digits (0.026, 0.17, 1.2)."""
    return f"{v:.2g}" if abs(v) < 10 else f"{v:,.0f}"


def _lin_ticks(lo, hi):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    t, ticks = math.floor(lo / step) * step, []
    while True:
        ticks.append(round(t, 10))
        if t >= hi - step * 1e-9:
            return ticks
        t += step


def _log_ticks(lo, hi):
    """Ticks within [lo, hi]: the decades, and 2 and 5 times them when the
    range holds fewer than three decades."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1,) if b - a >= 3 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in steps]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def _log_range(lo, hi):
    """A log axis fitted to the data: 10 % of room at each end (in log
    terms of the data's span, at least a factor of 1.1), never a whole
    empty decade."""
    if hi <= lo:
        lo, hi = lo / 2, hi * 2
    pad = max((math.log10(hi) - math.log10(lo)) * 0.05, math.log10(1.1))
    return 10 ** (math.log10(lo) - pad), 10 ** (math.log10(hi) + pad)


class _Axis:
    def __init__(self, values, log, p0, p1, zero=False):
        vals = [v for v in values if v is not None and (v > 0 or not log)]
        if not vals:
            vals = [1.0]
        lo, hi = min(vals), max(vals)
        self.log = log
        if log:
            self.lo, self.hi = _log_range(lo, hi)
            self.ticks = _log_ticks(self.lo, self.hi)
            if len(self.ticks) < 2:
                self.ticks = [lo, hi] if hi > lo else [self.lo, self.hi]
        else:
            if zero:
                lo = min(lo, 0)
            self.ticks = _lin_ticks(lo, hi if hi > lo else lo + 1)
            self.lo, self.hi = self.ticks[0], self.ticks[-1]
        self.p0, self.p1 = p0, p1

    def __call__(self, v):
        if self.log:
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + f * (self.p1 - self.p0)


def _frame(out, title, xlabel, ylabel, subtitle):
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
               f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">')
    out.append(f'<title>{escape(title)}</title>')
    out.append(f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>')
    out.append(f'<text class="title" x="{W / 2 - RIGHT / 2 + LEFT / 2}" y="22" '
               f'text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>')
    if subtitle:
        out.append(f'<text class="subtitle" x="{W / 2 - RIGHT / 2 + LEFT / 2}" y="38" '
                   f'text-anchor="middle" font-size="10" fill="#555">{escape(subtitle)}</text>')
    out.append(f'<text class="xlabel" x="{(LEFT + W - RIGHT) / 2}" y="{H - 18}" '
               f'text-anchor="middle">{escape(xlabel)}</text>')
    cy = (TOP + H - BOTTOM) / 2
    out.append(f'<text class="ylabel" x="0" y="0" text-anchor="middle" '
               f'transform="translate(18 {cy}) rotate(-90)">{escape(ylabel)}</text>')


def _yaxis(out, ay):
    x0, x1 = LEFT, W - RIGHT
    out.append(f'<g class="y-axis">')
    out.append(f'<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{H - BOTTOM}" stroke="black"/>')
    for t in ay.ticks:
        y = ay(t)
        out.append(f'<line x1="{x0 - 5}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 8}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>')
    out.append('</g>')


def _legend(out, entries):
    x, y = W - RIGHT + 15, TOP + 5
    out.append('<g class="legend">')
    for i, (name, color, style) in enumerate(entries):
        yy = y + i * 20
        if style == "bar":
            out.append(f'<rect x="{x}" y="{yy}" width="14" height="10" fill="{color}"/>')
        elif style == "dash":
            out.append(f'<line x1="{x}" y1="{yy + 5}" x2="{x + 14}" y2="{yy + 5}" '
                       f'stroke="{color}" stroke-width="2" stroke-dasharray="4 2"/>')
        else:
            out.append(f'<line x1="{x}" y1="{yy + 5}" x2="{x + 14}" y2="{yy + 5}" '
                       f'stroke="{color}" stroke-width="2"/>')
            out.append(f'<circle cx="{x + 7}" cy="{yy + 5}" r="3" fill="{color}"/>')
        out.append(f'<text x="{x + 20}" y="{yy + 10}">{escape(name)}</text>')
    out.append('</g>')


def line_plot(title, xlabel, ylabel, series, xlog=False, ylog=False, subtitle=""):
    """series: [(name, [(x, y), ...])]; points with y None are skipped."""
    out = []
    _frame(out, title, xlabel, ylabel, subtitle)
    pts = [(x, y) for _, s in series for x, y in s if y is not None and x is not None]
    ax = _Axis([p[0] for p in pts], xlog, LEFT, W - RIGHT)
    ay = _Axis([p[1] for p in pts], ylog, H - BOTTOM, TOP, zero=not ylog)
    _yaxis(out, ay)
    out.append(f'<g class="x-axis" data-log="{1 if xlog else 0}">')
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="black"/>')
    for t in ax.ticks:
        x = ax(t)
        out.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 5}" stroke="black"/>')
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{_num(t)}</text>')
    out.append('</g>')
    legend = []
    for i, (name, s) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        good = [(x, y) for x, y in s if y is not None and x is not None
                and (y > 0 or not ylog) and (x > 0 or not xlog)]
        if not good:
            continue
        xy = " ".join(f"{ax(x):.1f},{ay(y):.1f}" for x, y in good)
        out.append(f'<g class="series" data-name="{_attr(name)}">')
        out.append(f'<polyline points="{xy}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in good:
            out.append(f'<circle cx="{ax(x):.1f}" cy="{ay(y):.1f}" r="3.5" fill="{c}">'
                       f'<title>{escape(name)}: {_num(x)}, {_num(y)}</title></circle>')
        out.append('</g>')
        legend.append((name, c, "line"))
    _legend(out, legend)
    out.append('</svg>')
    return "\n".join(out) + "\n"


def bar_plot(title, xlabel, ylabel, categories, series, targets=None, subtitle=""):
    """Grouped bars: series [(name, [value per category or None])]; targets: a
    value per category (or None), drawn as a dashed mark across the group."""
    out = []
    _frame(out, title, xlabel, ylabel, subtitle)
    vals = [v for _, s in series for v in s if v is not None]
    vals += [t for t in (targets or []) if t is not None]
    # Room above the tallest bar for its printed value.
    vals += [max(vals, default=0) * 1.12]
    ay = _Axis(vals, False, H - BOTTOM, TOP, zero=True)
    _yaxis(out, ay)
    n = max(len(categories), 1)
    gw = (W - RIGHT - LEFT) / n
    bw = gw * 0.8 / max(len(series), 1)
    out.append('<g class="x-axis">')
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="black"/>')
    for i, c in enumerate(categories):
        x = LEFT + gw * (i + 0.5)
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{escape(c)}</text>')
    out.append('</g>')
    legend = []
    for j, (name, s) in enumerate(series):
        col = COLORS[j % len(COLORS)]
        out.append(f'<g class="series" data-name="{_attr(name)}">')
        for i, v in enumerate(s):
            if v is None:
                continue
            x = LEFT + gw * i + gw * 0.1 + bw * j
            y0, y1 = ay(max(ay.lo, 0)), ay(v)
            out.append(f'<rect x="{x:.1f}" y="{min(y0, y1):.1f}" width="{bw * 0.9:.1f}" '
                       f'height="{abs(y0 - y1):.1f}" fill="{col}">'
                       f'<title>{escape(name)} {escape(categories[i])}: {_num(v)}</title></rect>')
            # The value above the bar, so that a bar too short to see still reads.
            cx, ty = x + bw * 0.45, min(y0, y1) - 3
            out.append(f'<text class="value" x="0" y="0" font-size="9" fill="#333" '
                       f'transform="translate({cx + 3:.1f} {ty:.1f}) rotate(-90)">{_val(v)}</text>')
        out.append('</g>')
        legend.append((name, col, "bar"))
    if targets:
        out.append('<g class="targets">')
        for i, t in enumerate(targets):
            if t is None:
                continue
            x0, x1 = LEFT + gw * i + gw * 0.05, LEFT + gw * (i + 1) - gw * 0.05
            out.append(f'<line x1="{x0:.1f}" y1="{ay(t):.1f}" x2="{x1:.1f}" y2="{ay(t):.1f}" '
                       f'stroke="black" stroke-width="2" stroke-dasharray="4 2"/>')
        out.append('</g>')
        legend.append(("target", "black", "dash"))
    _legend(out, legend)
    out.append('</svg>')
    return "\n".join(out) + "\n"
