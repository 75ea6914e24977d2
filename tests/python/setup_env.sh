#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment for the Python client tests and prints the
# absolute path of its python as the last line of stdout:
#
#     PY=$(bash tests/python/setup_env.sh | tail -1)
#
# The venv lives at ${SWITCHBOARD_PYENV:-<repo>/target/pyenv}. requirements.txt is installed
# only when it changed since the last successful install (a stamp file holds its sha256).
# Progress goes to stderr; works from any current directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SWITCHBOARD_PYENV:-$repo/target/pyenv}"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

log() { echo "setup_env: $*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
    command -v python3 >/dev/null || { log "python3 not found"; exit 1; }
    log "creating venv at $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2
fi
venv="$(cd "$venv" && pwd)"
python="$venv/bin/python"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    log "installing $requirements"
    rm -f "$stamp"
    "$python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements" >&2
    echo "$want" > "$stamp"
    log "installed"
fi

echo "$python"
