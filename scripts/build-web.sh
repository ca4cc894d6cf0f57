#!/usr/bin/env bash
# Build the telephony page: web/src -> web/dist (index.html, telephony.css, the
# modules compiled by tsc, and vendor/openapi-fetch.js, which index.html's import
# map names). Installs the npm packages with `npm ci` when web/node_modules (or
# web/codegen/node_modules) is missing or older than its package-lock.json.
#
# The API's types, web/src/api.d.ts, are generated from openapi.yaml by
# openapi-typescript (web/codegen: its own package, as it needs TypeScript 5's
# compiler API and the page compiles with TypeScript 7) and committed, so the
# dashboard that copies web/src has them and a review shows how they changed:
#   - by default a stale api.d.ts is regenerated in place (commit it);
#   - with --check, or CI=true, a stale api.d.ts fails the build instead: the
#     committed file must be what openapi.yaml generates.
# Does nothing (in well under a second) when neither the sources, openapi.yaml nor
# the lock files changed since the last build. FORCE=1 rebuilds anyway.
#   scripts/build-web.sh [--check]
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
WEB=$(cd "$(dirname "$0")/../web" && pwd)
OPENAPI="$WEB/../openapi.yaml"
cd "$WEB"

log() { printf '[%s] build-web: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

CHECK=""
[ "${CI:-}" = true ] && CHECK=1
for arg in "$@"; do
  case "$arg" in
    --check) CHECK=1 ;;
    *) log "unknown argument: $arg (usage: scripts/build-web.sh [--check])"; exit 2 ;;
  esac
done

if ! command -v npm >/dev/null 2>&1; then
  log "npm is missing: install Node.js 20+ (e.g. apt-get install nodejs npm)"
  exit 1
fi

# npm packages of a directory: reinstalled when its lock file differs from the one installed.
npm_ci() { # dir tool-that-must-exist
  local dir=$1 lock_sum stamp
  lock_sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  stamp="$dir/node_modules/.installed-lock.sha256"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ] || [ ! -x "$dir/node_modules/.bin/$2" ]; then
    log "npm ci (web${dir#"$WEB"})"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" >"$stamp"
  fi
}
npm_ci "$WEB" tsc
npm_ci "$WEB/codegen" openapi-typescript

# src/api.d.ts from openapi.yaml. `--default-non-nullable false`: a property with a
# default stays optional in request bodies (`smsEnabled`), as the document says.
types_stamp=codegen/node_modules/.api-types.sha256
types_inputs=$(cat "$OPENAPI" codegen/package-lock.json src/api.d.ts "$SELF" 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$types_stamp" 2>/dev/null)" != "$types_inputs" ]; then
  generated=$(mktemp "$WEB/.api-types.XXXXXX")
  trap 'rm -f "$generated"' EXIT
  codegen/node_modules/.bin/openapi-typescript "$OPENAPI" --default-non-nullable false -o "$generated" >/dev/null
  if ! cmp -s "$generated" src/api.d.ts; then
    if [ -n "$CHECK" ]; then
      log "web/src/api.d.ts is not what openapi.yaml generates: run scripts/build-web.sh (without --check, CI unset) and commit web/src/api.d.ts"
      diff -u src/api.d.ts "$generated" | head -n 40 >&2 || true
      exit 1
    fi
    mv "$generated" src/api.d.ts
    log "regenerated web/src/api.d.ts from openapi.yaml: commit it with openapi.yaml"
  fi
  rm -f "$generated"
  cat "$OPENAPI" codegen/package-lock.json src/api.d.ts "$SELF" | sha256sum | cut -d' ' -f1 >"$types_stamp"
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
# The generated client's runtime (no bundler: index.html's import map points
# "openapi-fetch" here). One dependency-free ES module; its source map stays behind.
mkdir "$tmp/vendor"
grep -v '^//# sourceMappingURL=' node_modules/openapi-fetch/dist/index.mjs >"$tmp/vendor/openapi-fetch.js"
echo "$inputs_sum" >"$tmp/.built-from.sha256"
rm -rf dist.old
[ -d dist ] && mv dist dist.old
mv "$tmp" dist
rm -rf dist.old
log "built web/dist"
