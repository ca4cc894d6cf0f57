#!/usr/bin/env bash
# Benchmarks against the same local services the tests use.
#   scripts/bench.sh [name ...]
# Names: the latency benchmarks of benchmarks/src/bin (default: all of them), and
# `coldstart`, the cold-start benchmark, never run by default (it needs the release
# bootstraps, a fat-LTO build of minutes, and the local API):
#   scripts/bench.sh coldstart
#     each route's release bootstrap (x86_64, native) started fresh COLDSTART_RUNS
#     times (default 9) under a Lambda Runtime API emulator (benchmarks/src/bin/
#     coldstart.rs), COLDSTART_WARM (default 50) more invocations of the same event
#     per start, against a fresh demo database and the local API's stand-ins; in the
#     same run a hello-world lambda_http binary, the floor of the database routes
#     (benchmarks/src/bin/floor-list-numbers.rs: the runtime loop, one connection
#     with list-numbers' settings, its status statement; each route's cold start is
#     also shown as floor + overhead) and a Node.js 20 peer of list-numbers
#     (benchmarks/node-peer). COLDSTART_FAST_SCRAM=0: the routes and the floor
#     with the registry's SCRAM instead of the patched one (patches/README.md). COLDSTART_ROUTES picks routes (default all
#     six); COLDSTART_ENV="K=V ..." changes every route's environment last (e.g.
#     RUST_LOG=debug); COLDSTART_WRAP="cmd args" starts every target under a
#     profiler (e.g. "strace -f -tt -o /tmp/cs/trace", "perf record -g -o ..."), so
#     its figures are the profiler's, not the function's; logs and results.json go
#     to COLDSTART_DIR (default artifacts/coldstart). See README "Benchmarks".
#   COLDSTART_SHAPE=deployed scripts/bench.sh coldstart
#     the production-shaped mode: every secret the template names by ARN fetched
#     from the AWS emulator's Secrets Manager, KMS for the keyring, both over TLS
#     (AWS_ENDPOINT_URL https, AWS_CA_BUNDLE), Postgres over TLS (verify-full), each
#     behind an RTT relay (benchmarks/src/bin/relay.rs): COLDSTART_RTT_MS (default
#     1: in-region) per round trip, COLDSTART_SM_MS (15) and COLDSTART_KMS_MS (5)
#     of service time per Secrets Manager / KMS request; COLDSTART_DB_AUTH=password
#     (SCRAM, the login's secret; default) or iam (an IAM auth token to an RDS
#     Proxy stand-in, no secret). The Node peer is left out (it reads DATABASE_URL).
# `audit_scale`, the carrier audit's scale benchmark (benchmarks/src/bin/
# audit_scale.rs: 10,000 subaccounts × 10 numbers in the stand-ins, minutes), is
# never run by default either:
#   scripts/bench.sh audit_scale
#     AUDIT_BENCH_ORGS / AUDIT_BENCH_NUMBERS (10000 × 10), AUDIT_BENCH_RTT_MS
#     (0,50: the stand-ins' delay per answer), AUDIT_BENCH_SHORT_SECS (40: a budget
#     the pass needs several runs for), AUDIT_CONCURRENCY / AUDIT_BATCH as deployed.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"
cd "$ROOT"

