#!/usr/bin/env bash
# The running local API conforms to openapi.yaml: schemathesis runs every check
# (settings and the two adjusted checks, with reasons, in contract/schemathesis.toml)
# against the routes served by scripts/run-local.sh, and must find zero failures.
#   scripts/contract-test.sh          (DATABASE_URL set: use that database)
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
STATE_DIR=$(mktemp -d /tmp/telephony-contract.XXXXXX)
trap stop_services EXIT
trap 'exit 130' INT TERM

ensure_venv
start_local_api
started=$(date +%s)
# A fixed seed keeps CI reproducible; CONTRACT_SEED=random explores new cases.
seed=()
[ "${CONTRACT_SEED:-}" = random ] || seed=(--seed "${CONTRACT_SEED:-20261125}")
"$VENV/bin/schemathesis" --config-file contract/schemathesis.toml run openapi.yaml \
  --url "$API_URL" -H "Authorization: Bearer $API_TOKEN" "${seed[@]}"
log "contract test took $(($(date +%s) - started))s"
