#!/usr/bin/env bash
# Checks report.html / compare.html pages in a real headless browser (Debian's `chromium`; this
# script installs nothing: `apt-get install -y chromium`). For each page: the DOM after its
# script ran must say `data-rendered="ok"` (set by plot.js once every panel has its SVG; an
# exception sets `error: ...`), and a screenshot is written beside it (PAGE.png, or into
# $SHOTS/ when set).
#
# usage: scripts/report_check.sh PAGE.html [PAGE.html ...]
#        scripts/report_check.sh RUN_FOLDER        (its report.html)
# exit 0 when every page rendered, 1 otherwise, 2 without chromium.
set -euo pipefail
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "report_check: no chromium on PATH (apt-get install -y chromium)" >&2
  exit 2
fi
[ $# -ge 1 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --user-data-dir="$profile")
status=0
for arg in "$@"; do
  page=$arg
  [ -d "$page" ] && page=$page/report.html
  [ -f "$page" ] || { echo "FAIL $arg: no such page" >&2; status=1; continue; }
  url="file://$(realpath "$page")"
  dom=$("$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null)
  rendered=$(printf '%s' "$dom" | grep -o 'data-rendered="[^"]*"' | head -1 || true)
  panels=$(printf '%s' "$dom" | grep -o 'data-panels="[0-9]*"' | head -1 | tr -dc 0-9 || true)
  if [ "$rendered" != 'data-rendered="ok"' ]; then
    echo "FAIL $page: ${rendered:-the page script did not finish}" >&2
    status=1
    continue
  fi
  shot=${SHOTS:+$SHOTS/$(basename "$(dirname "$(realpath "$page")")")-$(basename "$page" .html).png}
  shot=${shot:-${page%.html}.png}
  "$browser" "${flags[@]}" --hide-scrollbars --window-size=1400,2000 --screenshot="$shot" "$url" >/dev/null 2>&1
  echo "ok $page: ${panels:-0} panels drawn; screenshot $shot"
done
exit $status
