"""The job model both queue backends share: the states, a job and its outputs as recorded, and the pure rules
(which job may run next, what a rerun supersedes). ``gateway.queue`` holds the state transitions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    node: str | None = None  # host and worker of the last attempt, and when it started and ended
    worker: str | None = None
    attempt_started_at: float | None = None
    attempt_ended_at: float | None = None
    lease_owner: str | None = None  # ``node/worker`` holding the job now
    heartbeat_at: float | None = None


class LeaseLost(RuntimeError):
    """The worker no longer holds the job (its lease expired and the job went to another worker)."""


@dataclass(frozen=True)
class Holder:
    """A worker that claims jobs: its host and its name there."""

    node: str
    worker: str

    @property
    def owner(self) -> str:
        return f"{self.node}/{self.worker}"


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
    send_started_at: float | None = None  # when the last send of it began (recorded before the send)


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


def first_on_series(unfinished: Iterable[Job]) -> dict[tuple[str | None, str], int]:
    """For each (route, series) the id of its earliest unfinished job: the one of them that may run."""
    first: dict[tuple[str | None, str], int] = {}
    for job in unfinished:
        for series in job.series_uids:
            key = (job.route, series)
            first[key] = min(first.get(key, job.id), job.id)
    return first


def blocked(job: Job, first: dict[tuple[str | None, str], int]) -> bool:
    """Whether a pending job waits for an earlier unfinished job of its route on one of its series (those run in order);
    ``first`` is ``first_on_series`` of the unfinished jobs."""
    return job.state == PENDING and any(first.get((job.route, series), job.id) < job.id for series in job.series_uids)


def claimable(
    unfinished: Iterable[Job],
    now: float,
    busy: set[int] | frozenset[int] = frozenset(),
    held_after: float | None = None,
    only: int | None = None,
) -> list[Job]:
    """The jobs a worker may claim now, oldest first: pending or sending, due, not in ``busy``, not ``blocked``, and
    (with ``held_after``) not held by a lease renewed after that time; ``only``: that job, if it may."""
    unfinished = list(unfinished)
    first = first_on_series(unfinished)
    return [
        job
        for job in unfinished
        if only in (None, job.id)
        and job.state in (PENDING, SENDING)
        and job.next_try_at <= now
        and job.id not in busy
        and (held_after is None or job.lease_owner is None or (job.heartbeat_at or 0) < held_after)
        and not blocked(job, first)
    ]


def job_from_row(row: Any) -> Job:
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
        node=row["node"],
        worker=row["worker"],
        attempt_started_at=row["attempt_started_at"],
        attempt_ended_at=row["attempt_ended_at"],
        lease_owner=row["lease_owner"],
        heartbeat_at=row["heartbeat_at"],
    )


def output_from_row(row: Any) -> Output:
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
        send_started_at=row["send_started_at"],
    )
