"""Fixtures for the gateway tests: a real Orthanc per test (plain, or with DICOMweb), a gateway port.

Where Orthanc is not installed the test skips, saying which set-up command installs it (and under
CI or REQUIRE_ALL_TESTS=1 that skip is a failure, see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.orthanc import Orthanc, free_port, missing_orthanc, start_orthanc


def _running_orthanc(folder: Path, dicomweb: bool) -> Iterator[Orthanc]:
    problem = missing_orthanc(dicomweb=dicomweb)
    if problem:
        pytest.skip(problem)
    server = start_orthanc(folder, dicomweb=dicomweb)
    yield server
    server.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    yield from _running_orthanc(tmp_path / "orthanc", dicomweb=False)


@pytest.fixture
def orthanc_dicomweb(tmp_path: Path) -> Iterator[Orthanc]:
    yield from _running_orthanc(tmp_path / "orthanc-web", dicomweb=True)


@pytest.fixture
def gateway_port() -> int:
    return free_port()
