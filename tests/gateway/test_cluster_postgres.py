"""The cluster tests' PostgreSQL (testkit/postgres.py): fresh databases, committed rows kept across a restart and
across a SIGKILL of the whole server, refused connections while it is down, the same port after."""

from __future__ import annotations

import subprocess

import pytest

from testkit import postgres
from testkit.postgres import SUPERUSER, PostgresServer, missing_postgres

pytestmark = pytest.mark.slow  # starts a PostgreSQL server (about 2 s)


def test_each_test_gets_a_fresh_empty_database(postgres_server: PostgresServer, postgres_dsn: str):
    name = postgres_dsn.rsplit("/", 1)[1]
    assert postgres_dsn == f"postgresql://{SUPERUSER}@127.0.0.1:{postgres_server.port}/{name}"
    assert postgres_server.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", database=name) == [["0"]]
    postgres_server.sql("CREATE TABLE marker (id int)", database=name)
    assert postgres_server.create_database(name + "_next") != postgres_dsn


@pytest.mark.parametrize("outage", ["restart", "kill"])
def test_committed_rows_survive_a_restart_or_a_sigkill_and_the_port_stays(own_postgres: PostgresServer, outage: str):
    own_postgres.sql("CREATE TABLE jobs (id int PRIMARY KEY)")
    own_postgres.sql("INSERT INTO jobs VALUES (1), (2)")
    port, dsn = own_postgres.port, own_postgres.dsn
    if outage == "restart":
        own_postgres.restart(down_s=0.5)
    else:
        own_postgres.kill()
        assert not own_postgres.running() and not own_postgres.ready()
        with pytest.raises(RuntimeError, match="psql"):
            own_postgres.sql("SELECT 1")
        own_postgres.start()
    assert (own_postgres.port, own_postgres.dsn) == (port, dsn)
    assert own_postgres.sql("SELECT id FROM jobs ORDER BY id") == [["1"], ["2"]]


def test_the_system_psql_reaches_the_server_by_its_dsn(own_postgres: PostgresServer):
    result = subprocess.run(
        ["psql", "-X", "-A", "-t", own_postgres.dsn, "-c", "SELECT current_database()"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "gateway"


def test_a_machine_without_postgresql_15_is_told_the_package_and_the_set_up_command(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(postgres, "BIN_DIRS", (tmp_path,))  # a folder without the server's tools
    message = "A real PostgreSQL needs the Debian package postgresql-15, not installed here: scripts/setup.sh --with-test-tools installs it"
    assert missing_postgres() == message
    with pytest.raises(RuntimeError, match="^A real PostgreSQL needs the Debian package postgresql-15"):
        PostgresServer.start_new()
