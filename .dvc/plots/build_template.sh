#!/usr/bin/env bash
# Rebuild offline_template.html: DVC's default plots page loads vega from a CDN and shows
# blank charts without internet, so vega, vega-lite and vega-embed are inlined here.
# Needs node + npm (the npm registry). Usage: bash .dvc/plots/build_template.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0)
{
  printf '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC Plot (offline)</title>\n'
  printf '<!-- vega 5.33.1, vega-lite 5.23.0, vega-embed 6.29.0 (BSD-3-Clause), inlined by build_template.sh -->\n'
  for f in vega/build/vega.min.js vega-lite/build/vega-lite.min.js vega-embed/build/vega-embed.min.js; do
    printf '<script>\n'
    # an inline script must not contain a closing script tag
    sed 's#</script#<\\/script#g' "$work/node_modules/$f"
    printf '\n</script>\n'
  done
  printf '<style>table { border-spacing: 15px; } body { font-family: sans-serif; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n'
} > "$here/offline_template.html"
echo "wrote $here/offline_template.html ($(wc -c < "$here/offline_template.html") bytes)"
