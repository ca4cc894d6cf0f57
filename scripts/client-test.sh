#!/usr/bin/env bash
# The client test: the TypeScript client a frontend generates from openapi.yaml
# (openapi-typescript's types in web/src/api.d.ts, openapi-fetch) walks every route
# of the running local API and checks each answer against openapi.yaml
# (web/test/client/). On a fresh Debian machine with Node.js 20+: installs the npm
# packages (scripts/build-web.sh, which also regenerates, or under CI=true checks,
# web/src/api.d.ts), type-checks the test with `tsc --strict`, starts the local API
# on free ports, runs the test with `node --test`, and stops what it started.
#   scripts/client-test.sh
#
# Database: a fresh database in the cluster of TEST_DATABASE_URL (an admin URL, as
# scripts/test.sh sets it) when given, dropped afterwards; else DATABASE_URL as given
# (it needs the demo data fresh: the walk buys and releases a number and saves a
# BYOC credential, so a second run on the same database fails); else a throwaway
# cluster of its own.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
STATE_DIR=$(mktemp -d /tmp/telephony-client-test.XXXXXX)
CREATED_DB=""
cleanup() {
  stop_services
  if [ -n "$CREATED_DB" ]; then
    psql -X -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $CREATED_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v node >/dev/null || { log "Node.js 20+ is required (node not found)"; exit 1; }
bash scripts/build-web.sh
log "type-checking the client test (tsc --strict)"
rm -rf web/.client-test
web/node_modules/.bin/tsc -p web/test/client --strict

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  CREATED_DB="client_test_$(date +%s)_$$"
  DATABASE_URL=$(create_database "$CREATED_DB")
  export DATABASE_URL
fi
start_local_api
started=$(date +%s)
(cd web && READY_FILE="$LOCAL_API_READY" OPENAPI_FILE="$ROOT/openapi.yaml" \
  node --test --test-reporter=spec .client-test/walk.test.js) </dev/null
log "client test took $(($(date +%s) - started))s"
