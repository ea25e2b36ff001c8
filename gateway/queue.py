"""The persistent state: received instances, jobs and their outputs, in one SQLite file (WAL, synchronous FULL).

Job states: ``pending`` (waiting, possibly for ``next_try_at``) -> ``running`` (the app runs) ->
``sending`` (outputs recorded, some not yet at every destination) -> ``done``. ``failed`` keeps a
job that used up its attempts, with its error and inputs; ``unrouted`` keeps series no route took.
On start, ``running`` jobs were interrupted by a crash: they go back to ``pending`` (the attempt
counts). ``sending`` jobs resume sending only the outputs not yet sent, so a result is not made twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS instances_waiting ON instances (dispatched, group_key);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid);
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
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, next_try_at);
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
"""

PENDING, RUNNING, SENDING, DONE, FAILED, UNROUTED = "pending", "running", "sending", "done", "failed", "unrouted"
STATES = (PENDING, RUNNING, SENDING, DONE, FAILED, UNROUTED)


@dataclass(frozen=True)
class ReceivedInstance:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    group_key: str
    path: Path
    calling_aet: str


@dataclass(frozen=True)
class Job:
    id: int
    group_key: str
    route: str | None
    series_uids: tuple[str, ...]
    state: str
    attempts: int
    send_attempts: int
    error: str | None
    next_try_at: float
    created_at: float
    updated_at: float
    finished_at: float | None


