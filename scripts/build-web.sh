#!/usr/bin/env bash
# Build the telephony page: web/src -> web/dist (index.html, telephony.css,
# telephony.js compiled by tsc). Installs the npm dev dependencies with `npm ci`
# when web/node_modules is missing or older than web/package-lock.json.
# Does nothing (in well under a second) when neither the sources nor the lock
# file changed since the last build. FORCE=1 rebuilds anyway.
#   scripts/build-web.sh
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
WEB=$(cd "$(dirname "$0")/../web" && pwd)
cd "$WEB"

log() { printf '[%s] build-web: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v npm >/dev/null 2>&1; then
  log "npm is missing: install Node.js 20+ (e.g. apt-get install nodejs npm)"
  exit 1
fi

# npm dependencies: reinstall when the lock file differs from the one installed.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
deps_stamp=node_modules/.installed-lock.sha256
if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$lock_sum" ] || [ ! -x node_modules/.bin/tsc ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$deps_stamp"
fi

# The build's inputs; skip when dist/ was built from exactly these.
inputs_sum=$(cat package-lock.json tsconfig.json "$SELF" $(find src -type f | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)
build_stamp=dist/.built-from.sha256
if [ -z "${FORCE:-}" ] && [ -f dist/index.html ] && [ "$(cat "$build_stamp" 2>/dev/null)" = "$inputs_sum" ]; then
  exit 0
fi

log "building web/dist"
# Build beside dist/ and swap it in, so a running local API never serves half a page.
tmp=$(mktemp -d "$WEB/.dist-build.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
node_modules/.bin/tsc -p . --outDir "$tmp"
cp src/index.html src/*.css "$tmp/"
echo "$inputs_sum" >"$tmp/.built-from.sha256"
rm -rf dist.old
[ -d dist ] && mv dist dist.old
mv "$tmp" dist
rm -rf dist.old
log "built web/dist"
