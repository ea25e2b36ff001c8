"""The retention cleaner: what the gateway keeps of finished work, and for how long (off unless ``retention`` is configured).

A ``done`` job older than ``completed_days`` (by when it finished) is forgotten: its row and outputs in the database and
its folder ``jobs/<id>/`` (inputs, outputs, logs). A ``failed`` or ``unrouted`` job is kept for the longer
``failed_days``, so it can be retried (``gateway retry`` makes it pending again, and a retried job is never removed).
Received files go with the last job that held their series: a series no job holds any more, all of whose instances
were taken by a job and received more than ``completed_days`` ago, loses its instance records and files
(``incoming/<study>/<series>/``); a series with an instance waiting for its quiet period is kept whole. Afterwards a
resent study is new to the gateway: it makes a new job, and a new SEG series, as on its first arrival.

Files are removed inside the transaction that deletes their records, so a crash leaves records of missing files (the
next pass deletes them), never files a restart would record anew; a file whose modification time is newer than the
cut-off (the same instance sent again while the pass runs) is left for the new record. ``serve`` runs it every
``interval_s`` (the first time at start); ``python -m gateway clean --config F [--dry-run]`` runs it once.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig, Retention
from gateway.jobs import DONE, FAILED, UNROUTED, Job
from gateway.queue import JobQueue
from gateway.runner import job_paths

logger = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True)
class CleanReport:
    jobs: tuple[int, ...]  # the jobs forgotten (or that would be, on a dry run), by id
    series: int  # series whose received files were removed
    files: int  # received files removed
    dry_run: bool = False

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        listed = ", ".join(str(job_id) for job_id in self.jobs[:20]) + (", ..." if len(self.jobs) > 20 else "")
        return f"retention {verb} {len(self.jobs)} jobs ({listed or 'none'}) and {self.files} received files of {self.series} series"


def cutoffs(retention: Retention, now: float) -> dict[str, float]:
    """For each state retention removes, the time before which a job in it must have finished to go."""
    failed = now - retention.failed_days * DAY_S
    return {DONE: now - retention.completed_days * DAY_S, FAILED: failed, UNROUTED: failed}


def expired_jobs(jobs: Iterable[Job], before: dict[str, float]) -> list[Job]:
    """The finished jobs past their state's cut-off (pending, running and sending jobs never expire)."""
    return [job for job in jobs if job.state in before and job.finished_at is not None and job.finished_at < before[job.state]]


def released_series(jobs: Iterable[Job], expired: Iterable[Job]) -> set[str]:
    """Series held by an expired job and by no job that stays."""
    expired_ids = {job.id for job in expired}
    jobs = list(jobs)
    going = {uid for job in jobs if job.id in expired_ids for uid in job.series_uids}
    staying = {uid for job in jobs if job.id not in expired_ids for uid in job.series_uids}
    return going - staying


def remover(before: float, incoming_dir: Path) -> Callable[[Path], None]:
    """Unlink a received file unless it was written after ``before``; prune the series and study folders it empties."""

    def remove(path: Path) -> None:
        try:
            if path.stat().st_mtime >= before:
                logger.warning("Retention keeps %s: written again while it ran", path)
                return
            path.unlink()
        except FileNotFoundError:
            return
        for folder in (path.parent, path.parent.parent):
            if folder.parent.is_relative_to(incoming_dir) and folder != incoming_dir:
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty

    return remove


def remove_job_folders(jobs_dir: Path, job_ids: Iterable[int]) -> None:
    for job_id in job_ids:
        shutil.rmtree(job_paths(jobs_dir, job_id).root, ignore_errors=True)


def clean(config: GatewayConfig, queue: JobQueue, now: float, dry_run: bool = False) -> CleanReport:
    """One retention pass at ``now`` (see the module docstring); ``dry_run`` removes nothing and says what would go."""
    if config.retention is None:
        raise ValueError("retention is not configured (give retention: {completed_days: N, failed_days: M})")
    before = cutoffs(config.retention, now)
    jobs = queue.jobs()
    expired = expired_jobs(jobs, before)
    if dry_run:
        series = released_series(jobs, expired) | set(queue.unheld_series(before[DONE]))
        files = sum(len(paths) for paths in queue.series_files(sorted(series)).values())
        return CleanReport(tuple(sorted(job.id for job in expired)), len(series), files, dry_run=True)
    deleted = queue.forget_jobs([job.id for job in expired], before)
    remove_job_folders(config.jobs_dir, deleted)
    remove = remover(before[DONE], config.incoming_dir)
    series = files = 0
    for series_uid in queue.unheld_series(before[DONE]):
        removed = queue.forget_series(series_uid, before[DONE], remove)
        series += bool(removed)
        files += len(removed)
    return CleanReport(tuple(sorted(deleted)), series, files)


class RetentionLoop:
    """``clean`` in a thread of ``serve``: at start, then every ``retention.interval_s``; an error is logged, and it goes on."""

    def __init__(self, config: GatewayConfig, queue: JobQueue) -> None:
        if config.retention is None:
            raise ValueError("retention is not configured")
        self.config, self.queue, self.interval_s = config, queue, config.retention.interval_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread.ident is not None:  # started
            self.thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = clean(self.config, self.queue, time.time())
                logger.log(logging.INFO if report.jobs or report.files else logging.DEBUG, "%s", report.describe())
            except Exception:
                logger.exception("Retention pass failed; it runs again in %g s", self.interval_s)
            self._stop.wait(self.interval_s)
