#!/usr/bin/env bash
# `sam local invoke` without Docker: one event through a function's BUILT artefact.
#
#   scripts/invoke.sh <LogicalId> events/<file>.json [--arch x86_64] [--config-env NAME]
#       [--parameter-overrides 'K=V K2=V2'] [--env K=V] [--unset K] [--no-build]
#
# - the artefact: .aws-sam/build/<LogicalId>/bootstrap, built with the project's
#   `sam build` (scripts/sam-check.sh) when missing or older than the sources
#   (--no-build: never build, use what is there). --arch x86_64: a native build
#   (cargo build --release of the function's binary, target/release/<binary>).
# - its environment: template.yaml's (Globals + the function's own; parameters from
#   samconfig.toml's parameter_overrides — --config-env, else default, else staging —
#   and --parameter-overrides; AWS::NoValue dropped), with local stand-ins for what
#   needs AWS, each override printed (scripts/invoke_env.py): DATABASE_URL of a local
#   database instead of the DB secret and RDS Proxy, KEYRING=local with the local
#   API's key instead of KMS, the Vapi/Twilio keys from the environment (or the
#   stand-ins' own) instead of the secret ARNs, the providers' base URLs of the local
#   stand-ins; then what Lambda sets (AWS_LAMBDA_FUNCTION_NAME, memory, timeout,
#   region, dummy role credentials). --env K=V / --unset K change it last (e.g. to see
#   a failing start). AWS_ENDPOINT_URL (the AWS emulator), when set, is passed on.
# - the run: AWS's Lambda Runtime Interface Emulator from the SAM CLI package
#   (.venv-sam, the program `sam local invoke` runs in its container), the arm64
#   bootstrap through qemu-aarch64-static (Debian's qemu-user-static and
#   libc6-arm64-cross, installed when missing). The event is POSTed to
#   /2015-03-31/functions/function/invocations; the function's log (with its init
#   error, if it cannot start), the response and the REPORT line are printed.
# - the local services: a running local API when STANDINS_URL (or a READY_FILE of
#   scripts/run-local.sh, whose `standins` it reads) and DATABASE_URL are set; else
#   its own: a database (in TEST_DATABASE_URL's cluster when set, else a throwaway
#   cluster) and scripts/run-local.sh on it, which migrates and seeds the demo org.
#   Everything it started is stopped at the end.
#
# Exit status: 0 the function answered, 3 it failed (init or invocation error),
# other: invoke.sh itself failed. INVOKE_RESPONSE_FILE=path: the response body is
# also written there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh"
cd "$ROOT"

usage() { sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
LOGICAL_ID=$1 EVENT=$2
shift 2
ARCH_ARG="" BUILD=auto
PY_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --arch) ARCH_ARG=$2; shift 2 ;;
    --config-env) PY_ARGS+=(--config-env "$2"); shift 2 ;;
    --parameter-overrides) PY_ARGS+=(--parameter-overrides "$2"); shift 2 ;;
    --env) PY_ARGS+=(--env "$2"); shift 2 ;;
    --unset) PY_ARGS+=(--unset "$2"); shift 2 ;;
    --no-build) BUILD=never; shift ;;
    *) usage ;;
  esac
done
[ -f "$EVENT" ] || { log "no event file $EVENT"; exit 2; }
case ${ARCH_ARG:-arm64} in arm64 | x86_64) ;; *) log "--arch: arm64 or x86_64"; exit 2 ;; esac

SAM_VENV="$ROOT/.venv-sam"
PY="$SAM_VENV/bin/python"
[ -x "$PY" ] || bash scripts/sam-check.sh </dev/null # makes the venv (and builds)

