#!/usr/bin/env bash
# Checks the deploy path without touching AWS: `sam validate --lint` (must be clean),
# then `sam build` (cargo-lambda, arm64 release binaries), then prints each function's
# bootstrap size.
#
#   bash scripts/sam-check.sh
#
# Installs what is missing: the rustup target aarch64-unknown-linux-gnu, and a Python
# venv .venv-sam/ with scripts/requirements-sam.txt (aws-sam-cli, cfn-lint,
# cargo-lambda, zig). It is its own venv because aws-sam-cli's pins conflict with moto
# in .venv. Non-interactive (no stdin needed), no AWS credentials, no Docker.
#
# With CI=true the release profile is built without LTO, at opt-level 1, with 256
# codegen units (CARGO_PROFILE_RELEASE_*): CI checks that the build works, fast; the
# sizes printed then are not the deployed ones: run it without CI=true for those.
# The build uses the workspace's own target/ (SAM points CARGO_TARGET_DIR at it), so a
# concurrent cargo build makes it wait on cargo's file lock.
set -euo pipefail

# shellcheck source=lib/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh" # ROOT, log, ensure_venv
cd "$ROOT"

SAM_VENV="$ROOT/.venv-sam"
SAM_REQUIREMENTS="$ROOT/scripts/requirements-sam.txt"
RUST_TARGET=aarch64-unknown-linux-gnu
AWS_REGION_FOR_CHECKS=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}

# cargo-lambda cross-compiles with zig as the linker, but rustc still needs the
# target's standard library.
ensure_rust_target() {
  if ! command -v rustup >/dev/null; then
    log "rustup not found: install the $RUST_TARGET standard library for your toolchain by hand"
    return 1
  fi
  if ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
    log "adding the rustup target $RUST_TARGET"
    rustup target add "$RUST_TARGET"
  fi
}

ensure_venv "$SAM_VENV" "$SAM_REQUIREMENTS"
ensure_rust_target
export PATH="$SAM_VENV/bin:$PATH"

# cargo-zigbuild (inside cargo-lambda) finds zig through `python3 -m ziglang` when no
# `zig` is on PATH: the venv's python3 comes first on PATH and has the pinned ziglang.
export SAM_CLI_TELEMETRY=0
export SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
# Nothing here calls AWS; keep the SDKs from probing instance metadata for a region or
# credentials.
export AWS_EC2_METADATA_DISABLED=true
export CARGO_TERM_COLOR=never
if [ "${CI:-}" = "true" ]; then
  # CI proves the build path (template → cargo-lambda → zig → eight arm64 bootstraps),
  # not the optimised output: without LTO, at opt-level 1 and with many codegen units
  # it builds in a fraction of the time. Real sizes: run without CI=true.
  export CARGO_PROFILE_RELEASE_LTO=off
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
  export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256
  log "CI=true: release profile without LTO, opt-level 1, 256 codegen units (sizes below are not the deployed ones)"
fi

log "tools: $(sam --version), $(cfn-lint --version), $(cargo-lambda lambda --version), zig $(python3 -m ziglang version)"

started=$SECONDS
log "sam validate --lint"
sam validate --lint --region "$AWS_REGION_FOR_CHECKS" </dev/null
log "validated in $((SECONDS - started))s"

# Each function's environment names every secret and setting its code loads at cold
# start (a missing one is a function that cannot start once deployed), every function
# has an Errors alarm and reconcile's metric alarms read what it emits, and the README
# names the right function for each sample event.
log "checking each function's environment against what its code loads, its alarms, and the README's sample events against the routes"
python3 - template.yaml <<'PY'
import sys, yaml

class Loader(yaml.SafeLoader):
    pass
