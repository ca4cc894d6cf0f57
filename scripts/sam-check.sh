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
# start (a missing one is a function that cannot start once deployed), each function
# logs in to the database as its own role (owner: migrate; route: the five that change
# state; reader: list-numbers; search-numbers: none), every function has an Errors
# alarm, reconcile and migrate cannot overlap and a failing reconcile is never silent,
# the KMS key policy lets only the decrypt and break-glass roles decrypt, the read and
# write routes need their scopes, the access log carries no path, and the README names
# the right function for each sample event.
log "checking the template: environments, database logins, alarms, reconcile and migrate, the KMS Deny, scopes, throttling, access log, sample events"
python3 - template.yaml <<'PY'
import json, pathlib, re, sys, yaml

class Loader(yaml.SafeLoader):
    pass
# CloudFormation's short tags (!Ref, !GetAtt, !Sub, …) become their long form
# ({"Ref": x}, {"Fn::GetAtt": [r, a]}, …), so references can be followed.
def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}
Loader.add_multi_constructor("!", _tag)

def refs(node):
    """Every parameter or resource a node names (Ref, GetAtt, ${...} in Sub)."""
    out = set()
    if isinstance(node, list):
        for x in node:
            out |= refs(x)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add(v[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out |= {n.split(".")[0] for n in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                if not isinstance(v, str):
                    out |= refs(v[1])
            else:
                out |= refs(v)
    return out

t = yaml.load(open(sys.argv[1]), Loader=Loader)
R, P = t["Resources"], t.get("Parameters", {})
common = t.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
# A function takes a Globals variable away with `!Ref AWS::NoValue` (SAM's merge lets
# the function's value win; CloudFormation then drops the key): it is not set.
NO_VALUE = {"Ref": "AWS::NoValue"}
funcs = {n: r for n, r in R.items() if r.get("Type") == "AWS::Serverless::Function"}
binary_of = {n: r.get("Metadata", {}).get("BuildProperties", {}).get("Binary") for n, r in funcs.items()}
def env_of(name):
    env = {**common, **funcs[name].get("Properties", {}).get("Environment", {}).get("Variables", {})}
    return {k: v for k, v in env.items() if v != NO_VALUE}
bad = []

# --- environments. The database login (DbConfig::from_env): DB_AUTH picks the secret
# (password) or DB_USER with an IAM token (iam); each function sets its own role's.
db = ["DB_AUTH", "DB_SECRET_ARN", "DB_USER", "DB_HOST"]
needs = {  # what each function's State::from_env / main reads (see functions/*/src)
    # The provider-step protocol's deadline and claim expiry (shared::steps::StepsConfig).
    "save-credential": db + ["VAPI_SECRET_ARN", "KEYRING", "KMS_KEY_ID", "STEPS_DEADLINE_MS", "CLAIM_SECS"],
    # The read routes check the read scope (READ_SCOPE).
    "list-numbers": db + ["READ_SCOPE"],
    "release-number": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "RECONCILE_MAX_ATTEMPTS",
                            "STEPS_DEADLINE_MS", "CLAIM_SECS"],
    # …and its metrics' namespace and Stack dimension (Embedded Metric Format).
    # …and token rotations (a keyring, the fingerprint key).
    "reconcile": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "RECONCILE_MAX_ATTEMPTS",
                       "STEPS_DEADLINE_MS", "CLAIM_SECS", "METRICS_NAMESPACE", "STACK_NAME",
                       "KEYRING", "KMS_KEY_ID", "TOKEN_FINGERPRINT_SECRET_ARN"],
    # The owner's login, and the two logins it sets up (secrets with password, users with iam).
    "migrate": db + ["DB_ROUTE_SECRET_ARN", "DB_READER_SECRET_ARN", "DB_ROUTE_USER", "DB_READER_USER"],
    # Twilio's search and Pricing API as the main account; no database (`forbidden` below).
    "search-numbers": ["TWILIO_MAIN_SECRET_ARN", "READ_SCOPE"],
    # The purchase protocol: DB, Vapi, Twilio main account, KMS data keys for the slot,
    # and the per-org purchase limit.
    "buy-number": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "KEYRING", "KMS_KEY_ID",
                        "STEPS_DEADLINE_MS", "CLAIM_SECS", "RECONCILE_MAX_ATTEMPTS",
                        "PURCHASES_PER_ORG_PER_DAY", "TOKEN_FINGERPRINT_SECRET_ARN"],
    "update-number": db + ["VAPI_SECRET_ARN", "STEPS_DEADLINE_MS", "CLAIM_SECS"],
    "disconnect-credential": db + ["VAPI_SECRET_ARN", "WRITE_SCOPE", "STEPS_DEADLINE_MS", "CLAIM_SECS"],
    # Offboarding: the release protocol's clients, its own scope.
    "offboard-org": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "OFFBOARD_SCOPE",
                          "STEPS_DEADLINE_MS", "CLAIM_SECS", "RECONCILE_MAX_ATTEMPTS"],
    # The carrier audit: the release protocol's clients and settings, its own, metrics.
    "audit": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "RECONCILE_MAX_ATTEMPTS",
                   "STEPS_DEADLINE_MS", "CLAIM_SECS", "AUDIT_EVERY_HOURS", "AUDIT_GRACE_SECS",
                   "AUDIT_CONCURRENCY", "METRICS_NAMESPACE", "STACK_NAME",
                   "TOKEN_FINGERPRINT_SECRET_ARN"],
    # Token rotation: the release protocol's clients, a keyring, the fingerprint key.
    "rotate-credential": db + ["VAPI_SECRET_ARN", "TWILIO_MAIN_SECRET_ARN", "KEYRING", "KMS_KEY_ID",
                               "TOKEN_FINGERPRINT_SECRET_ARN", "WRITE_SCOPE", "STEPS_DEADLINE_MS",
                               "CLAIM_SECS", "RECONCILE_MAX_ATTEMPTS"],
}
# Least privilege: what a function must NOT be given. search-numbers never opens a
# database connection: no database settings (from Globals or its own) and no login
# policy; no Vapi or KMS either. Only migrate learns the other roles' logins.
others_logins = ["DB_ROUTE_SECRET_ARN", "DB_READER_SECRET_ARN", "DB_ROUTE_USER", "DB_READER_USER"]
forbidden = {b: list(others_logins) for b in needs if b != "migrate"}
forbidden["search-numbers"] += ["DB_AUTH", "DB_SECRET_ARN", "DB_USER", "DB_HOST", "DB_PORT", "DB_NAME",
                                "DB_TLS", "DB_POOL_SIZE", "DB_MAX_LIFETIME_SECS",
                                "VAPI_SECRET_ARN", "KEYRING", "KMS_KEY_ID"]
