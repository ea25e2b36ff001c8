"""The job queue: its state transitions, over either backend (``gateway.database`` SQLite, ``gateway.postgres``).

Job states: ``pending`` (waiting, possibly for ``next_try_at``) -> ``running`` (the app runs) ->
``sending`` (outputs recorded, some not yet at every destination) -> ``done``. ``failed`` keeps a
job that used up its attempts, with its error and inputs; ``unrouted`` keeps series no route took.
On start, ``running`` jobs were interrupted by a crash: they go back to ``pending`` (the attempt
counts). ``sending`` jobs resume sending only the outputs not yet sent, so a result is not made twice.

Several workers (the cluster mode, ``gateway.postgres``): a worker that claims a job holds its lease
(``lease_owner``) and renews ``heartbeat_at``; a job whose lease was not renewed for ``lease_s`` is
treated as interrupted by a crash (``recover`` with ``stale_before``), and every later step of the
worker that lost it is refused (``LeaseLost``), so two workers never both record a result.

Jobs of one route on the same series run one after the other, in order: a later job (new instances
in a series already processed) starts once the earlier one has finished, and supersedes its result
(``supersedes_job_id``; the earlier SEG's SOP Instance UID and SeriesInstanceUID, which the rerun's
SEG keeps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.jobs import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SEGMENTATION_STORAGE,
    SENDING,
    STATES,
    UNFINISHED,
    UNROUTED,
    DicomOutput,
    Holder,
    Job,
    LeaseLost,
    Output,
    Supersession,
    claimable,
    supersession,
)
from gateway.jobs import (
    job_from_row as _job,
)
from gateway.jobs import (
    output_from_row as _output,
)
from gateway.reception import Reception

__all__ = [
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "SENDING",
    "SEGMENTATION_STORAGE",
    "STATES",
    "UNFINISHED",
    "UNROUTED",
    "DicomOutput",
    "Holder",
    "Job",
    "LeaseLost",
    "Output",
    "Supersession",
    "claimable",
    "supersession",
    "JobQueue",
]


class JobQueue(Reception):
    """The jobs and outputs tables, over the received instances (one connection, one lock, see ``Database``)."""

    # --- jobs ---------------------------------------------------------------------------------
    def dispatch_group(
        self, group_key: str, cutoff: float, routed: dict[str, list[str]], unrouted: dict[str, str], now: float | None = None
    ) -> list[int]:
        """Turn a quiet group into jobs, in one transaction: one job per route (its series), one ``unrouted`` record per
        series no route took (``unrouted`` maps series to the reason); instances newer than ``cutoff`` keep waiting.
        Nothing is made (``[]``) unless the series given are exactly those waiting up to ``cutoff``: two dispatchers
        (two receivers) routing the same group make its jobs once."""
        now = time.time() if now is None else now
        ids: list[int] = []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT DISTINCT series_uid FROM instances WHERE group_key = ? AND dispatched = 0 AND received_at <= ?", (group_key, cutoff)
            ).fetchall()
            if {row[0] for row in rows} != {uid for series in routed.values() for uid in series} | set(unrouted):
                return []  # another dispatcher took the group first, or it changed since it was routed: routed again later
            for route, series in sorted(routed.items()):
                cursor = db.execute(
                    "INSERT INTO jobs (group_key, route, series_uids, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (group_key, route, json.dumps(sorted(series)), PENDING, now, now),
                )
                ids.append(int(cursor.fetchone()[0]))
            for series_uid, reason in sorted(unrouted.items()):
                cursor = db.execute(
                    """INSERT INTO jobs (group_key, route, series_uids, state, error, created_at, updated_at, finished_at)
                       VALUES (?, NULL, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    (group_key, json.dumps([series_uid]), UNROUTED, reason, now, now, now),
                )
                ids.append(int(cursor.fetchone()[0]))
            db.execute(
                "UPDATE instances SET dispatched = 1 WHERE group_key = ? AND dispatched = 0 AND received_at <= ?", (group_key, cutoff)
            )
        return ids

    def recover(self, max_attempts: int, now: float | None = None, stale_before: float | None = None) -> list[Job]:
        """Jobs whose worker stopped mid-run run again (or fail, when out of attempts); returns them. Without
        ``stale_before`` (one gateway, after its restart) every ``running`` job; with it, those whose lease was last
        renewed before it (a worker that died), and a ``sending`` one such is freed for another worker to resume."""
        now = time.time() if now is None else now
        stale, params = ("", ()) if stale_before is None else (" AND COALESCE(heartbeat_at, 0) < ?", (stale_before,))
        why = "the gateway stopped during the app run" if stale_before is None else "its worker stopped renewing its lease"
        with self._transaction() as db:
            interrupted = [_job(r) for r in db.execute(f"SELECT * FROM jobs WHERE state = ?{stale}", (RUNNING, *params)).fetchall()]
            for job in interrupted:
                if job.attempts >= max_attempts:
                    db.execute(
                        """UPDATE jobs SET state = ?, error = ?, updated_at = ?, finished_at = ?, attempt_ended_at = ?,
                           lease_owner = NULL WHERE id = ?""",
                        (FAILED, f"interrupted {job.attempts} times ({why})", now, now, now, job.id),
                    )
                else:
                    db.execute(
                        "UPDATE jobs SET state = ?, next_try_at = 0, updated_at = ?, attempt_ended_at = ?, lease_owner = NULL WHERE id = ?",
                        (PENDING, now, now, job.id),
                    )
            if stale_before is not None:
                db.execute(
                    "UPDATE jobs SET lease_owner = NULL, updated_at = ? WHERE state = ? AND lease_owner IS NOT NULL AND COALESCE(heartbeat_at, 0) < ?",
                    (now, SENDING, stale_before),
                )
        return interrupted

    def claim(
        self,
        busy: set[int],
        now: float | None = None,
        holder: Holder | None = None,
        held_after: float | None = None,
        only: int | None = None,
    ) -> Job | None:
        """The oldest due job not in ``busy`` (and not behind an earlier unfinished job on its series): a pending one
        becomes ``running`` (attempts + 1); a ``sending`` one is resumed. ``holder`` takes its lease; with
        ``held_after``, a job whose lease another worker renewed after that time is not claimed; ``only``: this job or none."""
        now = time.time() if now is None else now
        marks = ",".join("?" * len(UNFINISHED))
        with self._transaction() as db:
            unfinished = [_job(r) for r in db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", UNFINISHED)]
            job = next(iter(claimable(unfinished, now, busy, held_after, only)), None)
            if job is None:
                return None
            if job.state == PENDING:
                db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?", (RUNNING, now, job.id))
            if holder is not None:
                db.execute(
                    """UPDATE jobs SET node = ?, worker = ?, lease_owner = ?, heartbeat_at = ?, attempt_started_at = ?,
                       attempt_ended_at = NULL WHERE id = ?""",
                    (holder.node, holder.worker, holder.owner, now, now, job.id),
                )
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job.id,)).fetchone())

    def renew(self, owner: str, now: float | None = None) -> set[int]:
        """The worker ``owner`` is alive: renew the leases it holds; returns the ids of the jobs it still holds."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE lease_owner = ? AND state IN (?, ?) RETURNING id", (now, owner, RUNNING, SENDING)
            ).fetchall()
        return {int(row[0]) for row in rows}

    @staticmethod
    def _check_held(db: object, job_id: int, owner: str | None) -> None:
        if owner is None:
            return
        row = db.execute("SELECT lease_owner, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[0] != owner:
            raise LeaseLost(f"job {job_id} is no longer held by {owner} (its lease expired; another worker has it)")

    def earlier_result(self, job: Job) -> Supersession | None:
        """The latest earlier job of the same route on one of ``job``'s series that recorded outputs: the result ``job``
        supersedes (None for a first run)."""
        marks = ",".join("?" * len(job.series_uids))
        rows = self._query(
            f"""SELECT DISTINCT j.id FROM jobs AS j, {self.SERIES_OF.format(column="j.series_uids")}
                WHERE j.id < ? AND j.route IS NOT DISTINCT FROM ? AND s.value IN ({marks})
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

    def _set(self, job_id: int, owner: str | None = None, release: bool = False, **fields: object) -> None:
        """Update the job (refused with ``LeaseLost`` when ``owner`` no longer holds it); ``release``: its worker lets go."""
        fields["updated_at"] = time.time()
        if release:
            fields |= {"lease_owner": None, "attempt_ended_at": fields["updated_at"]}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            self._check_held(db, job_id, owner)
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def app_failed(self, job_id: int, error: str, max_attempts: int, retry_delay_s: float, owner: str | None = None) -> str:
        """Record a failed attempt: back to ``pending`` after the delay, or ``failed`` for good. Returns the new state."""
        job = self.job(job_id)
        if job.attempts >= max_attempts:
            self._set(job_id, owner, True, state=FAILED, error=error, finished_at=time.time())
            return FAILED
        self._set(job_id, owner, True, state=PENDING, error=error, next_try_at=time.time() + retry_delay_s)
        return PENDING

    def interrupted(self, job_id: int, owner: str | None = None) -> None:
        """The gateway is shutting down mid-run: the attempt does not count, the job runs again (on restart, or at once
        on another worker); a ``sending`` job is let go for another worker to resume."""
        now = time.time()
        with self._transaction() as db:
            self._check_held(db, job_id, owner)
            db.execute(
                """UPDATE jobs SET state = ?, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, next_try_at = 0,
                   updated_at = ?, lease_owner = NULL, attempt_ended_at = ? WHERE id = ? AND state = ?""",
                (PENDING, now, now, job_id, RUNNING),
            )
            db.execute("UPDATE jobs SET lease_owner = NULL, updated_at = ? WHERE id = ? AND state = ?", (now, job_id, SENDING))

    def app_succeeded(self, job_id: int, outputs: dict[Path, DicomOutput], destinations: Iterable[str], owner: str | None = None) -> None:
        """Record the app's DICOM outputs once per destination, and move on to ``sending`` (the worker keeps the job).
        Once recorded, the outputs are never made again: a resumed job sends these files, with these SOP Instance UIDs."""
        now = time.time()
        with self._transaction() as db:
            self._check_held(db, job_id, owner)
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

    def output_sending(self, job_id: int, paths: Iterable[Path], destination: str, owner: str | None = None) -> int:
        """Record the intent to send these outputs, before sending; returns how many were in doubt (an earlier worker
        recorded its intent and died before recording the outcome).

        Why a resend of an output in doubt is exported once: the output is the same file with the same SOP Instance UID
        (recorded by ``app_succeeded`` before any send, never made again), and a PACS keeps one instance per SOP Instance
        UID (Orthanc answers a second C-STORE of it without a second instance). What can never happen is a second
        *different* result: the app does not run again for a job that reached ``sending``."""
        paths = [str(path) for path in paths]
        now = time.time()
        with self._transaction() as db:
            self._check_held(db, job_id, owner)
            doubt = 0
            for path in paths:
                row = db.execute(
                    "SELECT send_started_at FROM outputs WHERE job_id = ? AND path = ? AND destination = ? AND sent_at IS NULL",
                    (job_id, path, destination),
                ).fetchone()
                doubt += row is not None and row[0] is not None
                db.execute(
                    "UPDATE outputs SET send_started_at = ? WHERE job_id = ? AND path = ? AND destination = ?",
                    (now, job_id, path, destination),
                )
        return doubt

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

    def sending_done(self, job_id: int, owner: str | None = None) -> None:
        self._set(job_id, owner, True, state=DONE, error=None, finished_at=time.time(), next_try_at=0)

    def sending_failed(self, job_id: int, error: str, max_send_attempts: int, retry_delay_s: float, owner: str | None = None) -> str:
        job = self.job(job_id)
        attempts = job.send_attempts + 1
        if attempts >= max_send_attempts:
            self._set(job_id, owner, True, state=FAILED, send_attempts=attempts, error=error, finished_at=time.time())
            return FAILED
        self._set(job_id, owner, True, send_attempts=attempts, error=error, next_try_at=time.time() + retry_delay_s)
        return SENDING

    def retry(self, job_id: int) -> Job:
        """Give a failed job its attempts back (after fixing its cause); one that had outputs resumes sending them."""
        job = self.job(job_id)
        if job.state != FAILED:
            raise ValueError(f"job {job_id} is {job.state}, not failed")
        state = SENDING if self.outputs(job_id) else PENDING
        self._set(job_id, state=state, attempts=0, send_attempts=0, next_try_at=0, finished_at=None, lease_owner=None)
        return self.job(job_id)

    # --- retention (gateway.retention) -------------------------------------------------------------
    def forget_jobs(self, job_ids: Iterable[int], finished_before: dict[str, float]) -> list[int]:
        """Delete these jobs and their outputs, each only while still in a state ``finished_before`` names and finished
        before that state's cut-off (a job retried meanwhile stays); returns the ids deleted."""
        deleted: list[int] = []
        with self._transaction() as db:
            for job_id in job_ids:
                row = db.execute("SELECT state, finished_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None or row[0] not in finished_before or row[1] is None or row[1] >= finished_before[row[0]]:
                    continue
                db.execute("DELETE FROM outputs WHERE job_id = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                deleted.append(job_id)
        return deleted

    def unheld_series(self, received_before: float) -> dict[str, list[Path]]:
        """Series no job holds any more whose instances were all taken by a job and received before ``received_before``,
        with their files (what retention may remove)."""
        rows = self._query(
            f"""SELECT i.series_uid, i.path FROM instances AS i WHERE i.series_uid IN (
                    SELECT series_uid FROM instances GROUP BY series_uid HAVING MIN(dispatched) = 1 AND MAX(received_at) < ?)
                  AND NOT EXISTS (SELECT 1 FROM jobs, {self.SERIES_OF.format(column="jobs.series_uids")} WHERE s.value = i.series_uid)
                ORDER BY i.series_uid, i.path""",
            (received_before,),
        )
        series: dict[str, list[Path]] = {}
        for row in rows:
            series.setdefault(row[0], []).append(Path(row[1]))
        return series

    def forget_series(self, series_uid: str, received_before: float, remove: Callable[[Path], None]) -> list[Path]:
        """Delete the series' instance records if it is still unheld (``unheld_series``), calling ``remove`` on each file
        inside the transaction (a crash leaves records of missing files, never files the restart records anew)."""
        with self._transaction() as db:
            newest = db.execute("SELECT MIN(dispatched), MAX(received_at) FROM instances WHERE series_uid = ?", (series_uid,)).fetchone()
            held = db.execute(
                f"SELECT 1 FROM jobs, {self.SERIES_OF.format(column='jobs.series_uids')} WHERE s.value = ? LIMIT 1", (series_uid,)
            ).fetchone()
            if held is not None or newest is None or newest[0] != 1 or newest[1] is None or newest[1] >= received_before:
                return []
            paths = [Path(row[0]) for row in db.execute("SELECT path FROM instances WHERE series_uid = ?", (series_uid,)).fetchall()]
            for path in paths:
                remove(path)
            db.execute("DELETE FROM instances WHERE series_uid = ?", (series_uid,))
        return paths