# CloudFormation's short tags (!Ref, !GetAtt, !Sub, …) become "<Tag value>" strings
# (sequences and maps: "<Tag>"); only names matter here.
Loader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: f"<{suffix} {node.value}>"
    if isinstance(node, yaml.ScalarNode)
    else f"<{suffix}>",
)
t = yaml.load(open(sys.argv[1]), Loader=Loader)
common = t.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
# A function takes a Globals variable away with `!Ref AWS::NoValue` (SAM's merge lets
# the function's value win; CloudFormation then drops the key): it is not set.
NO_VALUE = "<Ref AWS::NoValue>"
# The database login (DbConfig::from_env): DB_AUTH picks the secret (password) or DB_USER
# with an IAM token (iam); the template sets whichever DbAuth selects.
db = ["DB_AUTH", "DB_SECRET_ARN", "DB_USER", "DB_HOST"]
needs = {  # what each function's State::from_env / main reads (see functions/*/src)
    # The provider-step protocol's deadline and claim expiry (shared::steps::StepsConfig).
    "save-credential": db + ["VAPI_SECRET_ARN", "KEYRING", "KMS_KEY_ID", "STEPS_DEADLINE_MS", "CLAIM_SECS"],
    "list-numbers": db,
    "release-number": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "RECONCILE_MAX_ATTEMPTS",
                            "STEPS_DEADLINE_MS", "CLAIM_SECS"],
    # …and its metrics' namespace and Stack dimension (Embedded Metric Format).
    "reconcile": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "RECONCILE_MAX_ATTEMPTS",
                       "STEPS_DEADLINE_MS", "CLAIM_SECS", "METRICS_NAMESPACE", "STACK_NAME"],
    "migrate": db,
    # Twilio's search and Pricing API as the main account; no database (`forbidden` below).
    "search-numbers": ["TWILIO_MAIN_SECRET_ARN"],
    # The purchase protocol: DB, Vapi, Twilio main account, KMS data keys for the slot.
    "buy-number": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "KEYRING", "KMS_KEY_ID",
                        "STEPS_DEADLINE_MS", "CLAIM_SECS", "RECONCILE_MAX_ATTEMPTS"],
    "update-number": db + ["VAPI_SECRET_ARN", "STEPS_DEADLINE_MS", "CLAIM_SECS"],
}
# Least privilege: what a function must NOT be given. search-numbers never opens a
# database connection: no database settings (from Globals or its own) and no
# DatabaseLoginPolicy; no Vapi or KMS either.
forbidden = {
    "search-numbers": ["DB_AUTH", "DB_SECRET_ARN", "DB_USER", "DB_HOST", "DB_PORT", "DB_NAME",
                       "DB_TLS", "DB_POOL_SIZE", "DB_MAX_LIFETIME_SECS",
                       "VAPI_SECRET_ARN", "KEYRING", "KMS_KEY_ID"],
}
no_db_login = {"search-numbers"}
seen, bad = set(), []
for name, res in t["Resources"].items():
    if res.get("Type") != "AWS::Serverless::Function":
        continue
    binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
    env = {**common, **res.get("Properties", {}).get("Environment", {}).get("Variables", {})}
    env = {k: v for k, v in env.items() if v != NO_VALUE}
    seen.add(binary)
    for var in needs.get(binary, []):
        if var not in env:
            bad.append(f"{name} ({binary}) lacks {var}")
    for var in forbidden.get(binary, []):
        if var in env:
            bad.append(f"{name} ({binary}) must not be given {var} (least privilege)")
    policies = res["Properties"].get("Policies", [])
    policy_text = str(policies)
    if binary in no_db_login:
        # No database login of any kind: neither the shared policy nor its parts.
        if "DatabaseLoginPolicy" in policy_text or "DbSecretArn" in policy_text \
                or "rds-db" in policy_text:
            bad.append(f"{name} ({binary}) must not be able to log in to the database")
        if "kms:" in policy_text or "VapiSecretArn" in policy_text:
            bad.append(f"{name} ({binary}) must not have KMS or the Vapi secret")
    # …and its role may log in the way DB_AUTH says (secret or rds-db:connect).
    elif "<Ref DatabaseLoginPolicy>" not in policies:
        bad.append(f"{name} ({binary}) lacks the DatabaseLoginPolicy")
    if binary in ("save-credential", "buy-number") and env.get("KEYRING") != "kms":
        bad.append(f"{name}: KEYRING must be kms when deployed")
missing = set(needs) - seen
if missing:
    bad.append(f"no function builds {sorted(missing)}")
# Every function has an alarm on its Lambda Errors metric, and the alarms on reconcile's
# own metrics use the namespace and Stack dimension it is told to emit them with.
alarms = [r["Properties"] for r in t["Resources"].values() if r.get("Type") == "AWS::CloudWatch::Alarm"]
def dims(a):
    return {d.get("Name"): d.get("Value") for d in a.get("Dimensions", [])}