for k in ("DB_SECRET_ARN", "DB_USER"):
    if k in common:
        bad.append(f"Globals must not set {k}: each function sets its own role's login")

# --- database roles: which login each function has (policy and environment alike).
ROLES = {  # role: (its login policy, its secret parameter, its user parameter)
    "owner": ("DbOwnerLoginPolicy", "DbOwnerSecretArn", "DbOwnerUser"),
    "route": ("DbRouteLoginPolicy", "DbRouteSecretArn", "DbRouteUser"),
    "reader": ("DbReaderLoginPolicy", "DbReaderSecretArn", "DbReaderUser"),
}
role_of = {"migrate": "owner", "list-numbers": "reader", "search-numbers": None,
           **{b: "route" for b in ("save-credential", "release-number", "reconcile", "buy-number", "update-number",
                               "audit", "offboard-org", "disconnect-credential", "rotate-credential")}}
login_policies = {pol for pol, _, _ in ROLES.values()}
db_params = {x for _, s, u in ROLES.values() for x in (s, u)}
for pol, _, _ in ROLES.values():
    if R.get(pol, {}).get("Type") != "AWS::IAM::ManagedPolicy":
        bad.append(f"no managed policy {pol}")
# What each login policy may name: its own role's secret/user (the owner's also the
# route and reader secrets, whose passwords migrate sets), the proxy, nothing else.
may_name = {"DbOwnerLoginPolicy": {"DbOwnerSecretArn", "DbOwnerUser", "DbRouteSecretArn", "DbReaderSecretArn"},
            "DbRouteLoginPolicy": {"DbRouteSecretArn", "DbRouteUser"},
            "DbReaderLoginPolicy": {"DbReaderSecretArn", "DbReaderUser"}}
