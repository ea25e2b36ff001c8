"""What the tests, the benchmarks and scripts/setup.sh share: real test data, a real Orthanc, the gateway as a process.

Nothing here imports pytest: skip marks, fixtures and the other pytest-specific pieces stay in
``tests/``, which nothing outside it imports. Missing Debian tools are reported, never installed:
``scripts/setup.sh --with-test-tools`` installs them (``SETUP_COMMAND``).
"""

from __future__ import annotations

SETUP_COMMAND = "scripts/setup.sh --with-test-tools"


def missing_packages(what: str, packages: list[str]) -> str:
    """The one-line report for Debian packages that ``what`` needs and this machine lacks."""
    several = len(packages) > 1
    names = " ".join(packages)
    return f"{what} needs the Debian package{'s' * several} {names}, not installed here: {SETUP_COMMAND} installs {'them' if several else 'it'}"
