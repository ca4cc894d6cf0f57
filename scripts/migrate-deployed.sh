#!/usr/bin/env bash
# Apply the migrations of a deployed stack: invoke its migrate function once and fail
# when the migration failed.
#
#   scripts/migrate-deployed.sh <stack-name> [--region <region>] [--profile <profile>]
#
# Looks the function up in the stack's outputs (MigrateFunctionName), invokes it
# synchronously with an empty event and prints its answer ({"applied": [...]}, the
# migrations it applied now, [] when the schema was already current). Exit status:
#   0  the function ran and returned normally;
#   1  the function failed: Lambda answered with FunctionError (a migration or login
#      error, a timeout, a crash); its error payload and the tail of its log go to stderr;
#   2  usage;
#   other  the stack or the function could not be reached (the aws command's own status:
#      no credentials, a wrong stack name or region, the function throttled because
#      another migrate run is going: it has reserved concurrency 1).
#
# Why not `aws lambda invoke` alone: it exits 0 whenever Lambda ran the function, even
# when the function failed; the failure is only in the response's FunctionError field
# (docs: "The status code in the API response doesn't reflect function errors").
#
# Needs the AWS CLI (v1 or v2), python3 (to read its JSON), and credentials allowed
# cloudformation:DescribeStacks on the stack and lambda:InvokeFunction on the function.
# Runs no retries: the CLI's own retry of a timed-out call would invoke migrate a second
# time (AWS_MAX_ATTEMPTS=1), and the read timeout is above the function's 300 s timeout
# so the CLI waits for its answer.
set -euo pipefail

usage() {
  sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
STACK=$1
shift
case $STACK in -*) usage ;; esac
AWS_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --region | --profile)
      [ $# -ge 2 ] || usage
      AWS_ARGS+=("$1" "$2")
      shift 2
      ;;
    *) usage ;;
  esac
done

command -v aws >/dev/null || {
  echo "migrate-deployed: the AWS CLI (aws) is not installed" >&2
  exit 127
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/migrate-deployed.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The function's name from the stack's outputs ("None" or empty: no such output).
fn=$(aws cloudformation describe-stacks ${AWS_ARGS[@]+"${AWS_ARGS[@]}"} --stack-name "$STACK" \
  --query "Stacks[0].Outputs[?OutputKey=='MigrateFunctionName'].OutputValue | [0]" --output text)
if [ -z "$fn" ] || [ "$fn" = None ]; then
  echo "migrate-deployed: stack $STACK has no MigrateFunctionName output" >&2
  exit 1
fi
echo "migrate-deployed: invoking $fn (stack $STACK)" >&2

# The event: {} from a file (fileb:// sends the bytes as they are, in CLI v1 and v2
# alike, without --cli-binary-format). --log-type Tail returns the last 4 KB of the
# run's log, base64, in LogResult.
printf '{}' >"$WORK/event.json"
rc=0
AWS_MAX_ATTEMPTS=1 AWS_RETRY_MODE=standard aws lambda invoke ${AWS_ARGS[@]+"${AWS_ARGS[@]}"} \
  --function-name "$fn" --invocation-type RequestResponse --log-type Tail \
  --payload "fileb://$WORK/event.json" --cli-read-timeout 330 --cli-connect-timeout 10 \
  --output json "$WORK/response.json" >"$WORK/meta.json" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "migrate-deployed: the invoke itself failed (aws exited $rc): see the message above; nothing is known about the migration" >&2
  exit "$rc"
fi

# {"StatusCode": 200, "FunctionError": "Unhandled", "LogResult": "...", "ExecutedVersion": "$LATEST"}
read -r status function_error < <(python3 - "$WORK/meta.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(m.get("StatusCode", ""), m.get("FunctionError") or "-")
PY
)
if [ "$function_error" != "-" ] || [ "$status" != 200 ]; then
  {
    echo "migrate-deployed: $fn FAILED (StatusCode $status, FunctionError $function_error); its error:"
    cat "$WORK/response.json"
    echo
    echo "----- the end of its log (all of it: /aws/lambda/$STACK/migrate) -----"
    python3 - "$WORK/meta.json" <<'PY'
import base64, json, sys
m = json.load(open(sys.argv[1]))
print(base64.b64decode(m.get("LogResult") or "").decode("utf-8", "replace"))
PY
  } >&2
  exit 1
fi
cat "$WORK/response.json"
echo
echo "migrate-deployed: OK" >&2
