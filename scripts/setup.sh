#!/usr/bin/env bash
# Idempotent set-up from a fresh machine: system tools the tests use, then the pinned virtualenv.
# Usage: scripts/setup.sh [--with-test-tools]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--with-test-tools" ]] && ! command -v dciodvfy >/dev/null; then
  echo "setup: installing Debian dicom3tools (dciodvfy) and invesalius-examples (a real head CT)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dicom3tools invesalius-examples >/dev/null
fi

stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || "$(cat $stamp)" != "$wanted" ]]; then
  echo "setup: creating .venv with the pinned packages (about a minute; log in .venv/pip.log)"
  python3 -m venv .venv
  if ! .venv/bin/pip install -r requirements.txt >.venv/pip.log 2>&1; then
    tail -20 .venv/pip.log; echo "setup: pip install failed, see .venv/pip.log" >&2; exit 1
  fi
  echo "$wanted" >"$stamp"
fi