for pol, own_secret, own_user in ROLES.values():
    named = refs(R.get(pol, {}).get("Properties", {}).get("PolicyDocument", {})) & db_params
    if named - may_name[pol]:
        bad.append(f"{pol} names {sorted(named - may_name[pol])}, another role's login")
    if not {own_secret, own_user} <= named:
        bad.append(f"{pol} does not name its role's secret and user ({own_secret}, {own_user})")

seen = set()
for name, res in funcs.items():
    binary = binary_of[name]
    env = env_of(name)
    seen.add(binary)
    for var in needs.get(binary, []):
        if var not in env:
            bad.append(f"{name} ({binary}) lacks {var}")
    for var in forbidden.get(binary, []):
        if var in env:
            bad.append(f"{name} ({binary}) must not be given {var} (least privilege)")
    props = res["Properties"]
    policies = props.get("Policies", [])
    has = refs(policies) & login_policies
    role = role_of.get(binary, "?")
    if role is None:
        # No database login of any kind: neither a login policy nor its parts.
        if has or refs(policies) & db_params or "rds-db" in json.dumps(policies):
            bad.append(f"{name} ({binary}) must not be able to log in to the database")
        if "kms:" in json.dumps(policies) or "VapiSecretArn" in refs(policies):
            bad.append(f"{name} ({binary}) must not have KMS or the Vapi secret")
        continue
    if role == "?":
        bad.append(f"{name} ({binary}): no database role is known for it (role_of)")
        continue
    pol, secret, user = ROLES[role]
    if has != {pol}:
        bad.append(f"{name} ({binary}) must have exactly the {role} login policy {pol}, has {sorted(has)}")
    if refs(policies) & db_params:
        bad.append(f"{name} ({binary}) names a database login in its own policies; only {pol} may")
    # …and its environment names that role's login, no other's.
    for var, param in (("DB_SECRET_ARN", secret), ("DB_USER", user)):
        named = refs(env.get(var)) & db_params
        if named != {param}:
            bad.append(f"{name} ({binary}): {var} must be {param}, is {sorted(named)}")
    if binary == "migrate":
        for var, param in (("DB_ROUTE_SECRET_ARN", "DbRouteSecretArn"), ("DB_READER_SECRET_ARN", "DbReaderSecretArn"),
                           ("DB_ROUTE_USER", "DbRouteUser"), ("DB_READER_USER", "DbReaderUser")):
            if refs(env.get(var)) & db_params != {param}:
                bad.append(f"{name}: {var} must be {param}")
    if binary in ("save-credential", "buy-number", "rotate-credential", "reconcile") \
            and env.get("KEYRING") != "kms":
        bad.append(f"{name}: KEYRING must be kms when deployed")
for pol in login_policies:
    users = [n for n, r in funcs.items() if pol in refs(r["Properties"].get("Policies", []))]
    want = sorted(n for n in funcs if role_of.get(binary_of[n]) and ROLES[role_of[binary_of[n]]][0] == pol)
    if sorted(users) != want:
        bad.append(f"{pol} is attached to {sorted(users)}, must be exactly {want}")
missing = set(needs) - seen
if missing:
    bad.append(f"no function builds {sorted(missing)}")

