#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: set-up, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-test-tools
ulimit -s 32768 2>/dev/null || true  # Holoscan asks for a 32 MiB stack
exec .venv/bin/python -m pytest "$@"
