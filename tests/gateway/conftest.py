"""Fixtures for the gateway tests: a free gateway port, and a real PostgreSQL for the cluster mode (the Orthanc
fixtures are in tests/conftest.py).

``postgres_dsn`` is a fresh database per test on one server per session (initdb once, about 2 s);
``own_postgres`` is a server of the test's own, for the tests that restart or kill it; ``counting_orthanc`` is an
Orthanc that logs every C-STORE it receives. Where PostgreSQL 15 or Orthanc is not installed they skip naming the
set-up command: a failure under CI or REQUIRE_ALL_TESTS=1.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.cluster import start_counting_orthanc
from testkit.orthanc import Orthanc, free_port, missing_orthanc
from testkit.postgres import PostgresServer, missing_postgres

_database_numbers = itertools.count(1)


@pytest.fixture
def gateway_port() -> int:
    return free_port()


def _new_postgres() -> PostgresServer:
    problem = missing_postgres()
    if problem:
        pytest.skip(problem)
    return PostgresServer.start_new()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = _new_postgres()
    yield server
    server.close()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A libpq URL of a new, empty database (``queue: <dsn>`` in a gateway config)."""
    return postgres_server.create_database(f"test_{next(_database_numbers)}")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test alone (its ``dsn`` names its database ``gateway``)."""
    server = _new_postgres()
    yield server
    server.close()


@pytest.fixture
def counting_orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc that logs every instance it receives, duplicates included (``testkit.cluster.receptions``)."""
    problem = missing_orthanc()
    if problem:
        pytest.skip(problem)
    server = start_counting_orthanc(tmp_path / "orthanc")
    yield server
    server.stop()
