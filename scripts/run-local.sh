#!/usr/bin/env bash
# The whole API on localhost, no Docker, no AWS account:
#   scripts/run-local.sh
# Installs PostgreSQL when missing and starts a throwaway cluster (or uses
# DATABASE_URL when set), seals credentials with the local keyring (a dev key kept
# in .local/keyring.key), builds and starts `local-api`: the routes behind a
# local JWT authorizer, stateful Vapi and Twilio stand-ins (or the real providers
# when VAPI_BASE_URL / TWILIO_BASE_URL and their keys are set), and the telephony
# page. With the stand-ins, Twilio offers numbers to buy in area code 415
# (+14155550150…162, two of them needing an address) and toll-free +1833555010x,
# and the demo org's numbers are held under its subaccount at both stand-ins.
# Prints a token and curl lines. Ctrl-C stops everything it started.
#
# Ports: PORT (API, default 8080), STANDINS_PORT (8090), WEB_PORT (8081).
# READY_FILE=path: write {api, web, standins, token} there once serving (scripts).
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"

STATE_DIR=$(mktemp -d /tmp/telephony-local.XXXXXX)
API_PID=""
cleanup() {
  if [ -n "$API_PID" ]; then
    kill -INT "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
  fi
  stop_services
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${DATABASE_URL:-}" ]; then
  ensure_postgres_installed
  start_postgres
  DATABASE_URL=$(TEST_DATABASE_URL="" create_database telephony)
  export DATABASE_URL
  # For other local tools (docs/deploy.md "Running a function locally"): a throwaway
  # cluster with a random password, gone at Ctrl-C.
  log "DATABASE_URL=$DATABASE_URL"
fi

# The local keyring's key: a dev file, made once, never used outside this machine.
if [ -z "${LOCAL_KEYRING_KEY:-}" ] && [ -z "${LOCAL_KEYRING_FILE:-}" ]; then
  mkdir -p .local
  [ -s .local/keyring.key ] || (umask 077 && head -c 32 /dev/urandom | base64 >.local/keyring.key)
  export LOCAL_KEYRING_FILE="$ROOT/.local/keyring.key"
fi
export KEYRING="${KEYRING:-local}"
# The local authorizer's RS256 signing key (PKCS#8 PEM), made once by the local API
# in the same dev directory, so a printed token outlives a restart.
export LOCAL_JWT_KEY_FILE="${LOCAL_JWT_KEY_FILE:-$ROOT/.local/jwt-signing-key.pem}"
# The AWS SDK is built but not called with the local keyring and env secrets; keep
# it from probing the instance metadata service.
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_EC2_METADATA_DISABLED=true
export WEB_DIR="${WEB_DIR:-$ROOT/web/dist}"

# The page needs npm (Node.js 20+); the API runs without it.
if command -v npm >/dev/null 2>&1; then
  bash scripts/build-web.sh
else
  log "npm not found: serving the API without the telephony page (install Node.js 20+)"
fi
log "building local-api"
cargo build -q -p local-api
./target/debug/local-api &
API_PID=$!
wait "$API_PID"
API_PID=""
