"""The persistent state: received instances, jobs and their outputs, in one SQLite file (WAL, synchronous FULL).

Job states: ``pending`` (waiting, possibly for ``next_try_at``) -> ``running`` (the app runs) ->
``sending`` (outputs recorded, some not yet at every destination) -> ``done``. ``failed`` keeps a
job that used up its attempts, with its error and inputs; ``unrouted`` keeps series no route took.
On start, ``running`` jobs were interrupted by a crash: they go back to ``pending`` (the attempt
counts). ``sending`` jobs resume sending only the outputs not yet sent, so a result is not made twice.

Jobs of one route on the same series run one after the other, in order: a later job (new instances
in a series already processed) starts once the earlier one has finished, and supersedes its result
(``supersedes_job_id``; the earlier SEG's SOP Instance UID and SeriesInstanceUID, which the rerun's
SEG keeps).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.reception import Reception

PENDING, RUNNING, SENDING, DONE, FAILED, UNROUTED = "pending", "running", "sending", "done", "failed", "unrouted"
STATES = (PENDING, RUNNING, SENDING, DONE, FAILED, UNROUTED)
UNFINISHED = (PENDING, RUNNING, SENDING)
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


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
    supersedes_job_id: int | None = None  # the earlier job on these series whose result this one replaces
    supersedes_sop_uid: str | None = None  # that job's SEG (SOP Instance UID)
    result_series_uid: str | None = None  # the SeriesInstanceUID this job's SEG keeps (the earlier SEG's)


@dataclass(frozen=True)
class DicomOutput:
    """A DICOM file an app wrote: what is recorded of it."""

    sop_instance_uid: str
    sop_class_uid: str | None = None
    series_uid: str | None = None


@dataclass(frozen=True)
class Output:
    job_id: int
    path: Path
    sop_instance_uid: str
    destination: str
    sent_at: float | None
    send_count: int
    last_error: str | None
    sop_class_uid: str | None = None
    series_uid: str | None = None


@dataclass(frozen=True)
class Supersession:
    """What a rerun replaces: the earlier job, and its SEG's UIDs when it made exactly one SEG."""

    job_id: int
    sop_instance_uid: str | None = None
    series_uid: str | None = None


def supersession(earlier_job_id: int, outputs: Iterable[Output]) -> Supersession:
    """The earlier job's one SEG (by SOP class), or the job alone when it made none or several."""
    segs = {(o.sop_instance_uid, o.series_uid) for o in outputs if o.sop_class_uid == SEGMENTATION_STORAGE}
    if len(segs) != 1:
        return Supersession(earlier_job_id)
    [(sop_uid, series_uid)] = segs
    return Supersession(earlier_job_id, sop_uid, series_uid)


def runnable(candidates: Iterable[Job], unfinished: Iterable[Job], busy: set[int]) -> Job | None:
    """The first candidate not busy whose route has no earlier unfinished job on one of its series (those run in order)."""
    unfinished = list(unfinished)
    for job in candidates:
        if job.id in busy:
            continue
        if job.state == PENDING and any(
            other.id < job.id and other.route == job.route and set(other.series_uids) & set(job.series_uids) for other in unfinished
        ):
            continue
        return job
    return None


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
        supersedes_job_id=row["supersedes_job_id"],
        supersedes_sop_uid=row["supersedes_sop_uid"],
        result_series_uid=row["result_series_uid"],
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
        sop_class_uid=row["sop_class_uid"],
        series_uid=row["series_uid"],
    )


class JobQueue(Reception):
    """The jobs and outputs tables, over the received instances (one connection, one lock, see ``Database``)."""

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
        """The oldest due job not in ``busy`` (and not behind an earlier unfinished job on its series): a pending one
        becomes ``running`` (attempts + 1); a ``sending`` one is resumed."""
        now = time.time() if now is None else now
        marks = ",".join("?" * len(UNFINISHED))
        with self._transaction() as db:
            unfinished = [_job(r) for r in db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", UNFINISHED)]
            due = [job for job in unfinished if job.state in (PENDING, SENDING) and job.next_try_at <= now]
            job = runnable(due, unfinished, busy)
            if job is None:
                return None
            if job.state == PENDING:
                db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?", (RUNNING, now, job.id))
            return self.job(job.id)

    def earlier_result(self, job: Job) -> Supersession | None:
        """The latest earlier job of the same route on one of ``job``'s series that recorded outputs: the result ``job``
        supersedes (None for a first run)."""
        marks = ",".join("?" * len(job.series_uids))
        rows = self._query(
            f"""SELECT DISTINCT j.id FROM jobs AS j, json_each(j.series_uids) AS s
                WHERE j.id < ? AND j.route IS ? AND s.value IN ({marks})
                  AND EXISTS (SELECT 1 FROM outputs AS o WHERE o.job_id = j.id)
                ORDER BY j.id DESC LIMIT 1""",
            (job.id, job.route, *job.series_uids),
        )
        if not rows:
            return None
        earlier = rows[0]["id"]
        return supersession(earlier, self.outputs(earlier))

    def set_supersedes(self, job_id: int, earlier: Supersession | None) -> Job:
        """Record what the job's result replaces (before its app runs, so the app is told)."""
        self._set(
            job_id,
            supersedes_job_id=earlier.job_id if earlier else None,
            supersedes_sop_uid=earlier.sop_instance_uid if earlier else None,
            result_series_uid=earlier.series_uid if earlier else None,
        )
        return self.job(job_id)

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

    def app_succeeded(self, job_id: int, outputs: dict[Path, DicomOutput], destinations: Iterable[str]) -> None:
        """Record the app's DICOM outputs once per destination, and move on to ``sending``."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM outputs WHERE job_id = ?", (job_id,))
            for path, dicom in sorted(outputs.items()):
                for destination in destinations:
                    db.execute(
                        """INSERT INTO outputs (job_id, path, sop_instance_uid, sop_class_uid, series_uid, destination)
                           VALUES (?, ?, ?, ?, ?, ?)""",
                        (job_id, str(path), dicom.sop_instance_uid, dicom.sop_class_uid, dicom.series_uid, destination),
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
