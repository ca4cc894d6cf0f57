#!/usr/bin/env bash
# The telephony page's end-to-end test in headless Chromium, on a fresh Debian
# machine: installs Chromium (Debian package) and the page's npm dependencies when
# missing, builds the page, starts the local API (scripts/run-local.sh) on free
# ports against a fresh database, runs web/test/*.test.mjs with `node --test`, and
# always stops everything it started. Exit code = the test's result.
#   scripts/browser-test.sh
#
# Database: a fresh database in the cluster of TEST_DATABASE_URL (an admin URL, as
# scripts/test.sh sets it) when given, dropped afterwards; else DATABASE_URL as given
# (re-runs work: local-api re-seeds the demo numbers); else a throwaway cluster of its own. Either
# way the test knows the URL and checks rows with psql as well as through the API.
#
# READY_TIMEOUT (seconds, default 2400): how long to wait for the local API; its
# first start compiles local-api. Screenshots and the local API's log go to
# artifacts/. CHROMIUM overrides /usr/bin/chromium.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
READY_TIMEOUT=${READY_TIMEOUT:-2400}
ARTIFACTS_DIR="$ROOT/artifacts"
mkdir -p "$ARTIFACTS_DIR"
STATE_DIR=$(mktemp -d /tmp/telephony-browser-test.XXXXXX)
chmod 755 "$STATE_DIR"
LOCAL_API_LOG="$ARTIFACTS_DIR/browser-test-local-api.log"
TEST_PID=""
CREATED_DB=""
started_all=$(date +%s)

# Every process started for this run carries BROWSER_TEST_RUN=<tag> in its
# environment (Chromium too: Playwright passes the environment on), so what is left
# can be found exactly, without matching names: $RUN_TAG-api for the local API,
# $RUN_TAG-test for the test and its browser.
RUN_TAG=$(basename "$STATE_DIR")
tagged_pids() { # tag-regex
  local f pid
  for f in $(grep -lzxE "BROWSER_TEST_RUN=$1" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${f#/proc/}
    pid=${pid%/environ}
    [ "$pid" != "$$" ] && ps -o stat= -p "$pid" 2>/dev/null | grep -qv '^Z' && echo "$pid"
  done
  return 0
}
wait_until_gone() { # tag seconds: until no process with that tag is left; 1 if some still are
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ -n "$(tagged_pids "$1")" ] || return 0
    sleep 0.1
  done
  return 1
}

# Always: stop the test (its process group: the runner and the test file; Playwright
# closes Chromium on SIGTERM) and the local API (SIGTERM to run-local.sh, which stops
# local-api and whatever it started), then check that nothing is left; drop the test
# database; stop our cluster.
cleanup() {
  local rc=$? left port
  if [ -n "$TEST_PID" ]; then
    kill -TERM -- "-$TEST_PID" 2>/dev/null || true
    wait_until_gone "$RUN_TAG-test" 10 || true
  fi
  if [ -n "${LOCAL_API_PID:-}" ]; then
    kill -TERM "$LOCAL_API_PID" 2>/dev/null || true
    wait_until_gone "$RUN_TAG-api" 30 || true
    wait "$LOCAL_API_PID" 2>/dev/null || true
  fi
  left=$(tagged_pids "$RUN_TAG-(api|test)")
  if [ -n "$left" ]; then
    log "processes left behind (now killed):"
    ps -o pid=,args= -p "$(paste -sd, <<<"$left")" | cut -c1-160 >&2 || true
    xargs -r kill -KILL <<<"$left" 2>/dev/null || true
    [ "$rc" -ne 0 ] || rc=1
  else
    log "everything this run started has stopped (no process left behind)"
  fi
  for port in "${API_PORT:-}" "${STANDINS_PORT:-}" "${WEB_PORT:-}"; do
    if [ -n "$port" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "port $port still answers after the local API stopped"
      [ "$rc" -ne 0 ] || rc=1
    fi
  done
  if [ -n "$CREATED_DB" ]; then
    psql -X -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $CREATED_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  stop_services
  log "browser-test.sh took $(($(date +%s) - started_all))s in all (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Tools: Chromium from Debian, Node from the machine, npm packages via build-web.sh.
if [ ! -x "$CHROMIUM" ]; then apt_install chromium; fi
command -v node >/dev/null || { log "Node.js 20+ is required (node not found)"; exit 1; }
bash scripts/build-web.sh

# 2. The database the local API will use.
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  CREATED_DB="browser_test_$(date +%s)_$$"
  DATABASE_URL=$(create_database "$CREATED_DB")
elif [ -n "${DATABASE_URL:-}" ]; then
  log "using the given DATABASE_URL"
else
  ensure_postgres_installed
  start_postgres # the whole cluster goes away in stop_services
  DATABASE_URL=$(create_database telephony)
fi
export DATABASE_URL

# 3. The local API on free ports, every process of it tagged.
log "starting the local API (log: ${LOCAL_API_LOG#"$ROOT"/}); the first start compiles local-api"
BROWSER_TEST_RUN=$RUN_TAG-api start_local_api

# 4. The test.
log "running the browser test"
started=$(date +%s%N)
# In the background and in a process group of its own, so Ctrl-C/SIGTERM stops it at
# once (cleanup), not after the whole test ran.
(cd web && READY_FILE="$LOCAL_API_READY" DATABASE_URL="$DATABASE_URL" ARTIFACTS_DIR="$ARTIFACTS_DIR" CHROMIUM="$CHROMIUM" \
  BROWSER_TEST_RUN=$RUN_TAG-test exec setsid node --test --test-reporter=spec test/telephony.e2e.test.mjs) </dev/null &
TEST_PID=$!
test_rc=0
wait "$TEST_PID" || test_rc=$?
TEST_PID=""
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
log "browser test took $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))s (exit $test_rc); screenshots in artifacts/"
exit "$test_rc"
