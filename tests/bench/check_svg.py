#!/usr/bin/env python3
"""Check the benchmark plots (tests/benchtools.rs): each file given must parse
with a strict XML parser (xml.etree) as an <svg> root in the SVG namespace with
a title, an x and a y axis with at least two tick labels each, axis labels, a
legend whose entries name the data series, and data (a polyline or bars);
microseconds written µs, never "us"; a logarithmic x axis fitted to the data
(the last point at least 90 % of the way along it, not a decade short); and
every bar's value printed on it (a bar too short to see still reads).
Exit 0 if all pass, else 1 with one line per problem."""

import re
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"


def check(path):
    problems = []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return [f"{path}: not well-formed XML: {e}"]
    if root.tag != NS + "svg":
        return [f"{path}: root is {root.tag}, not svg"]
    for a in ("width", "height", "viewBox"):
        if a not in root.attrib:
            problems.append(f"{path}: svg has no {a}")

    def by_class(cls):
        return [e for e in root.iter() if e.get("class") == cls]

    def texts(el):
        return [t.text for t in el.iter(NS + "text") if (t.text or "").strip()]

    for cls in ("title", "xlabel", "ylabel"):
        t = by_class(cls)
        if len(t) != 1 or not (t[0].text or "").strip():
            problems.append(f"{path}: no {cls} text")
    for axis in ("x-axis", "y-axis"):
        g = by_class(axis)
        if len(g) != 1:
            problems.append(f"{path}: no {axis} group")
            continue
        if not list(g[0].iter(NS + "line")):
            problems.append(f"{path}: {axis} has no line")
        if len(texts(g[0])) < 2:
            problems.append(f"{path}: {axis} has fewer than 2 labels")
    series = by_class("series")
    if not series:
        problems.append(f"{path}: no data series")
    for s in series:
        if not (list(s.iter(NS + "polyline")) or list(s.iter(NS + "rect"))):
            problems.append(f"{path}: series {s.get('data-name')} has no polyline or bars")
    for t in root.iter(NS + "text"):
        if re.search(r"\bus\b", "".join(t.itertext())):
            problems.append(f"{path}: 'us' for microseconds in {''.join(t.itertext())!r}")
    xa = by_class("x-axis")
    if len(xa) == 1 and xa[0].get("data-log") != "0":
        axis = next(xa[0].iter(NS + "line"), None)
        cx = [float(c.get("cx")) for s in series for c in s.iter(NS + "circle")]
        if axis is not None and cx:
            x1, x2 = float(axis.get("x1")), float(axis.get("x2"))
            if max(cx) < x1 + 0.9 * (x2 - x1):
                problems.append(f"{path}: the x axis runs far past the data "
                                f"(last point at {(max(cx) - x1) / (x2 - x1):.0%})")
    for s in series:
        bars = list(s.iter(NS + "rect"))
        values = [t for t in s.iter(NS + "text") if t.get("class") == "value"]
        if bars and len(values) != len(bars):
            problems.append(f"{path}: series {s.get('data-name')}: {len(bars)} bars, "
                            f"{len(values)} printed values")
    legend = by_class("legend")
    if len(legend) != 1:
        problems.append(f"{path}: no legend")
    else:
        names = texts(legend[0])
        for s in series:
            if s.get("data-name") not in names:
                problems.append(f"{path}: series {s.get('data-name')} is not in the legend")
    return problems


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    problems = [p for f in sys.argv[1:] for p in check(f)]
    for p in problems:
        print(p)
    print(f"{len(sys.argv) - 1} SVG files checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
