#!/usr/bin/env bash
# Checks deploy/grafana/switchboard.json:
#  - it is valid JSON with the shape Grafana expects here (unique panel ids, a gridPos, the
#    ${datasource} variable, one refId and a non-empty expr per target);
#  - every PromQL expression parses (`promtool check rules` on them as recording rules);
#  - every expression returns data on a small healthy cluster (test-series.txt), so that a label
#    mismatch (an expression that can never match anything) fails too (`promtool test rules`).
# Runs from any directory; exits non-zero if anything fails. Needs promtool and python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v promtool >/dev/null 2>&1; then
    echo "deploy/grafana/check.sh: promtool not found. Install it, e.g." >&2
    echo "    apt-get install -y prometheus    # Debian/Ubuntu (promtool comes with it)" >&2
    echo "or put promtool from a release tarball (https://prometheus.io/download/) on PATH." >&2
    exit 2
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "deploy/grafana/check.sh: python3 not found (it reads the dashboard's JSON)." >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() {
    echo "deploy/grafana/check.sh: FAILED: $*" >&2
    exit 1
}

echo "== reading switchboard.json"
python3 - "$here/switchboard.json" "$here/test-series.txt" "$work" <<'PY' || fail "switchboard.json (see above)"
import json, re, sys

dashboard_path, series_path, work = sys.argv[1:4]
errors = []
try:
    with open(dashboard_path, encoding="utf-8") as f:
        dashboard = json.load(f)
except ValueError as e:
    sys.exit(f"switchboard.json is not valid JSON: {e}")

for key in ("title", "uid", "schemaVersion", "panels"):
    if key not in dashboard:
        errors.append(f"the dashboard has no {key!r}")
variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource":
    errors.append("the dashboard has no 'datasource' variable of type datasource")

# Grafana's built-in variables, replaced by something PromQL accepts.
builtins = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
            "__range_ms": "3600000", "__interval_ms": "60000"}

def substitute(expr):
    def one(m):
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        if name in variables and name != "datasource":
            return ".*"  # a dashboard variable, used in a regex matcher
        errors.append(f"unknown variable ${name} in {expr!r}")
        return m.group(0)
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)

def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))

ids = set()
exprs = []  # (name, panel title, expr)
for panel in all_panels(dashboard.get("panels", [])):
    pid, title = panel.get("id"), panel.get("title", "?")
    if not isinstance(pid, int) or pid in ids:
        errors.append(f"panel {title!r}: id {pid!r} missing or not unique")
    ids.add(pid)
    if not all(k in panel.get("gridPos", {}) for k in "xywh"):
        errors.append(f"panel {title!r}: no complete gridPos")
    if panel.get("type") == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"panel {title!r}: datasource is not ${{datasource}}")
    targets = panel.get("targets", [])
    if not targets:
        errors.append(f"panel {title!r}: no targets")
    refs = set()
    for target in targets:
        ref = target.get("refId")
        if not ref or ref in refs:
            errors.append(f"panel {title!r}: refId {ref!r} missing or not unique")
        refs.add(ref)
        expr = target.get("expr", "").strip()
        if not expr:
            errors.append(f"panel {title!r} target {ref}: no expr")
            continue
        exprs.append((f"panel_{pid}_{ref}", title, substitute(expr)))
for variable in variables.values():
    if isinstance(variable.get("query"), dict) and variable["query"].get("query"):
        exprs.append((f"variable_{variable['name']}", f"variable {variable['name']}", substitute(variable["query"]["query"])))

if errors:
    sys.exit("\n".join(errors))

# JSON is YAML: promtool reads these files as they are.
with open(f"{work}/parse.rules.yml", "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard_{name}", "expr": expr} for name, _, expr in exprs]}]}, f, indent=1)
with open(f"{work}/data.rules.yml", "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": [
        {"alert": f"{name}_returns_nothing", "expr": f"absent({expr})"} for name, _, expr in exprs]}]}, f, indent=1)
series = []
with open(series_path, encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if line and not line.startswith("#"):
            name, values = line.rsplit(" ", 1)
            series.append({"series": name, "values": values})
with open(f"{work}/data.test.yml", "w") as f:
    json.dump({"rule_files": [f"{work}/data.rules.yml"], "evaluation_interval": "1m", "tests": [{
        "name": "every dashboard expression returns data on a healthy cluster",
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "25m", "alertname": f"{name}_returns_nothing", "exp_alerts": []}
                            for name, _, _ in exprs]}]}, f, indent=1)
with open(f"{work}/index.txt", "w") as f:
    for name, title, expr in exprs:
        f.write(f"{name}  ({title}): {expr}\n")
print(f"{len(ids)} panels, {len(exprs)} expressions")
PY

echo "== every expression parses (promtool check rules)"
if ! promtool check rules "$work/parse.rules.yml"; then
    cat "$work/index.txt" >&2
    fail "an expression of switchboard.json is not valid PromQL (rule dashboard_panel_<id>_<refId> above)"
fi

echo "== every expression returns data on test-series.txt (promtool test rules)"
if ! promtool test rules "$work/data.test.yml"; then
    cat "$work/index.txt" >&2
    fail "an expression of switchboard.json returns nothing on a healthy cluster (panel_<id>_<refId> above)"
fi

echo "deploy/grafana: OK"