errors_of = {dims(a).get("FunctionName") for a in alarms
             if a.get("Namespace") == "AWS/Lambda" and a.get("MetricName") == "Errors"}
reconcile_env = {}
for name, res in t["Resources"].items():
    if res.get("Type") != "AWS::Serverless::Function":
        continue
    if f"<Ref {name}>" not in errors_of:
        bad.append(f"{name} has no AWS/Lambda Errors alarm (dimension FunctionName: !Ref {name})")
    if res.get("Metadata", {}).get("BuildProperties", {}).get("Binary") == "reconcile":
        reconcile_env = res["Properties"].get("Environment", {}).get("Variables", {})
for metric in ["OldestPendingReleaseAgeSeconds", "NeedsAttention", "StuckPurchases"]:
    on = [a for a in alarms if a.get("MetricName") == metric]
    if not on:
        bad.append(f"no alarm on reconcile's {metric}")
    for a in on:
        if a.get("Namespace") != reconcile_env.get("METRICS_NAMESPACE") or \
                dims(a) != {"Stack": reconcile_env.get("STACK_NAME")}:
            bad.append(f"the {metric} alarm does not read reconcile's METRICS_NAMESPACE with Stack = its STACK_NAME")
# The README's "Sample events" table names, for each event, the function that
# `sam local invoke <Function> -e events/<file>` must be: the one whose HttpApi event
# declares the event's routeKey. (local-api/tests/events.rs checks the answers.)
import json, pathlib
serves = {}
for name, res in t["Resources"].items():
    for ev in res.get("Properties", {}).get("Events", {}).values():
        if ev.get("Type") == "HttpApi":
            serves[f'{ev["Properties"]["Method"]} {ev["Properties"]["Path"]}'] = name
rows = [l for l in open("README.md") if l.startswith("| `events/")]
if not rows:
    bad.append("README.md has no Sample events rows")
for row in rows:
    cells = [c.strip().strip("`") for c in row.split("|")]
    route = json.loads(pathlib.Path(cells[1]).read_text())["routeKey"]
    if serves.get(route) != cells[2]:
        bad.append(f"README: {cells[1]} names {cells[2]}, but {route} is served by {serves.get(route)}")
if bad:
    sys.exit("template.yaml: " + "; ".join(bad))
print("every function's environment names what it loads (and search-numbers no database) "
      "and it has an Errors alarm; reconcile's alarms read its metrics; every sample event "
      "names its function")
PY

started=$SECONDS
log "sam build (cargo lambda build --release --arm64, one binary per function)"
sam build --region "$AWS_REGION_FOR_CHECKS" </dev/null
log "built in $((SECONDS - started))s"

# Each function's artifact: an arm64 ELF, stripped (no .symtab), and its size.
python3 - "$ROOT/.aws-sam/build" <<'PY'
import pathlib, struct, sys

build = pathlib.Path(sys.argv[1])
bins = sorted(build.glob("*/bootstrap"))
if not bins:
    sys.exit(f"no bootstrap under {build}")
bad = []
print(f"{'function':<28} {'bytes':>12} {'MiB':>7}  arch     stripped")
for path in bins:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        bad.append(f"{path}: not a 64-bit ELF")
        continue
    endian = "<" if data[5] == 1 else ">"
    machine = struct.unpack_from(endian + "H", data, 18)[0]
    arch = {0xB7: "aarch64", 0x3E: "x86_64"}.get(machine, hex(machine))
    # Section headers: look for a .symtab (present unless stripped).
    shoff = struct.unpack_from(endian + "Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
    def section(i):
        return struct.unpack_from(endian + "IIQQQQ", data, shoff + i * shentsize)
    strtab = section(shstrndx)
    names_off = strtab[4]
    names = set()
    for i in range(shnum):
        name_idx = section(i)[0]
        end = data.index(b"\0", names_off + name_idx)
        names.add(data[names_off + name_idx:end].decode())
    stripped = ".symtab" not in names
    size = len(data)
    print(f"{path.parent.name:<28} {size:>12,} {size / 2**20:>7.2f}  {arch:<8} {'yes' if stripped else 'NO'}")
    if arch != "aarch64":
        bad.append(f"{path}: {arch}, not aarch64")
    if not stripped:
        bad.append(f"{path}: not stripped")
if bad:
    sys.exit("\n".join(bad))
PY
log "sam-check: OK"
