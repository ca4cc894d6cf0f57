#!/usr/bin/env bash
# Every file in events/ through its function's BUILT artefact (scripts/invoke.sh: the
# Runtime Interface Emulator, the arm64 bootstrap under qemu), each on a fresh
# database with the demo data and a fresh local API (its own stand-ins), checking the
# README's "Sample events" table — the same table local-api/tests/events.rs checks at
# the handler level: a row per event and an event per row, the status, and for a
# refusal its error code. Then two failing starts, which must show as the function's
# own init error: a missing environment variable and a secret ARN that does not exist.
#
#   bash scripts/invoke-events.sh        # after scripts/sam-check.sh (never builds)
#
# Uses TEST_DATABASE_URL's cluster when set (scripts/test.sh), else a throwaway one;
# INVOKE_JOBS events at once (default 4).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh"
cd "$ROOT"

STATE_DIR=$(mktemp -d /tmp/telephony-invoke-events.XXXXXX)
trap stop_services EXIT
trap 'exit 130' INT TERM
started=$SECONDS

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  ensure_postgres_installed
  start_postgres
  export TEST_DATABASE_URL="$PG_ADMIN_URL"
fi
for f in .aws-sam/build/*/bootstrap; do
  [ -x "$f" ] || { log "no built artefacts: run scripts/sam-check.sh first"; exit 1; }
done
# Built once here, not by each local API start at the same time.
cargo build -q -p local-api
if command -v npm >/dev/null 2>&1; then bash scripts/build-web.sh; fi
if ! command -v qemu-aarch64-static >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
  [ "$(uname -m)" = aarch64 ] || apt_install qemu-user-static libc6-arm64-cross
fi

# The README's rows: file, function, promised status, error code (refusals), as
# local-api/tests/events.rs reads them; and the cross-check with events/.
python3 - "$STATE_DIR/cases" <<'PY'
import pathlib, sys
rows = {}
for line in open("README.md"):
    if not line.startswith("| `events/"):
        continue
    cells = [c.strip().strip("`") for c in line.split("|")]
    status = cells[3].split()[0]
    if status == "report":  # a scheduled event: the function's report says `outcome`
        rows[cells[1]] = (cells[2], "report", cells[3].split("`")[1])
        continue
    code = cells[3].split("`")[1] if int(status) >= 400 and "`" in cells[3] else "-"
    rows[cells[1]] = (cells[2], status, code)
files = sorted(f"events/{p.name}" for p in pathlib.Path("events").glob("*.json"))
if files != sorted(rows):
    sys.exit("README's Sample events table and events/ differ: no row for "
             f"{sorted(set(files) - set(rows))}, no file for {sorted(set(rows) - set(files))}")
with open(sys.argv[1], "w") as out:
    for f in files:
        out.write(" ".join([f, *rows[f]]) + "\n")
PY
# Two failing starts: the function's init error must be in the output.
bad_arn="arn:aws:secretsmanager:us-east-1:000000000000:secret:invoke-test-missing-AbCdEf"
cat >>"$STATE_DIR/cases" <<EOF
init:missing-env SaveCredentialFunction events/save-credential.json 'Missing("KEYRING")' --unset KEYRING
init:bad-secret-arn ListNumbersFunction events/list-numbers.json $bad_arn --env DB_SECRET_ARN=$bad_arn
EOF

# One case: its output in $STATE_DIR/out/<n>.log, its verdict in <n>.verdict.
run_case() {
  local n=$1 what=$2 fn=$3 a=$4 b=$5 out="$STATE_DIR/out/$1" t0=$SECONDS rc=0
  shift 5
  if [[ $what == init:* ]]; then
    # No emulator running: the SDK gets no answer for the secret at a closed port.
    local endpoint=${AWS_ENDPOINT_URL:-http://127.0.0.1:9}
    AWS_ENDPOINT_URL=$endpoint bash scripts/invoke.sh "$fn" "$a" --no-build "$@" >"$out.log" 2>&1 || rc=$?
    if [ "$rc" = 3 ] && grep -q "(rapid) INIT RTDONE(status: error)" "$out.log" \
      && grep -v '^invoke:' "$out.log" | grep -qF "$b" && grep -q '^Error: ' "$out.log"; then
      echo "ok   $what ($fn): init error '$(grep -m1 '^Error: ' "$out.log" | cut -c1-150)' ($((SECONDS - t0))s)" >"$out.verdict"
    else
      echo "FAIL $what ($fn): exit $rc, no init error naming $b in the output (see below)" >"$out.verdict"
    fi
    return 0
  fi
  INVOKE_RESPONSE_FILE="$out.json" bash scripts/invoke.sh "$fn" "$what" --no-build >"$out.log" 2>&1 || rc=$?
  local got
  got=$(python3 - "$out.json" "$a" "$b" <<'PY' 2>&1 || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    if sys.argv[2] == "report":  # a scheduled function's answer is its report
        outcome = r.get("outcome")
        print(f"OK report {outcome}" if outcome == sys.argv[3] else
              f"report outcome {outcome!r}, README says {sys.argv[3]}: {json.dumps(r)[:300]}")
        sys.exit()
    body = json.loads(r.get("body") or "null")
except Exception as e:
    print(f"no response: {e}"); sys.exit()
status, want, code = r.get("statusCode"), int(sys.argv[2]), sys.argv[3]
bad = []
if status != want:
    bad.append(f"status {status}, README says {want}")
if code != "-" and ((body or {}).get("error") or {}).get("code") != code:
    bad.append(f"error code {((body or {}).get('error') or {}).get('code')!r}, README says {code}")
if "x-request-id" not in (r.get("headers") or {}):
    bad.append("no x-request-id")
print("; ".join(bad) or f"OK {status}" + (f" {code}" if code != "-" else ""))
PY
)
  if [ "$rc" = 0 ] && [[ $got == OK* ]]; then
    echo "ok   $what ($fn): ${got#OK } ($((SECONDS - t0))s)" >"$out.verdict"
  else
    echo "FAIL $what ($fn): exit $rc: $got" >"$out.verdict"
  fi
}
export -f run_case log free_port free_ports wait_for_port create_database
export STATE_DIR ROOT
mkdir -p "$STATE_DIR/out"
cases=$(wc -l <"$STATE_DIR/cases")
log "invoking $cases cases through the built artefacts, ${INVOKE_JOBS:-4} at a time"
nl -w1 -s' ' "$STATE_DIR/cases" | STATE_DIR=$STATE_DIR xargs -P "${INVOKE_JOBS:-4}" -L 1 bash -c 'run_case "$@"' _

failed=0
for v in $(ls "$STATE_DIR/out/"*.verdict | sort -V); do
  cat "$v"
  if grep -q '^FAIL' "$v"; then
    failed=$((failed + 1))
    sed 's/^/    /' "${v%.verdict}.log" | tail -n 40
  fi
done
[ "$(ls "$STATE_DIR/out/"*.verdict | wc -l)" = "$cases" ] || { log "not every case ran"; failed=$((failed + 1)); }
log "invoke-events: $cases cases, $failed failed, in $((SECONDS - started))s"
[ "$failed" = 0 ]
