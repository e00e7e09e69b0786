#!/usr/bin/env bash
# Regenerate docs/report-{legacy,upstream,proxy}.png from a fresh report: the
# first steps of S1, one model's column each. Run as root (the demo mounts);
# needs chromium and ImageMagick (apt-get install chromium imagemagick).
# DAXLINK picks the binary (default target/release/daxlink), CONVERT
# ImageMagick's convert (default /usr/bin/convert).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DAXLINK:-target/release/daxlink}
IM=${CONVERT:-/usr/bin/convert}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$D" demo --page-model all --report "$tmp/r" >/dev/null
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$tmp/profile" --window-size=1280,4400 \
  --screenshot="$tmp/page.png" "file://$tmp/r/index.html" 2>/dev/null
# Pixel colours of one column or row of the screenshot: "offset colour".
pixels() { "$IM" "$tmp/page.png" -crop "$1" +repage txt:- | awk -F'[ ,:]+' -v c="$2" \
  'NR > 1 && match($0, /#[0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F]/) { print (c == "y" ? $2 : $1), substr($0, RSTART, 7) }'; }
# S1's table begins at the first pixel of the legacy header's colour (#fdd)
# at x=100, left of its text (the summary table has no coloured cell there).
y=$(pixels 1x3000+100+0 y | awk '!found && $2 == "#FFDDDD" { print $1; found = 1 }')
row=$((y + 3))
xs=()
for c in FFDDDD FFE9B3 DDFFDD; do
  xs+=("$(pixels "1280x1+0+$row" x | awk -v c="#$c" '!found && $2 == c { print $1; found = 1 }')")
done
xs+=(1250)
i=0
for name in legacy upstream proxy; do
  x=${xs[$i]}
  w=$(( ${xs[$((i + 1))]} - x ))
  "$IM" "$tmp/page.png" -crop "${w}x1300+$x+$((y - 1))" +repage -strip -colors 64 \
    "PNG8:docs/report-$name.png"
  echo "docs/report-$name.png: $(stat -c %s "docs/report-$name.png") bytes"
  i=$((i + 1))
done