@dataclass(frozen=True)
class Output:
    job_id: int
    path: Path
    sop_instance_uid: str
    destination: str
    sent_at: float | None
    send_count: int
    last_error: str | None


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        group_key=row["group_key"],
        route=row["route"],
        series_uids=tuple(json.loads(row["series_uids"])),
        state=row["state"],
        attempts=row["attempts"],
        send_attempts=row["send_attempts"],
        error=row["error"],
        next_try_at=row["next_try_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


def _output(row: sqlite3.Row) -> Output:
    return Output(
        job_id=row["job_id"],
        path=Path(row["path"]),
        sop_instance_uid=row["sop_instance_uid"],
        destination=row["destination"],
        sent_at=row["sent_at"],
        send_count=row["send_count"],
        last_error=row["last_error"],
    )


class JobQueue:
    """Thread-safe access to the gateway's SQLite database (one connection, one lock)."""

    def __init__(self, database: Path) -> None:
        database = Path(database)
        database.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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

    # --- received instances -------------------------------------------------------------------
    def record_instance(self, instance: ReceivedInstance, now: float | None = None) -> bool:
        """Record a stored instance; True when it is new, False when it was received before (it waits again)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            known = db.execute("SELECT 1 FROM instances WHERE sop_instance_uid = ?", (instance.sop_instance_uid,)).fetchone()
            db.execute(
                """INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid, series_uid, group_key, path, calling_aet, received_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (sop_instance_uid) DO UPDATE SET path = excluded.path, group_key = excluded.group_key,
                       calling_aet = excluded.calling_aet, received_at = excluded.received_at,
                       receive_count = receive_count + 1, dispatched = 0""",
                (
                    instance.sop_instance_uid,
                    instance.sop_class_uid,
                    instance.study_uid,
                    instance.series_uid,
                    instance.group_key,
                    str(instance.path),
                    instance.calling_aet,
                    now,
                ),
            )
        return known is None

    def known_paths(self) -> set[str]:
        return {row["path"] for row in self._query("SELECT path FROM instances")}

    def waiting_groups(self) -> dict[str, float]:
        """Groups with instances not yet handed to a job, and when their newest instance arrived."""
        rows = self._query("SELECT group_key, MAX(received_at) AS last FROM instances WHERE dispatched = 0 GROUP BY group_key")
        return {row["group_key"]: row["last"] for row in rows}

    def waiting_series(self, group_key: str) -> dict[str, Path]:
        """The group's series with waiting instances, each with one of its files (to read its attributes)."""
        rows = self._query(
            "SELECT series_uid, MIN(path) AS path FROM instances WHERE dispatched = 0 AND group_key = ? GROUP BY series_uid", (group_key,)
        )
        return {row["series_uid"]: Path(row["path"]) for row in rows}

    def series_files(self, series_uids: Iterable[str]) -> dict[str, list[Path]]:
        """Every stored file of these series (a job's input is its series whole, earlier arrivals included)."""
        files: dict[str, list[Path]] = {}
        for uid in series_uids:
            files[uid] = [Path(r["path"]) for r in self._query("SELECT path FROM instances WHERE series_uid = ? ORDER BY path", (uid,))]
        return files

    def instance_count(self) -> int:
        return self._query("SELECT COUNT(*) AS n FROM instances")[0]["n"]

    # --- jobs ---------------------------------------------------------------------------------
    def dispatch_group(
        self, group_key: str, cutoff: float, routed: dict[str, list[str]], unrouted: dict[str, str], now: float | None = None
    ) -> list[int]:
        """Turn a quiet group into jobs, in one transaction: one job per route (its series), one ``unrouted`` record per
        series no route took (``unrouted`` maps series to the reason); instances newer than ``cutoff`` keep waiting."""
        now = time.time() if now is None else now
        ids: list[int] = []
        with self._transaction() as db:
            for route, series in sorted(routed.items()):
                cursor = db.execute(
                    "INSERT INTO jobs (group_key, route, series_uids, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (group_key, route, json.dumps(sorted(series)), PENDING, now, now),
                )
                ids.append(int(cursor.lastrowid))
            for series_uid, reason in sorted(unrouted.items()):
                cursor = db.execute(
                    "INSERT INTO jobs (group_key, route, series_uids, state, error, created_at, updated_at, finished_at) VALUES (?, NULL, ?, ?, ?, ?, ?, ?)",
                    (group_key, json.dumps([series_uid]), UNROUTED, reason, now, now, now),
                )
                ids.append(int(cursor.lastrowid))
            db.execute(
                "UPDATE instances SET dispatched = 1 WHERE group_key = ? AND dispatched = 0 AND received_at <= ?", (group_key, cutoff)
            )
        return ids

    def recover(self, max_attempts: int, now: float | None = None) -> list[Job]:
        """After a restart: jobs left ``running`` by a crash run again (or fail, when out of attempts). Returns them."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            interrupted = [_job(r) for r in db.execute("SELECT * FROM jobs WHERE state = ?", (RUNNING,)).fetchall()]
            for job in interrupted:
                if job.attempts >= max_attempts:
                    db.execute(
                        "UPDATE jobs SET state = ?, error = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                        (FAILED, f"interrupted {job.attempts} times (the gateway stopped during the app run)", now, now, job.id),
                    )
                else:
                    db.execute("UPDATE jobs SET state = ?, next_try_at = 0, updated_at = ? WHERE id = ?", (PENDING, now, job.id))
        return interrupted

    def claim(self, busy: set[int], now: float | None = None) -> Job | None:
        """The oldest due job not in ``busy``: a pending one becomes ``running`` (attempts + 1); a ``sending`` one is resumed."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE state IN (?, ?) AND next_try_at <= ? ORDER BY id", (PENDING, SENDING, now)
            ).fetchall()
            row = next((r for r in rows if r["id"] not in busy), None)
            if row is None:
                return None
            if row["state"] == PENDING:
                db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?", (RUNNING, now, row["id"]))
            return self.job(row["id"])

    def job(self, job_id: int) -> Job:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise KeyError(f"no job {job_id}")
        return _job(rows[0])

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        wanted = tuple(states or ())
        if wanted:
            return [_job(r) for r in self._query(f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(wanted))}) ORDER BY id", wanted)]
        return [_job(r) for r in self._query("SELECT * FROM jobs ORDER BY id")]

    def _set(self, job_id: int, **fields: object) -> None:
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def app_failed(self, job_id: int, error: str, max_attempts: int, retry_delay_s: float) -> str:
        """Record a failed attempt: back to ``pending`` after the delay, or ``failed`` for good. Returns the new state."""
        job = self.job(job_id)
        if job.attempts >= max_attempts:
            self._set(job_id, state=FAILED, error=error, finished_at=time.time())
            return FAILED
        self._set(job_id, state=PENDING, error=error, next_try_at=time.time() + retry_delay_s)
        return PENDING

    def interrupted(self, job_id: int) -> None:
        """The gateway is shutting down mid-run: the attempt does not count, the job runs again on restart."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, attempts = MAX(attempts - 1, 0), next_try_at = 0, updated_at = ? WHERE id = ? AND state = ?",
                (PENDING, time.time(), job_id, RUNNING),
            )

    def app_succeeded(self, job_id: int, outputs: dict[Path, str], destinations: Iterable[str]) -> None:
        """Record the app's DICOM outputs (path -> SOP Instance UID) once per destination, and move on to ``sending``."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM outputs WHERE job_id = ?", (job_id,))
            for path, uid in sorted(outputs.items()):
                for destination in destinations:
                    db.execute(
                        "INSERT INTO outputs (job_id, path, sop_instance_uid, destination) VALUES (?, ?, ?, ?)",
                        (job_id, str(path), uid, destination),
                    )
            db.execute("UPDATE jobs SET state = ?, error = NULL, updated_at = ? WHERE id = ?", (SENDING, now, job_id))

    def outputs(self, job_id: int, unsent_only: bool = False) -> list[Output]:
        sql = "SELECT * FROM outputs WHERE job_id = ?" + (" AND sent_at IS NULL" if unsent_only else "") + " ORDER BY destination, path"
        return [_output(r) for r in self._query(sql, (job_id,))]

    def output_sent(self, job_id: int, path: Path, destination: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outputs SET sent_at = ?, send_count = send_count + 1, last_error = NULL WHERE job_id = ? AND path = ? AND destination = ?",
                (time.time(), job_id, str(path), destination),
            )

    def output_failed(self, job_id: int, path: Path, destination: str, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outputs SET last_error = ? WHERE job_id = ? AND path = ? AND destination = ?",
                (error, job_id, str(path), destination),
            )

    def sending_done(self, job_id: int) -> None:
        self._set(job_id, state=DONE, error=None, finished_at=time.time(), next_try_at=0)

    def sending_failed(self, job_id: int, error: str, max_send_attempts: int, retry_delay_s: float) -> str:
        job = self.job(job_id)
        attempts = job.send_attempts + 1
        if attempts >= max_send_attempts:
            self._set(job_id, state=FAILED, send_attempts=attempts, error=error, finished_at=time.time())
            return FAILED
        self._set(job_id, send_attempts=attempts, error=error, next_try_at=time.time() + retry_delay_s)
        return SENDING

    def retry(self, job_id: int) -> Job:
        """Give a failed job its attempts back (after fixing its cause); one that had outputs resumes sending them."""
        job = self.job(job_id)
        if job.state != FAILED:
            raise ValueError(f"job {job_id} is {job.state}, not failed")
        state = SENDING if self.outputs(job_id) else PENDING
        self._set(job_id, state=state, attempts=0, send_attempts=0, next_try_at=0, finished_at=None)
        return self.job(job_id)
