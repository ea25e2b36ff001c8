"""Fixtures for the gateway tests: a real Orthanc per test, a gateway port, small synthetic CT series."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.orthanc import Orthanc, free_port, require_orthanc, start_orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    require_orthanc()
    server = start_orthanc(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.fixture
def gateway_port() -> int:
    return free_port()