STATE_DIR=$(mktemp -d /tmp/telephony-invoke.XXXXXX)
RIE_PID="" INVOKE_DB=""
cleanup() {
  if [ -n "$RIE_PID" ]; then
    kill "$RIE_PID" 2>/dev/null || true
    wait "$RIE_PID" 2>/dev/null || true
  fi
  stop_local_api
  # A database made in another's cluster (TEST_DATABASE_URL) is dropped; our own
  # cluster goes with stop_services.
  if [ -n "${INVOKE_DB:-}" ] && [ -n "${TEST_DATABASE_URL:-}" ]; then
    psql -X -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $INVOKE_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  stop_services
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the artefact
binary=$("$PY" - "$LOGICAL_ID" <<'PY'
import sys, yaml
class L(yaml.SafeLoader): pass
L.add_multi_constructor("!", lambda l, s, n: None)
r = yaml.load(open("template.yaml"), Loader=L)["Resources"].get(sys.argv[1]) or {}
print(r.get("Metadata", {}).get("BuildProperties", {}).get("Binary", ""))
PY
)
[ -n "$binary" ] || { log "$LOGICAL_ID: not a function of template.yaml (or no BuildProperties.Binary)"; exit 2; }
stale() { # artefact: missing, or older than a source
  [ ! -f "$1" ] || [ -n "$(find Cargo.toml Cargo.lock template.yaml shared functions -newer "$1" -type f \
    -not -path '*/target/*' -print -quit 2>/dev/null)" ]
}
if [ "${ARCH_ARG:-arm64}" = x86_64 ]; then
  BOOTSTRAP="$ROOT/target/release/$binary"
  if [ "$BUILD" = auto ] && stale "$BOOTSTRAP"; then
    log "building $binary for x86_64 (cargo build --release)"
    cargo build -q --release -p "$binary" --bin "$binary"
  fi
else
  BOOTSTRAP="$ROOT/.aws-sam/build/$LOGICAL_ID/bootstrap"
  if [ "$BUILD" = auto ] && stale "$BOOTSTRAP"; then
    log "$BOOTSTRAP is missing or older than the sources: sam build (scripts/sam-check.sh)"
    bash scripts/sam-check.sh </dev/null
  fi
fi
[ -x "$BOOTSTRAP" ] || { log "no artefact $BOOTSTRAP"; exit 2; }
stale "$BOOTSTRAP" && log "note: $BOOTSTRAP is older than the sources (--no-build)"

# --- the emulator and, for arm64 on another machine, qemu
host=$(uname -m)
want=${ARCH_ARG:-arm64}
RIE=$(find "$SAM_VENV" -name "aws-lambda-rie-$([ "$host" = aarch64 ] && echo arm64 || echo x86_64)" | head -n 1)
[ -n "$RIE" ] || { log "no aws-lambda-rie in $SAM_VENV (the SAM CLI package ships it)"; exit 2; }
RUN_BOOTSTRAP="$BOOTSTRAP"
if [ "$want" = arm64 ] && [ "$host" != aarch64 ]; then
  if ! command -v qemu-aarch64-static >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
    apt_install qemu-user-static libc6-arm64-cross
  fi
  RUN_BOOTSTRAP="$STATE_DIR/bootstrap"
  printf '#!/bin/sh\nexec qemu-aarch64-static -L /usr/aarch64-linux-gnu %q "$@"\n' "$BOOTSTRAP" >"$RUN_BOOTSTRAP"
  chmod +x "$RUN_BOOTSTRAP"
fi

# --- the local services
if [ -z "${STANDINS_URL:-}" ] && [ -n "${READY_FILE:-}" ] && [ -s "$READY_FILE" ]; then
  STANDINS_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["standins"])' "$READY_FILE")
fi
if [ -n "${STANDINS_URL:-}" ]; then
  log "using the running local API's stand-ins $STANDINS_URL and DATABASE_URL from the environment"
  INVOKE_DATABASE_URL=${DATABASE_URL:-}
  [ -n "$INVOKE_DATABASE_URL" ] || log "DATABASE_URL is not set: a function with a database cannot start"
else
  if [ -z "${TEST_DATABASE_URL:-}" ]; then
    ensure_postgres_installed
    start_postgres
  fi
  dbname="invoke_$(date +%s%N | tail -c 10)_$$"
  INVOKE_DATABASE_URL=$(create_database "$dbname")
  INVOKE_DB=$dbname
  log "starting a local API on a fresh database ($dbname): migrations, demo org, stand-ins"
  LOCAL_API_LOG="$STATE_DIR/local-api.log" DATABASE_URL="$INVOKE_DATABASE_URL" start_local_api >/dev/null 2>&1 \
    || { log "the local API did not start:"; tail -n 30 "$STATE_DIR/local-api.log" >&2; exit 1; }
  log "local API ready (stand-ins $STANDINS_URL)"
