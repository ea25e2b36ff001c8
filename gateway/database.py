"""The gateway's SQLite file: its schema, the migration of a file an earlier version wrote, one connection and one lock.

Tables: ``associations`` (each DICOM association: when it started, how it ended), ``instances``
(each received SOP instance: its file, content hash, association and whether a job has taken it),
``jobs`` and ``outputs``. A database from an earlier version opens: tables it lacks are created and
columns it lacks are added (``ALTER TABLE ... ADD COLUMN``, NULL or their default in old rows).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

TABLES = """
CREATE TABLE IF NOT EXISTS associations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    calling_aet TEXT NOT NULL,
    peer TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    instances INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    group_key TEXT NOT NULL,
    path TEXT NOT NULL,
    calling_aet TEXT NOT NULL,
    received_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 1,
    dispatched INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key TEXT NOT NULL,
    route TEXT,
    series_uids TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    send_attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    next_try_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    path TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    sent_at REAL,
    send_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (job_id, path, destination)
);
CREATE TABLE IF NOT EXISTS association_owners (
    association_id INTEGER PRIMARY KEY REFERENCES associations (id),
    owner TEXT NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""

# Columns added after the first version: (table, column, declaration). Old rows get NULL.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("instances", "content_sha256", "TEXT"),
    ("instances", "association_id", "INTEGER"),
    ("jobs", "supersedes_job_id", "INTEGER"),
    ("jobs", "supersedes_sop_uid", "TEXT"),
    ("jobs", "result_series_uid", "TEXT"),
    ("outputs", "series_uid", "TEXT"),
    ("outputs", "sop_class_uid", "TEXT"),
    ("jobs", "node", "TEXT"),  # the host and worker of the last attempt (shown by ``gateway jobs``)
    ("jobs", "worker", "TEXT"),
    ("jobs", "attempt_started_at", "REAL"),
    ("jobs", "attempt_ended_at", "REAL"),
    ("jobs", "lease_owner", "TEXT"),  # the worker holding the job now (NULL once it let go), renewing heartbeat_at
    ("jobs", "heartbeat_at", "REAL"),
    ("outputs", "send_started_at", "REAL"),  # the intent to send, recorded before the send (see JobQueue.output_sending)
)

INDEXES = """
CREATE INDEX IF NOT EXISTS instances_waiting ON instances (dispatched, group_key);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, next_try_at);
"""


def missing_columns(existing: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """The added columns a database lacks, given each table's present column names."""
    return [(table, column, kind) for table, column, kind in ADDED_COLUMNS if column not in existing.get(table, set())]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Create what is missing (tables, columns, indexes), in one transaction; returns the ``table.column`` names added."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
        existing = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")} for table in {t for t, _, _ in ADDED_COLUMNS}}
        added = missing_columns(existing)
        for table, column, kind in added:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        for statement in INDEXES.split(";"):
            if statement.strip():
                db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return [f"{table}.{column}" for table, column, _ in added]


class Database:
    """One connection (WAL, synchronous FULL) shared by threads under one lock.

    The queue's logic (``Reception``, ``JobQueue``) sees a backend only through ``_transaction``, ``_query`` and
    ``SERIES_OF``; ``gateway.postgres`` gives the same three over PostgreSQL."""

    SERIES_OF = "json_each({column}) AS s"  # the values of a JSON array column as a table ``s`` with column ``value``

    def __init__(self, database: Path) -> None:
        database = Path(database)
        database.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self.migrated = migrate(self._db)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, shared: bool = False, key: str | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``shared``/``key`` let PostgreSQL run such transactions side by side (those that touch
        only one instance, ``key``, and their association); SQLite serialises every writer anyway."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()
