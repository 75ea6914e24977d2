#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed, for the replay report test
# (crates/switchboard/tests/replay.rs opens the HTML report headless and screenshots it).
# Installs the package when missing (as root, or with passwordless sudo); otherwise says what
# to run. Prints the browser's path, last.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    as_root=()
  elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "setup_chromium: chromium is missing; run: sudo apt-get install -y chromium" >&2
    exit 2
  fi
  echo "setup_chromium: installing Debian's chromium package" >&2
  "${as_root[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium >&2
fi
command -v chromium
