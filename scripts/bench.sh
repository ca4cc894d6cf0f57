#!/usr/bin/env bash
# Latency benchmarks against the same local services the tests use.
#   scripts/bench.sh [benchmark-binary ...]   (default: all of benchmarks/src/bin)
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"
STATE_DIR=$(mktemp -d /tmp/telephony-bench.XXXXXX)
trap stop_services EXIT
trap 'exit 130' INT TERM
ensure_postgres_installed
ensure_venv
start_postgres
start_moto
export_emulator_env
export TEST_DATABASE_URL="$PG_ADMIN_URL"
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=($(ls benchmarks/src/bin | sed 's/\.rs$//'))
cargo build -q --profile benchmark -p benchmarks
for b in "${bins[@]}"; do
  log "benchmark: $b"
  "target/benchmark/$b"
done
