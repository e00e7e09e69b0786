#!/usr/bin/env python3
"""Check the benchmark plots (tests/benchtools.rs): each file given must parse
with a strict XML parser (xml.etree) as an <svg> root in the SVG namespace with
a title, an x and a y axis with at least two tick labels each, axis labels, a
legend whose entries name the data series, and data (a polyline or bars).
Exit 0 if all pass, else 1 with one line per problem."""

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
