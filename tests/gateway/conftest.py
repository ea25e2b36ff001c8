"""Fixtures for the gateway tests: a free gateway port (the Orthanc fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from testkit.orthanc import free_port


@pytest.fixture
def gateway_port() -> int:
    return free_port()