# benchmarks/src/bin programs that are not latency benchmarks: the cold-start
# benchmark's emulator and its hello-world peer; and the audit's scale benchmark,
# run only by name.
NOT_LATENCY=" coldstart hello-lambda floor-list-numbers audit_scale relay "
ROUTES=(list-numbers save-credential release-number search-numbers buy-number update-number)

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in benchmarks/src/bin/*.rs; do
    b=$(basename "$f" .rs)
    [[ $NOT_LATENCY == *" $b "* ]] || names+=("$b")
  done
fi
latency=() coldstart=""
for n in "${names[@]}"; do
  case $n in
    coldstart) coldstart=1 ;;
    hello-lambda|floor-list-numbers|relay) log "$n is a part of the cold-start benchmark: scripts/bench.sh coldstart"; exit 2 ;;
    *)
      [ -f "benchmarks/src/bin/$n.rs" ] || { log "no benchmark $n (benchmarks/src/bin, or coldstart)"; exit 2; }
      latency+=("$n")
      ;;
  esac
done

STATE_DIR=$(mktemp -d /tmp/telephony-bench.XXXXXX)
trap stop_services EXIT
trap 'exit 130' INT TERM
ensure_postgres_installed
ensure_venv
start_postgres

if [ ${#latency[@]} -gt 0 ]; then
  start_moto
  (
    export_emulator_env
    export TEST_DATABASE_URL="$PG_ADMIN_URL"
    cargo build -q --profile benchmark -p benchmarks
    for b in "${latency[@]}"; do
      log "benchmark: $b"
      "target/benchmark/$b"
    done
  )
fi

[ -n "$coldstart" ] || exit 0

# ------------------------------------------------------------------ coldstart
runs=${COLDSTART_RUNS:-9} warm=${COLDSTART_WARM:-50}
out=${COLDSTART_DIR:-$ROOT/artifacts/coldstart}
read -r -a routes <<<"${COLDSTART_ROUTES:-${ROUTES[*]}}"
for r in "${routes[@]}"; do
  [[ " ${ROUTES[*]} " == *" $r "* ]] || { log "COLDSTART_ROUTES: $r is not one of ${ROUTES[*]}"; exit 2; }
done
shape=${COLDSTART_SHAPE:-local}
case $shape in
  local|deployed) ;;
  *) log "COLDSTART_SHAPE: $shape is not local or deployed"; exit 2 ;;
esac
db_auth=${COLDSTART_DB_AUTH:-password}
case $db_auth in
  password|iam) ;;
  *) log "COLDSTART_DB_AUTH: $db_auth is not password or iam"; exit 2 ;;
esac
node=""
if [ "$shape" = local ]; then
  node=$(command -v node || true)
  if [ -z "$node" ] || [ "$("$node" -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    log "coldstart needs Node.js 20+ for its Node peer (node: ${node:-not found})"
    exit 2
  fi
fi

# The bootstraps exactly as the release profile builds them (one invocation, so
# features unify across the six functions only, as in `cargo build --release`), then
# the peer and the emulator (the benchmarks package's own, separate, invocation).
pkgs=()
for r in "${routes[@]}"; do pkgs+=(-p "$r"); done
# COLDSTART_FAST_SCRAM=0 builds the routes and the floor peer with the registry's
# SCRAM (patches/README.md) instead of the patched one the routes have by default.
if [ "${COLDSTART_FAST_SCRAM:-1}" = 0 ]; then
  route_features=(--no-default-features) peer_features=()
else
  route_features=() peer_features=(--features fast-scram)
fi
log "coldstart: release build of ${routes[*]} (fat LTO: minutes when the sources changed)"
cargo build -q --release "${pkgs[@]}" ${route_features[@]+"${route_features[@]}"}
log "coldstart: release build of the hello-world and floor peers, the emulator and the relay"
cargo build -q --release -p benchmarks ${peer_features[@]+"${peer_features[@]}"} \
  --bin hello-lambda --bin floor-list-numbers --bin coldstart --bin relay
[ "$shape" = local ] && (
  cd benchmarks/node-peer
  stamp=node_modules/.package-lock.sha
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "coldstart: npm ci (benchmarks/node-peer)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" >"$stamp"
  fi
)

# The production shape's remote ends: the AWS emulator and Postgres over TLS (one
# self-signed certificate for localhost), each behind the RTT relay.
RELAY_PID=""
trap '[ -z "$RELAY_PID" ] || kill "$RELAY_PID" 2>/dev/null || true; stop_services' EXIT
if [ "$shape" = deployed ]; then
  rtt=${COLDSTART_RTT_MS:-1} sm_ms=${COLDSTART_SM_MS:-15} kms_ms=${COLDSTART_KMS_MS:-5}
  start_moto
  tls="$STATE_DIR/tls"
  mkdir -p "$tls"
  # Not a CA (rustls refuses a CA certificate as a server's own), trusted as itself.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$tls/key.pem" -out "$tls/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null
  # Postgres's own TLS (the relay only delays its bytes): its key readable by the
  # cluster's owner alone, as Postgres requires.
  cp "$tls/cert.pem" "$tls/key.pem" "$STATE_DIR/pg/"
  chmod 600 "$STATE_DIR/pg/key.pem"
  [ "$(id -u)" -ne 0 ] || chown postgres "$STATE_DIR/pg/cert.pem" "$STATE_DIR/pg/key.pem"
  psql -X -q "$PG_ADMIN_URL" -c "ALTER SYSTEM SET ssl = on" \
    -c "ALTER SYSTEM SET ssl_cert_file = '$STATE_DIR/pg/cert.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$STATE_DIR/pg/key.pem'" -c "SELECT pg_reload_conf()" >/dev/null
  rm -f "$STATE_DIR/relay.json"
  target/release/relay --rtt-ms "$rtt" --ready-file "$STATE_DIR/relay.json" \
    --cert "$tls/cert.pem" --key "$tls/key.pem" \
    --tcp "pg=127.0.0.1:$PG_PORT" --pg-iam "pgiam=127.0.0.1:$PG_PORT" \
    --https "aws=127.0.0.1:$MOTO_PORT" \
    --service-ms "secretsmanager.=$sm_ms" --service-ms "TrentService.=$kms_ms" \
    >"$STATE_DIR/relay.log" 2>&1 &
  RELAY_PID=$!
  for _ in $(seq 100); do [ -s "$STATE_DIR/relay.json" ] && break; sleep 0.1; done
  [ -s "$STATE_DIR/relay.json" ] || { cat "$STATE_DIR/relay.log" >&2; log "the relay did not start"; exit 1; }
  log "coldstart: deployed shape, RTT ${rtt} ms, Secrets Manager +${sm_ms} ms, KMS +${kms_ms} ms, DB_AUTH=$db_auth (relay: $(cat "$STATE_DIR/relay.json"))"
  # The keyring is KMS's, for the local API (which seals the demo org's slot) and
  # the routes alike.
  export_emulator_env
  KMS_KEY_ID=$("$VENV/bin/python" -c 'import boto3, os
print(boto3.client("kms", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_key()["KeyMetadata"]["Arn"])')
  export KEYRING=kms KMS_KEY_ID
fi

# A fresh demo database and the local API on it: migrations, the demo org the events
# act as, the Vapi/Twilio stand-ins.
db=$(TEST_DATABASE_URL="" create_database "coldstart_$$")
log "coldstart: starting the local API (demo org, stand-ins) on a fresh database"
DATABASE_URL="$db" start_local_api
mkdir -p "$out"
rm -f "$out"/*.log "$out"/results.json

# Each function's environment: the template's, with the local stand-ins, as
# scripts/invoke.sh gives it (scripts/invoke_env.py); the emulator adds
# AWS_LAMBDA_RUNTIME_API. Secrets (the database password, local keys) stay in
# $STATE_DIR, removed at exit.
extra=()
for kv in ${COLDSTART_ENV:-}; do extra+=(--env "$kv"); done
logical_id() { # binary → the template's function whose BuildProperties.Binary it is
  "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
class L(yaml.SafeLoader): pass
L.add_multi_constructor("!", lambda l, s, n: None)
res = yaml.load(open("template.yaml"), Loader=L)["Resources"]
print(next(k for k, r in res.items()
           if (r or {}).get("Metadata", {}).get("BuildProperties", {}).get("Binary") == sys.argv[1]))
PY
}
env_for() { # binary → $STATE_DIR/env.<binary>.json
  local id
  id=$(logical_id "$1")
  env -u AWS_ENDPOINT_URL INVOKE_DATABASE_URL="$db" INVOKE_STANDINS_URL="$STANDINS_URL" \
    INVOKE_TASK_ROOT="$ROOT/target/release" \
    "$VENV/bin/python" scripts/invoke_env.py "$id" "$STATE_DIR/env.$1.json" --arch x86_64 \
    ${extra[@]+"${extra[@]}"} >/dev/null 2>"$out/env.$1.txt"
}
# The peers run with list-numbers' environment (the Node peer reads DATABASE_URL,
# ORG_CLAIM and READ_SCOPE from it).
env_for list-numbers
for r in "${routes[@]}"; do [ "$r" = list-numbers ] || env_for "$r"; done
if [ "$shape" = deployed ]; then
  envs=()
  for r in list-numbers "${routes[@]}"; do envs+=("$STATE_DIR/env.$r.json"); done
  # Secrets into the emulator, the logins through the relay (scripts/coldstart_deployed.py);
  # it prints the logins, which the IAM stand-in's backend logs in as without a
  # password (only over plain loopback TCP, which nothing but the relay uses).
  logins=$("$VENV/bin/python" scripts/coldstart_deployed.py "${envs[@]}" --relay "$STATE_DIR/relay.json" \
    --aws-url "http://127.0.0.1:$MOTO_PORT" --cert "$tls/cert.pem" --auth "$db_auth" --kms-key "$KMS_KEY_ID")
  if [ "$db_auth" = iam ]; then
    hba="$STATE_DIR/pg/pg_hba.conf"
    dbname=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).path.lstrip("/"))' "$db")
    { for l in $logins; do printf 'hostnossl %s %s 127.0.0.1/32 trust\n' "$dbname" "$l"; done; cat "$hba"; } >"$hba.new"
    cat "$hba.new" >"$hba" && rm -f "$hba.new"
    psql -X -q "$PG_ADMIN_URL" -c "SELECT pg_reload_conf()" >/dev/null
  fi
fi

# The order: the peers beside list-numbers (the Node peer reads what list-numbers
# reads), the read-only routes, then the ones that change the demo org — buy before
# save-credential, which turns the org's slot to BYOC (a BYOC org cannot buy).
order=(hello-lambda floor-list-numbers list-numbers node-list-numbers search-numbers update-number buy-number release-number save-credential)
[ "$shape" = local ] || order=("${order[@]/node-list-numbers}")
"$VENV/bin/python" - "$STATE_DIR/plan.json" "$runs" "$warm" "$out" "$ROOT" "$node" "${routes[*]}" "${COLDSTART_WRAP:-}" "${order[@]}" <<'PY'
import json, shlex, sys
plan_path, runs, warm, out, root, node, routes, wrap, *order = sys.argv[1:]
wrap = shlex.split(wrap)
routes, state = routes.split(), plan_path.rsplit("/", 1)[0]
events = {r: f"{root}/events/{r}.json" for r in routes}
targets = []
for name in order:
    if name == "hello-lambda":
        t = {"program": f"{root}/target/release/hello-lambda", "peer": "hello",
             "env_file": f"{state}/env.list-numbers.json", "event_file": f"{root}/events/list-numbers.json",
             "cwd": f"{root}/target/release"}
    elif name == "floor-list-numbers":
        t = {"program": f"{root}/target/release/floor-list-numbers", "peer": "floor",
             "env_file": f"{state}/env.list-numbers.json", "event_file": f"{root}/events/list-numbers.json",
             "cwd": f"{root}/target/release"}
    elif name == "node-list-numbers":
        t = {"program": node, "args": [f"{root}/benchmarks/node-peer/index.js"], "peer": "node",
             "env_file": f"{state}/env.list-numbers.json", "event_file": f"{root}/events/list-numbers.json",
             "cwd": f"{root}/benchmarks/node-peer"}
    elif name in routes:
        t = {"program": f"{root}/target/release/{name}", "env_file": f"{state}/env.{name}.json",
             "event_file": events[name], "cwd": f"{root}/target/release"}
    else:
        continue
    if wrap:
        t["args"] = wrap[1:] + [t["program"]] + t.get("args", [])
        t["program"] = wrap[0]
    targets.append({"name": name, **t})
json.dump({"runs": int(runs), "warm": int(warm), "timeout_secs": 60, "log_dir": out, "targets": targets},
          open(plan_path, "w"), indent=1)
PY
log "coldstart: $runs cold starts × (1 + $warm invocations) per target; logs in $out"
target/release/coldstart "$STATE_DIR/plan.json"
