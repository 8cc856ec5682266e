#!/usr/bin/env bash
# The web console's browser assets: htmx and its SSE extension, installed from the npm registry at the
# versions pinned in web/package-lock.json (`npm ci`) and copied into src/opencs/console/static/
# (gitignored). Nothing vendored is committed. Idempotent: a no-op when the copies match the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/opencs/console/static
stamp=$out/.lock
if [ -f "$stamp" ] && cmp -s web/package-lock.json "$stamp" && [ -f "$out/htmx.min.js" ] && [ -f "$out/sse.js" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "console assets: npm not found (apt-get install npm); the console needs $out/htmx.min.js" >&2
  exit 1
fi
echo "==> npm ci (web/): htmx for the console"
npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
mkdir -p "$out"
cp web/node_modules/htmx.org/dist/htmx.min.js "$out/htmx.min.js"
cp web/node_modules/htmx-ext-sse/dist/sse.min.js "$out/sse.js" 2>/dev/null || cp web/node_modules/htmx-ext-sse/sse.js "$out/sse.js"
cp web/package-lock.json "$stamp"
