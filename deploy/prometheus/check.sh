#!/usr/bin/env bash
# Checks the Prometheus alert rules and runs their unit tests:
#   promtool check rules alerts.yml
#   promtool check config prometheus.yml
#   promtool test rules tests/*.yml
# and that the tests make every alert fire somewhere and keep every alert quiet on the healthy
# cluster (tests/healthy.yml). Runs from any directory; exits non-zero if anything fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v promtool >/dev/null 2>&1; then
    echo "deploy/prometheus/check.sh: promtool not found. Install it, e.g." >&2
    echo "    apt-get install -y prometheus    # Debian/Ubuntu (promtool comes with it)" >&2
    echo "or put promtool from a release tarball (https://prometheus.io/download/) on PATH." >&2
    exit 2
fi

fail() {
    echo "deploy/prometheus/check.sh: FAILED: $*" >&2
    exit 1
}

echo "== promtool check rules alerts.yml"
promtool check rules alerts.yml || fail "alerts.yml does not load (see above)"

echo "== promtool check config prometheus.yml"
promtool check config prometheus.yml || fail "prometheus.yml does not load (see above)"

shopt -s nullglob
tests=(tests/*.yml)
[ ${#tests[@]} -gt 0 ] || fail "no unit tests in tests/"

echo "== promtool test rules ${tests[*]}"
promtool test rules "${tests[@]}" || fail "a unit test of the alert rules failed (see above)"

echo "== every alert fires in a test and stays quiet on the healthy cluster"
alerts=$(sed -n 's/^[[:space:]]*- alert:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' alerts.yml | sort -u)
[ -n "$alerts" ] || fail "no alert found in alerts.yml"
# An expectation is one `eval_time:` entry; it expects firing when it has exp_labels, quiet when
# it has `exp_alerts: []`.
expectations() {
    awk '
        function flush() { if (name != "") print name, kind; name = ""; kind = "" }
        /eval_time:/ { flush(); seen = 1 }
        seen && match($0, /alertname:[[:space:]]*[A-Za-z0-9_]+/) {
            name = substr($0, RSTART, RLENGTH); sub(/alertname:[[:space:]]*/, "", name)
        }
        seen && /exp_alerts:[[:space:]]*\[\]/ { kind = "quiet" }
        seen && /exp_labels:/ { kind = "fires" }
        /^[[:space:]]*- name:/ || /input_series:/ { flush(); seen = 0 }
        END { flush() }
    ' "$@"
}
fires=$(expectations "${tests[@]}" | awk '$2 == "fires" { print $1 }' | sort -u)
quiet=$(expectations tests/healthy.yml | awk '$2 == "quiet" { print $1 }' | sort -u)
missing=""
for alert in $alerts; do
    grep -qx "$alert" <<<"$fires" || missing="$missing $alert(never fires in tests/)"
    grep -qx "$alert" <<<"$quiet" || missing="$missing $alert(not checked quiet in tests/healthy.yml)"
done
[ -z "$missing" ] || fail "alerts without tests:$missing"
for name in $fires $quiet; do
    grep -qx "$name" <<<"$alerts" || fail "tests name $name, which alerts.yml does not define"
done

echo "deploy/prometheus: OK ($(wc -w <<<"$alerts") alerts, ${#tests[@]} test files)"
