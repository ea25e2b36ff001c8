"""Independent validators used by the tests: dicom3tools' dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DCIODVFY = shutil.which("dciodvfy")
requires_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed; scripts/setup.sh --with-test-tools installs it"
)


def dciodvfy_errors(path: Path) -> list[str]:
    """The 'Error' lines dciodvfy reports for a DICOM file (empty when it conforms to its IOD)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    if result.returncode != 0 and not errors:
        errors = [f"dciodvfy exited {result.returncode}: {result.stderr.strip()}"]
    return errors
