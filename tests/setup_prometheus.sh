#!/usr/bin/env bash
# Makes sure Prometheus and promtool are installed (Debian's `prometheus` package): the server
# for crates/switchboard/tests/prometheus.rs, promtool for deploy/prometheus/check.sh and
# deploy/grafana/check.sh. Installs the package when missing (as root, or with passwordless
# sudo); otherwise says what to run. Prints the directory that holds both, last.
set -euo pipefail

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    as_root=()
  elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "setup_prometheus: prometheus and promtool are missing; run: sudo apt-get install -y prometheus" >&2
    exit 2
  fi
  echo "setup_prometheus: installing Debian's prometheus package" >&2
  "${as_root[@]}" apt-get update -qq >&2
  # --no-install-recommends: no node exporter. Installing starts no daemon in a container; on
  # a machine with systemd the packaged service listens on :9090, which no test uses.
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends prometheus >&2
fi
dirname "$(command -v promtool)"
