"""A real PostgreSQL 15 (Debian's ``postgresql-15``) for the cluster tests and benchmark: initdb into a temporary
folder, ``postgres`` on a free loopback port (its unix socket in that folder), stopped, restarted or killed by PID.

    server = PostgresServer.start_new()      # initdb + start + database "gateway"
    server.dsn                               # postgresql://gateway@127.0.0.1:PORT/gateway
    server.create_database("test_1")         # a fresh database on the same server, its DSN
    server.restart(down_s=3)                 # fast shutdown, 3 s down, start on the same port
    server.kill()                            # SIGKILL to the whole server (postmaster and backends)
    server.close()                           # stop and remove the folder

PostgreSQL refuses to run as root: run as root (as CI containers do), the server runs as the ``postgres``
user (the Debian package creates it) in a folder of its own under the system temp folder, since pytest's
temp folders are private to root. Authentication is ``trust`` on loopback only: a test server, never a
deployment. ``missing_postgres`` says what is absent and which set-up command installs it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit import missing_packages
from testkit.orthanc import free_port

logger = logging.getLogger(__name__)

# Debian installs the server under /usr/lib/postgresql/15/bin; some machines link it into /usr/local/bin.
BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"))
TOOLS = ("postgres", "initdb", "psql", "pg_isready")
SUPERUSER = "gateway"
DEFAULT_DATABASE = "gateway"
RUN_AS_WHEN_ROOT = "postgres"


def postgres_bin_dir() -> Path | None:
    """The first folder holding every server tool the tests use, or None."""
    for folder in BIN_DIRS:
        if all((folder / tool).exists() for tool in TOOLS):
            return folder
    return None


def missing_postgres() -> str | None:
    """Why a PostgreSQL 15 server cannot start here, or None when it can."""
    if postgres_bin_dir() is None:
        return missing_packages("A real PostgreSQL", ["postgresql-15"])
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS_WHEN_ROOT)
        except KeyError:
            return f"A real PostgreSQL run as root needs the user {RUN_AS_WHEN_ROOT!r} (created by the Debian package postgresql-15)"
    return None


def dsn_for(port: int, database: str) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin_dir: Path
    database: str = DEFAULT_DATABASE
    process: subprocess.Popen | None = None
    run_as: str | None = None
    databases: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def dsn(self) -> str:
        return dsn_for(self.port, self.database)

    @classmethod
    def start_new(cls, database: str = DEFAULT_DATABASE, timeout_s: float = 60) -> PostgresServer:
        """initdb into a new temporary folder, start the server on a free port, create ``database``."""
        problem = missing_postgres()
        if problem:
            raise RuntimeError(problem)
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None
        folder = Path(tempfile.mkdtemp(prefix="testkit-postgres-"))
        run_as = RUN_AS_WHEN_ROOT if os.geteuid() == 0 else None
        if run_as:
            user = pwd.getpwnam(run_as)
            os.chown(folder, user.pw_uid, user.pw_gid)
        server = cls(folder, free_port(), bin_dir, database, run_as=run_as)
        try:
            server._tool(
                "initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync", timeout_s=timeout_s
            )
            server.start(timeout_s)
            server.create_database(database)
        except BaseException:
            server.close()
            raise
        return server

    def _tool(self, tool: str, *args: str, timeout_s: float = 60) -> str:
        result = subprocess.run(
            [str(self.bin_dir / tool), *args], capture_output=True, text=True, timeout=timeout_s, user=self.run_as, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited with {result.returncode}: {(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result.stdout

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return probe.returncode == 0

    def start(self, timeout_s: float = 60) -> PostgresServer:
        """Start the server (same folder, same port) and wait until it accepts connections."""
        assert not self.running(), "the server is already running"
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.folder}",
                "-c",
                "max_connections=200",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            user=self.run_as,
            start_new_session=True,  # its own process group: kill() reaches the backends too
        )
        handle.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_text()[-2000:]}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"postgres did not accept connections on port {self.port} within {timeout_s} s: {self.log_text()[-2000:]}")

    def stop(self, timeout_s: float = 30) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, the server checkpoints and exits); SIGKILL past the timeout."""
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("postgres on port %d did not stop within %.0f s: killing it", self.port, timeout_s)
            self.kill()

    def kill(self) -> None:
        """SIGKILL to the server's process group (postmaster and every backend), as a power-off would; the next
        start recovers from the write-ahead log."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._wait_group_gone(self.process.pid, 10)

    @staticmethod
    def _wait_group_gone(pgid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres processes of group {pgid} still alive {timeout_s} s after SIGKILL")

    def restart(self, down_s: float = 0.0, timeout_s: float = 60) -> None:
        """Stop, stay down ``down_s`` seconds (clients see refused connections), start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start(timeout_s)

    def sql(self, statement: str, database: str | None = None) -> list[list[str]]:
        """Run one SQL statement through psql; its rows as lists of text fields (for checks, not for the engine)."""
        out = self._tool(
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database or self.database,
            "-c",
            statement,
        )
        return [line.split("\t") for line in out.splitlines() if line]

    def create_database(self, name: str) -> str:
        """A new empty database on this server; its DSN."""
        self.sql(f'CREATE DATABASE "{name}"', database="postgres")
        self.databases.append(name)
        return dsn_for(self.port, name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
