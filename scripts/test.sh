#!/usr/bin/env bash
# The whole test suite, with all its set-up, on a fresh Debian machine with Rust:
# installs PostgreSQL and the Python venv (moto) when missing, starts a throwaway
# PostgreSQL cluster and the AWS emulator, runs every test (cargo tests, then the
# contract test of the running local API, the browser test of the telephony page,
# the generated TypeScript client's walk of every route,
# sam validate --lint and sam build, every sample event through the built artefacts),
# stops what it started.
#   scripts/test.sh [extra args for cargo nextest run / cargo test]
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"

STATE_DIR=$(mktemp -d /tmp/telephony-test.XXXXXX)
trap stop_services EXIT
trap 'exit 130' INT TERM

ensure_postgres_installed
ensure_venv
start_postgres
start_moto
export_emulator_env
export TEST_DATABASE_URL="$PG_ADMIN_URL"

started=$(date +%s)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --exclude benchmarks --no-fail-fast "$@"
else
  cargo test --workspace --exclude benchmarks --no-fail-fast "$@"
fi
log "cargo tests took $(($(date +%s) - started))s"

# The running local API against openapi.yaml, on a fresh database in the same cluster.
contract_db=$(create_database contract)
DATABASE_URL="$contract_db" bash scripts/contract-test.sh
# The telephony page in headless Chromium against the local API (fresh database).
bash scripts/browser-test.sh
# The client generated from openapi.yaml walks every route of the local API (fresh database).
bash scripts/client-test.sh
# The deploy path, offline: sam validate --lint, sam build (eight arm64 bootstraps).
bash scripts/sam-check.sh </dev/null
# Each zipped bootstrap against its budget in scripts/size-budget.json (the CI profile's
# under CI=true, the deployed profile's otherwise).
bash scripts/size-check.sh
# Every sample event through the artefacts just built (no second build): the Runtime
# Interface Emulator, the arm64 bootstraps under qemu, a fresh demo database and local
# API per event, the README's Sample events table; and two failing starts.
bash scripts/invoke-events.sh </dev/null
log "all tests took $(($(date +%s) - started))s"
