#!/usr/bin/env bash
# A smoke test of a deployed stack: status, search, buy, change assistant, release,
# printing each answer. It BUYS A REAL NUMBER (Twilio charges its first month, e.g.
# 1.15 USD for a US local number, whether or not it is released the same minute) and
# releases it again; see docs/deploy.md "Smoke test".
#
#   scripts/smoke.sh <api-url> <token> --env staging
#   scripts/smoke.sh <api-url> <token> --env production --yes-buy-a-real-number-in-production
#
# <token>: a JWT of the org to test with, carrying the read and write scopes (the
# stack's ReadScope and WriteScope). The script cannot tell a production stack from
# its URL, so it asks: without `--env` it refuses, and with `--env production` it
# refuses unless told a second time.
#
# Environment: SMOKE_ASSISTANT_ID (required: a Vapi assistant of the stack's Vapi org,
# lowercase UUID), SMOKE_ASSISTANT_ID_2 (the assistant to change to; default the
# same), SMOKE_AREA_CODE (default 415), SMOKE_COUNTRY (default US),
# SMOKE_WAIT_SECS (how long to wait for a purchase or release left pending; default
# 120). Needs curl and python3.
set -euo pipefail

usage() { sed -n '2,19p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
api=${1%/}
token=$2
shift 2
env="" confirmed=""
while [ $# -gt 0 ]; do
  case $1 in
    --env) env=${2:-}; shift 2 ;;
    --yes-buy-a-real-number-in-production) confirmed=1; shift ;;
    *) usage ;;
  esac
done
case $env in
  staging|local) ;;
  production)
    [ -n "$confirmed" ] || {
      echo "smoke: refusing to buy a real number in production without --yes-buy-a-real-number-in-production" >&2
      exit 2
    } ;;
  *) echo "smoke: say which stack this is: --env staging (or production, told twice)" >&2; exit 2 ;;
esac
assistant=${SMOKE_ASSISTANT_ID:?set SMOKE_ASSISTANT_ID to a Vapi assistant of the stack Vapi org}
assistant2=${SMOKE_ASSISTANT_ID_2:-$assistant}
area=${SMOKE_AREA_CODE:-415}
country=${SMOKE_COUNTRY:-US}
wait_secs=${SMOKE_WAIT_SECS:-120}

# call METHOD PATH [BODY]: prints the answer, sets $status and $body.
call() {
  local method=$1 path=$2 data=${3:-}
  local out
  out=$(mktemp)
  if [ -n "$data" ]; then
    status=$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$api$path" \
      -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$data")
  else
    status=$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$api$path" \
      -H "Authorization: Bearer $token")
  fi
  body=$(cat "$out")
  rm -f "$out"
  printf '%s %s -> %s\n%s\n\n' "$method" "$path" "$status" "$body"
}

field() { # field JSON PYTHON-EXPR: the value, or empty
  python3 -c 'import json,sys
d=json.loads(sys.argv[1])
try:
    v=eval(sys.argv[2], {"d": d})
except Exception:
    v=None
print("" if v is None else v)' "$1" "$2"
}

expect() { # expect STATUS...: fail unless $status is one of them
  for s in "$@"; do [ "$status" = "$s" ] && return 0; done
  echo "smoke: FAILED: answered $status, expected $*" >&2
  exit 1
}

# state_of NUMBER: the number's status in the org's status
state_of() {
  call GET "/api/managed-telephony/status?include=released" >/dev/null
  field "$body" "next((n['status'] for n in d['numbers'] if n['phoneNumber'] == '$1'), None)"
}

wait_for() { # wait_for NUMBER STATE
  local deadline=$(( $(date +%s) + wait_secs )) now
  while :; do
    now=$(state_of "$1")
    [ "$now" = "$2" ] && { echo "smoke: $1 is $2"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "smoke: FAILED: $1 still $now after ${wait_secs}s" >&2; exit 1; }
    sleep 5
  done
}

echo "== status"
call GET /api/managed-telephony/status
expect 200

echo "== search ($country, area code $area)"
call GET "/api/managed-telephony/available-numbers?country=$country&areaCode=$area&limit=5"
expect 200
number=$(field "$body" "d['numbers'][0]['phoneNumber']")
[ -n "$number" ] || { echo "smoke: FAILED: no number offered to buy" >&2; exit 1; }
echo "smoke: buying $number (this costs money)"

echo "== buy"
call POST /api/managed-telephony/numbers "{\"phoneNumber\":\"$number\",\"assistantId\":\"$assistant\"}"
expect 201 202
# From here on, whatever happens, try to release what may have been bought.
trap 'echo "smoke: releasing $number after a failure" >&2; call DELETE "/api/managed-telephony/numbers/${number/+/%2B}" >&2 || true' EXIT
[ "$status" = 201 ] || wait_for "$number" active
encoded=${number/+/%2B}

echo "== change assistant"
call PATCH "/api/managed-telephony/numbers/$encoded" "{\"assistantId\":\"$assistant2\"}"
expect 200 202

echo "== release"
call DELETE "/api/managed-telephony/numbers/$encoded"
expect 200 202
trap - EXIT
[ "$status" = 200 ] || wait_for "$number" released
echo "smoke: OK ($number bought, routed, released)"
