#!/usr/bin/env bash
# Idempotent set-up from a fresh machine: the pinned virtualenv, and with --with-test-tools the
# Debian tools and test-only packages the tests use, plus the real test slides (cached).
# Usage: scripts/setup.sh [--with-test-tools]
set -euo pipefail
cd "$(dirname "$0")/.."
with_test_tools=false
[[ "${1:-}" == "--with-test-tools" ]] && with_test_tools=true

if $with_test_tools; then
  # dicom3tools: dciodvfy; invesalius-examples: a real head CT; libvips-tools and libturbojpeg0:
  # the real slide's tiled pyramid and DICOM WSI conversions.
  missing=()
  command -v dciodvfy >/dev/null || missing+=(dicom3tools)
  [[ -f /usr/share/doc/invesalius-examples/examples/Cranium.inv3 ]] || missing+=(invesalius-examples)
  command -v vips >/dev/null || missing+=(libvips-tools)
  ldconfig -p | grep -q libturbojpeg.so.0 || missing+=(libturbojpeg0)
  # dcmtk's storescu (not `command -v`: the venv has pynetdicom's); Orthanc, a real PACS, with DICOMweb.
  [[ -x /usr/bin/storescu ]] || missing+=(dcmtk)
  [[ -x /usr/sbin/Orthanc ]] || missing+=(orthanc)
  [[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] || missing+=(orthanc-dicomweb)
  # PostgreSQL 15: the cluster tests start their own server (testkit/postgres.py); its system service stays stopped.
  [[ -x /usr/lib/postgresql/15/bin/postgres ]] || missing+=(postgresql-15)
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    # Orthanc's and PostgreSQL's packages start a system service on install: a policy-rc.d that refuses keeps it stopped
    # (the tests start their own Orthanc and PostgreSQL on loopback ports).
    placed_policy=false
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod 755 /usr/sbin/policy-rc.d; placed_policy=true
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    if $placed_policy; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  fi
fi

install_pinned() {  # install a requirements file once per content (a stamp per file)
  local file=$1 stamp=.venv/.$1.sha256 wanted
  wanted=$(sha256sum "$file" | cut -d' ' -f1)
  [[ -f $stamp && "$(cat "$stamp")" == "$wanted" ]] && return 0
  echo "setup: installing $file into .venv (about a minute; log in .venv/pip.log)"
  if ! .venv/bin/pip install -r "$file" >.venv/pip.log 2>&1; then
    tail -20 .venv/pip.log; echo "setup: pip install -r $file failed, see .venv/pip.log" >&2; exit 1
  fi
  echo "$wanted" >"$stamp"
}
[[ -x .venv/bin/python ]] || python3 -m venv .venv
install_pinned requirements.txt
# The project itself, editable (no dependencies: the pins above are the dependencies), once per pyproject.toml
# and set of top-level packages (the editable finder maps the packages that existed when it was installed).
project_stamp=.venv/.pyproject.toml.sha256
project_id=$( (cat pyproject.toml; ls -d -- */__init__.py) | sha256sum | cut -d' ' -f1)
if [[ ! -f $project_stamp || "$(cat "$project_stamp")" != "$project_id" ]]; then
  .venv/bin/pip install --no-deps --no-build-isolation -e . >.venv/pip-project.log 2>&1 \
    || { tail -20 .venv/pip-project.log; echo "setup: pip install -e . failed, see .venv/pip-project.log" >&2; exit 1; }
  echo "$project_id" >"$project_stamp"
fi
$with_test_tools && install_pinned requirements-test.txt

if $with_test_tools; then
  ulimit -s 32768 2>/dev/null || true  # Holoscan, imported on the way, asks for a 32 MiB stack
  .venv/bin/python -m testkit.real_slides >/dev/null  # fetch and convert the real slides once (cached)
fi
