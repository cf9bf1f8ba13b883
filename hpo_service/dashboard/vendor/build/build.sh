#!/usr/bin/env bash
# Rebuild vendor/echarts.custom.min.js: only the charts and components the dashboard uses
# (echarts-entry.js), about 40% smaller than ECharts' full build, so pages parse it faster.
# Needs node and npm (registry access); nothing of this runs when the dashboard is served.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$HERE/echarts-entry.js" "$WORK/entry.js"
cd "$WORK"
npm install --silent --no-audit --no-fund echarts@6.1.0 esbuild@0.28.2 >/dev/null
npx esbuild entry.js --bundle --minify --format=iife --legal-comments=eof --outfile=echarts.custom.min.js
cp echarts.custom.min.js "$HERE/../echarts.custom.min.js"
cp node_modules/zrender/LICENSE "$HERE/../LICENSE-zrender"
sha256sum "$HERE/../echarts.custom.min.js"