# --- reconcile and migrate: one at a time; reconcile's failures land somewhere watched.
by_binary = {binary_of[n]: n for n in funcs}
alarms = {n: r["Properties"] for n, r in R.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
def dims(a):
    return {d.get("Name"): d.get("Value") for d in a.get("Dimensions", [])}
for b in ("reconcile", "migrate"):
    if funcs[by_binary[b]]["Properties"].get("ReservedConcurrentExecutions") != 1:
        bad.append(f"{by_binary[b]} needs ReservedConcurrentExecutions: 1")
rec_name = by_binary["reconcile"]
rec = funcs[rec_name]["Properties"]
eic = rec.get("EventInvokeConfig", {})
on_failure = eic.get("DestinationConfig", {}).get("OnFailure", {})
queue = (on_failure.get("Destination") or {}).get("Fn::GetAtt", [None])[0]
if on_failure.get("Type") != "SQS" or R.get(queue, {}).get("Type") != "AWS::SQS::Queue":
    bad.append(f"{rec_name}: EventInvokeConfig needs an OnFailure destination of Type SQS on a queue of this stack")
else:
    qp = R[queue].get("Properties", {})
    if qp.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in qp:
        bad.append(f"{queue}: server-side encryption must be on")
    if not [a for a in alarms.values() if a.get("Namespace") == "AWS/SQS"
            and a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and refs(dims(a).get("QueueName")) == {queue}]:
        bad.append(f"no alarm on {queue}'s ApproximateNumberOfMessagesVisible")
if "MaximumEventAgeInSeconds" not in eic or "MaximumRetryAttempts" not in eic:
    bad.append(f"{rec_name}: EventInvokeConfig needs MaximumEventAgeInSeconds and MaximumRetryAttempts")
# The timing invariant: the event age limit (at most) plus the timeout fit in the
# shortest period, so no run, retry or late event is running when the next one starts.
age = eic.get("MaximumEventAgeInSeconds")
age_max = P[age["Ref"]].get("MaxValue") if isinstance(age, dict) else age
sched = [e["Properties"]["Schedule"] for e in rec.get("Events", {}).values() if e.get("Type") == "Schedule"]
period_refs = refs(sched) & set(P)
periods = [int(v) * 60 for p in period_refs for v in P[p].get("AllowedValues", [])]
timeout = rec.get("Timeout")
if not (isinstance(age_max, int) and isinstance(timeout, int) and periods):
    bad.append(f"{rec_name}: its event age limit, Timeout and schedule period must be known (a parameter with MaxValue, a number, rate(<AllowedValues> minutes))")
elif age_max + timeout > min(periods):
    bad.append(f"{rec_name}: event age limit {age_max} s + Timeout {timeout} s exceed the shortest period {min(periods)} s: runs could overlap")
not_running = [a for a in alarms.values() if a.get("Namespace") == "AWS/Lambda" and a.get("MetricName") == "Invocations"
               and dims(a).get("FunctionName") == {"Ref": rec_name}]
if not any(a.get("TreatMissingData") == "breaching" and a.get("EvaluationPeriods") == 3
           and a.get("ComparisonOperator") == "LessThanThreshold" for a in not_running):
    bad.append(f"no 'reconcile not invoked for 3 periods' alarm (Invocations < threshold, 3 periods, missing data breaching)")

# --- every function has an Errors alarm; reconcile's metric alarms read what it emits.
errors_of = [dims(a).get("FunctionName") for a in alarms.values()
             if a.get("Namespace") == "AWS/Lambda" and a.get("MetricName") == "Errors"]
for name in funcs:
    if {"Ref": name} not in errors_of:
        bad.append(f"{name} has no AWS/Lambda Errors alarm (dimension FunctionName: !Ref {name})")
reconcile_env = rec.get("Environment", {}).get("Variables", {})
for metric in ["OldestPendingReleaseAgeSeconds", "NeedsAttention", "StuckPurchases",
               "OffboardingsNeedAttention", "TokenRotationsNeedAttention"]:
    on = [a for a in alarms.values() if a.get("MetricName") == metric]
    if not on:
        bad.append(f"no alarm on reconcile's {metric}")
    for a in on:
        if a.get("Namespace") != reconcile_env.get("METRICS_NAMESPACE") or \
                dims(a) != {"Stack": reconcile_env.get("STACK_NAME")}:
            bad.append(f"the {metric} alarm does not read reconcile's METRICS_NAMESPACE with Stack = its STACK_NAME")

# --- the KMS key: Denies of exactly the unwrapping actions for everyone but the decrypt
# and break-glass roles (never GenerateDataKey or administration: the stack needs those).
# One exception: Decrypt for the roles tagged TelephonyKeyUse=rotation-secondary, which
# another Deny then holds to a rotation's secondary tokens (provider twilio-secondary),
# and only rotate-credential and reconcile carry that tag.
keys = [r for r in R.values() if r.get("Type") == "AWS::KMS::Key"]
unwrap = {"kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:CreateGrant"}
TAG = "aws:PrincipalTag/TelephonyKeyUse"
tagged = sorted(binary_of[n] for n, r in funcs.items()
                if r["Properties"].get("Tags", {}).get("TelephonyKeyUse") == "rotation-secondary")
if tagged != ["reconcile", "rotate-credential"]:
    bad.append(f"only reconcile and rotate-credential may carry TelephonyKeyUse=rotation-secondary, do: {tagged}")
for key in keys:
    stmts = key["Properties"]["KeyPolicy"]["Statement"]
    stmts = [s["Fn::If"][1] if isinstance(s, dict) and "Fn::If" in s else s for s in stmts]
    covered, excepted, held_to_secondaries = set(), set(), False
    for s in stmts:
        acts = s.get("Action", [])
        acts = {acts} if isinstance(acts, str) else set(acts)
        if s.get("Effect") != "Deny":
            continue
        cond = s.get("Condition", {})
        cond = cond["Fn::If"][1] if "Fn::If" in cond else cond
        keys_named = {k for op in cond.values() if isinstance(op, dict) for k in op}
        ops = set(cond)
        if s.get("Principal") == {"AWS": "*"} and "aws:PrincipalArn" in keys_named \
                and ops <= {"ArnNotEquals", "StringNotEquals"} \
                and {"DecryptRoleArn", "BreakGlassRoleArn"} <= refs(cond):
            if TAG in cond.get("StringNotEquals", {}):
                if cond["StringNotEquals"][TAG] != "rotation-secondary" or acts != {"kms:Decrypt"}:
                    bad.append(f"the key policy's tag exception covers {sorted(acts)}, not kms:Decrypt alone")
                excepted |= acts
            elif set(cond.get("StringNotEquals", {})):
                bad.append(f"the key policy's decrypt Deny has an unexpected exception: {cond}")
            covered |= acts
            if acts & {"kms:GenerateDataKey", "kms:*", "kms:PutKeyPolicy", "kms:DescribeKey"} \
                    or any(a.startswith("kms:Generate") for a in acts):
                bad.append(f"the key policy's decrypt Deny also denies {sorted(acts - unwrap)}: it would break the stack")
        if acts == {"kms:Decrypt"} and cond.get("StringEquals", {}).get(TAG) == "rotation-secondary" \
                and cond.get("StringNotEquals", {}).get("kms:EncryptionContext:provider") == "twilio-secondary":
            held_to_secondaries = True
    if not (unwrap <= covered or {"kms:ReEncrypt*", "kms:Decrypt", "kms:CreateGrant"} <= covered):
        bad.append("the KMS key policy lacks the Deny of kms:Decrypt, kms:ReEncrypt*, kms:CreateGrant "
                   "for every principal but DecryptRoleArn and BreakGlassRoleArn (aws:PrincipalArn)")
    if excepted and not held_to_secondaries:
        bad.append("the key policy lets the rotating roles decrypt without holding them to "
                   "provider twilio-secondary (a Deny on kms:EncryptionContext:provider)")

# --- routes: GET needs the read scope, everything else the write scope; throttling
# entries name real routes; the access log carries no raw path.
serves = {}
for name, res in funcs.items():
    for ev in res.get("Properties", {}).get("Events", {}).values():
        if ev.get("Type") != "HttpApi":
            continue
        route = f'{ev["Properties"]["Method"]} {ev["Properties"]["Path"]}'
        serves[route] = name
        want = ("ReadScope" if ev["Properties"]["Method"] == "GET"
                else "OffboardScope" if ev["Properties"]["Path"] == "/api/managed-telephony/offboard"
                else "WriteScope")
        scopes = ev["Properties"].get("Auth", {}).get("AuthorizationScopes")
        if scopes != [{"Ref": want}]:
            bad.append(f"{route}: AuthorizationScopes must be [!Ref {want}], is {scopes}")
        if want == "ReadScope" and "READ_SCOPE" not in env_of(name):
            bad.append(f"{name} serves {route} but has no READ_SCOPE")
for api in [r for r in R.values() if r.get("Type") == "AWS::Serverless::HttpApi"]:
    for key in api["Properties"].get("RouteSettings", {}):
        if key not in serves:
            bad.append(f"RouteSettings names {key!r}, not a route of the API")
    fmt = json.dumps(api["Properties"].get("AccessLogSettings", {}).get("Format"))
    if "$context.path" in fmt or "$context.requestOverride" in fmt:
        bad.append("the access log must not carry $context.path (it holds the phone number)")
for route in ["PUT /api/telephony/credentials/twilio", "DELETE /api/telephony/credentials/twilio",
              "DELETE /api/managed-telephony/numbers/{phoneNumber}",
              "PATCH /api/managed-telephony/numbers/{phoneNumber}", "POST /api/managed-telephony/numbers",
              "GET /api/managed-telephony/available-numbers", "POST /api/managed-telephony/offboard",
              "POST /api/telephony/credentials/twilio/rotate"]:
    if not any(route in api["Properties"].get("RouteSettings", {})
               for api in R.values() if api.get("Type") == "AWS::Serverless::HttpApi"):
        bad.append(f"{route} has no RouteSettings throttling of its own")

# --- the README's "Sample events" table names, for each event, the function that
# `sam local invoke <Function> -e events/<file>` must be: the one whose HttpApi event
# declares the event's routeKey. (local-api/tests/events.rs checks the answers.)
rows = [l for l in open("README.md") if l.startswith("| `events/")]
if not rows:
    bad.append("README.md has no Sample events rows")
for row in rows:
    cells = [c.strip().strip("`") for c in row.split("|")]
    event = json.loads(pathlib.Path(cells[1]).read_text())
    if event.get("source") == "aws.events":
        # A scheduled event: its function must have a Schedule event.
        sched = [e for e in funcs.get(cells[2], {}).get("Properties", {}).get("Events", {}).values()
                 if e.get("Type") == "Schedule"]
        if not sched:
            bad.append(f"README: {cells[1]} is a scheduled event, but {cells[2]} has no Schedule event")
        continue
    route = event["routeKey"]
    if serves.get(route) != cells[2]:
        bad.append(f"README: {cells[1]} names {cells[2]}, but {route} is served by {serves.get(route)}")
if bad:
    sys.exit("template.yaml:\n  " + "\n  ".join(bad))
print("every function's environment names what it loads, and it logs in as its own database role "
      "(search-numbers: none); every function has an Errors alarm; reconcile and migrate run one at "
      "a time, reconcile's runs fit its period and failed runs land in an encrypted, alarmed queue; "
      "only the decrypt and break-glass roles may decrypt (and the rotating roles a rotation's "
      "secondary tokens); GET routes need the read scope and the "
      "others the write scope; write and provisioning routes are throttled; the access log has no "
      "path; every sample event names its function")
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