fi

# --- the environment
meta=$(INVOKE_DATABASE_URL="$INVOKE_DATABASE_URL" INVOKE_STANDINS_URL="$STANDINS_URL" \
  INVOKE_TASK_ROOT="$(dirname "$BOOTSTRAP")" \
  "$PY" scripts/invoke_env.py "$LOGICAL_ID" "$STATE_DIR/env.json" --arch "$want" ${PY_ARGS[@]+"${PY_ARGS[@]}"})
eval "$meta" # ARCH TIMEOUT MEMORY FUNCTION_NAME

# --- the run
log "$FUNCTION_NAME: $BOOTSTRAP ($ARCH$([ "$RUN_BOOTSTRAP" != "$BOOTSTRAP" ] && echo ' through qemu-aarch64-static'), ${MEMORY} MB, ${TIMEOUT} s) under $(basename "$RIE")"
# The emulator cannot pick its own ports, so free ones are probed here; another
# process may take one before the emulator binds it (invoke-events runs several at
# once), and then the emulator exits: try again on new ports, at most three times.
for attempt in 1 2 3; do
  read -r RIE_PORT RUNTIME_PORT < <(free_ports 2)
  # The emulator and the function get exactly the environment above (nothing of this shell's).
  (cd "$(dirname "$BOOTSTRAP")" && exec python3 -c 'import json, os, sys
os.execve(sys.argv[2], sys.argv[2:], json.load(open(sys.argv[1])))' "$STATE_DIR/env.json" \
    "$RIE" --runtime-interface-emulator-address "127.0.0.1:$RIE_PORT" \
    --runtime-api-address "127.0.0.1:$RUNTIME_PORT" "$RUN_BOOTSTRAP") >"$STATE_DIR/function.log" 2>&1 &
  RIE_PID=$!
  for ((i = 0; i < 300; i++)); do
    kill -0 "$RIE_PID" 2>/dev/null || break
    (exec 3<>"/dev/tcp/127.0.0.1/$RIE_PORT") 2>/dev/null && break 2
    sleep 0.1
  done
  if kill -0 "$RIE_PID" 2>/dev/null; then
    log "the Runtime Interface Emulator did not listen on port $RIE_PORT within 30s"
    cat "$STATE_DIR/function.log" >&2
    exit 1
  fi
  log "the Runtime Interface Emulator exited before listening (attempt $attempt):"
  cat "$STATE_DIR/function.log" >&2
  [ "$attempt" -lt 3 ] || exit 1
done

log "POST $EVENT"
code=$(curl -sS -o "$STATE_DIR/response.json" -w '%{http_code}' --max-time $((TIMEOUT + 60)) \
  -H 'Content-Type: application/json' --data-binary "@$EVENT" \
  "http://127.0.0.1:$RIE_PORT/2015-03-31/functions/function/invocations") || code=000
# The REPORT line follows the response: give the log a moment to catch up.
if [ "$code" = 200 ]; then
  for _ in $(seq 50); do grep -q 'REPORT RequestId' "$STATE_DIR/function.log" && break; sleep 0.1; done
fi
echo "----- function log -----"
cat "$STATE_DIR/function.log"
echo "----- response (HTTP $code from the emulator) -----"
cat "$STATE_DIR/response.json"; echo
[ -z "${INVOKE_RESPONSE_FILE:-}" ] || cp "$STATE_DIR/response.json" "$INVOKE_RESPONSE_FILE"
report=$(grep -o 'REPORT RequestId.*' "$STATE_DIR/function.log" | tail -n 1 || true)
echo "----- ${report:-no REPORT line}"
if [ "$code" != 200 ] || grep -q '"errorType"' "$STATE_DIR/response.json"; then exit 3; fi
