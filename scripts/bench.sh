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
NOT_LATENCY=" coldstart hello-lambda floor-list-numbers audit_scale "
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
    hello-lambda|floor-list-numbers) log "$n is a cold-start benchmark peer: scripts/bench.sh coldstart"; exit 2 ;;
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
node=$(command -v node || true)
if [ -z "$node" ] || [ "$("$node" -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  log "coldstart needs Node.js 20+ for its Node peer (node: ${node:-not found})"
  exit 2
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
log "coldstart: release build of the hello-world and floor peers and the emulator"
cargo build -q --release -p benchmarks ${peer_features[@]+"${peer_features[@]}"} \
  --bin hello-lambda --bin floor-list-numbers --bin coldstart
(
  cd benchmarks/node-peer
  stamp=node_modules/.package-lock.sha
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "coldstart: npm ci (benchmarks/node-peer)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" >"$stamp"
  fi
)

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

# The order: the peers beside list-numbers (the Node peer reads what list-numbers
# reads), the read-only routes, then the ones that change the demo org — buy before
# save-credential, which turns the org's slot to BYOC (a BYOC org cannot buy).
order=(hello-lambda floor-list-numbers list-numbers node-list-numbers search-numbers update-number buy-number release-number save-credential)
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
