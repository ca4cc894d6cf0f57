#!/usr/bin/env bash
# Fails when a function's zipped bootstrap grows past its budget (scripts/size-budget.json).
#
#   bash scripts/size-check.sh [ci|release]     (default: ci when CI=true, else release)
#
# Reads the artefacts `sam build` left in .aws-sam/build/<Function>/bootstrap (run
# scripts/sam-check.sh first; scripts/test.sh does), zips each as `sam deploy` does
# (deflate, Python's zipfile) and compares it with the budget of the profile it was
# built with:
#   release  what is deployed: fat LTO, codegen-units 1 (Cargo.toml [profile.release]).
#            Budgets: the sizes measured when they were set plus 5 %.
#   ci       scripts/sam-check.sh under CI=true: no LTO, opt-level 1, 256 codegen units,
#            so CI builds in minutes. Its zipped binaries are ≈ 1.75× the release ones
#            (list-numbers 4.85 MB vs 2.75 MB): without LTO nothing unused is dropped
#            and opt-level 1 is bulkier than "s"; budgets: measured plus 10 %. A new
#            dependency, or a feature that pulls one in, grows both, so CI fails the way
#            the deployed binary would grow. Lower a budget when a change shrinks the
#            binaries; raise one only with the reason in the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-}
if [ -z "$profile" ]; then
  if [ "${CI:-}" = "true" ]; then profile=ci; else profile=release; fi
fi
python3 - "$profile" <<'PY'
import io, json, pathlib, sys, zipfile

profile = sys.argv[1]
budgets = json.load(open("scripts/size-budget.json"))
if profile not in budgets["profiles"]:
    sys.exit(f"size-check: no budget for profile {profile!r} in scripts/size-budget.json")
budget = budgets["profiles"][profile]
build = pathlib.Path(".aws-sam/build")
failed, seen = [], set()
print(f"{'function':<28} {'bootstrap':>11} {'zipped':>11} {'budget':>11}  ({profile} profile)")
for fn, limit in sorted(budget.items()):
    path = build / fn / "bootstrap"
    if not path.exists():
        failed.append(f"{fn}: no {path} (run scripts/sam-check.sh first)")
        continue
    seen.add(fn)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, path.read_bytes())
    zipped = len(buf.getvalue())
    mark = "" if zipped <= limit else "  OVER BUDGET"
    print(f"{fn:<28} {path.stat().st_size:>11,} {zipped:>11,} {limit:>11,}{mark}")
    if zipped > limit:
        failed.append(f"{fn}: zipped {zipped:,} B > budget {limit:,} B")
for extra in sorted(p.parent.name for p in build.glob("*/bootstrap")):
    if extra not in budget:
        failed.append(f"{extra}: built, but has no budget in scripts/size-budget.json")
if failed:
    print("size-check failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    sys.exit(1)
print("size-check: every bootstrap within its budget")
PY
