"""Received instances and associations on a real database file: duplicates, changes, cut-off associations."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.grouping import WaitingGroup
from gateway.queue import DicomOutput, JobQueue
from gateway.reception import Arrival, KnownInstance, ReceivedInstance, arrival


@pytest.mark.parametrize(
    ("known", "series", "sha256", "live_job", "expected"),
    [
        (None, "1.1", "h1", False, "new"),
        (KnownInstance("1.1", "h1", dispatched=True), "1.1", "h1", True, "duplicate"),
        (KnownInstance("1.1", "h1", dispatched=True), "1.1", "h2", True, "changed"),
        (KnownInstance("1.1", "h1", dispatched=True), "2.1", "h1", True, "changed"),  # the same UID in another series
        (KnownInstance("1.1", None, dispatched=True), "1.1", "h1", True, "changed"),  # recorded before hashes were kept
        (KnownInstance("1.1", "h1", dispatched=False), "1.1", "h1", False, "resent"),  # not taken by a job yet
        (KnownInstance("1.1", "h1", dispatched=True), "1.1", "h1", False, "resent"),  # its job failed: a resend retries
    ],
)
def test_a_received_instance_is_new_changed_a_duplicate_or_resent(
    known: KnownInstance | None, series: str, sha256: str, live_job: bool, expected: Arrival
):
    assert arrival(known, series, sha256, live_job) == expected


def receive(queue: JobQueue, sop: str, at: float, sha256: str = "h1", association: int | None = None, series: str = "1.1") -> Arrival:
    instance = ReceivedInstance(
        sop, "1.2.840.10008.5.1.4.1.1.2", "1", series, "study:1", Path(f"/d/{sop}.dcm"), "PACS", sha256, association
    )
    return queue.record_instance(instance, now=at)


def processed(queue: JobQueue, at: float) -> int:
    """Dispatch the group, run its job and finish it (as the gateway does), returning the job id."""
    [job_id] = queue.dispatch_group("study:1", cutoff=at, routed={"ct": ["1.1"]}, unrouted={}, now=at)
    queue.claim(set())
    queue.app_succeeded(
        job_id, {Path(f"/out/{job_id}/seg.dcm"): DicomOutput(f"9.{job_id}", "1.2.840.10008.5.1.4.1.1.66.4", "8.1")}, ["pacs"]
    )
    queue.output_sent(job_id, Path(f"/out/{job_id}/seg.dcm"), "pacs")
    queue.sending_done(job_id)
    return job_id


def test_an_unchanged_instance_of_a_processed_series_waits_for_nothing_and_a_new_one_starts_a_superseding_rerun(tmp_path: Path):
    queue = JobQueue(tmp_path / "q.sqlite")
    receive(queue, "1.1.1", at=100.0)
    receive(queue, "1.1.2", at=100.0)
    first = processed(queue, at=200.0)
    assert receive(queue, "1.1.1", at=300.0) == "duplicate"
    assert queue.waiting_groups() == {}
    assert receive(queue, "1.1.3", at=310.0) == "new"
    assert queue.waiting_groups() == {"study:1": WaitingGroup(310.0)}
    [rerun_id] = queue.dispatch_group("study:1", cutoff=320.0, routed={"ct": ["1.1"]}, unrouted={}, now=320.0)
    rerun = queue.claim(set())
    earlier = queue.earlier_result(rerun)
    assert (earlier.job_id, earlier.sop_instance_uid, earlier.series_uid) == (first, f"9.{first}", "8.1")
    recorded = queue.set_supersedes(rerun_id, earlier)
    assert (recorded.supersedes_job_id, recorded.supersedes_sop_uid, recorded.result_series_uid) == (first, f"9.{first}", "8.1")
    assert sorted(p.name for p in queue.series_files(["1.1"])["1.1"]) == ["1.1.1.dcm", "1.1.2.dcm", "1.1.3.dcm"]


def test_a_first_run_supersedes_nothing_and_a_later_job_on_the_series_waits_for_the_earlier_one(tmp_path: Path):
    queue = JobQueue(tmp_path / "q.sqlite")
    receive(queue, "1.1.1", at=100.0)
    [first] = queue.dispatch_group("study:1", cutoff=100.0, routed={"ct": ["1.1"]}, unrouted={}, now=110.0)
    assert queue.earlier_result(queue.claim(set())) is None
    receive(queue, "1.1.2", at=120.0)
    [second] = queue.dispatch_group("study:1", cutoff=120.0, routed={"ct": ["1.1"]}, unrouted={}, now=130.0)
    assert queue.claim({first}) is None  # job 1 still runs: job 2 on the same series waits for it
    queue.app_failed(first, "exit 1: boom", max_attempts=1, retry_delay_s=0)
    assert queue.claim(set()).id == second


def test_associations_are_recorded_and_a_group_whose_newest_instance_was_cut_off_says_so(tmp_path: Path):
    queue = JobQueue(tmp_path / "q.sqlite")
    killed = queue.association_started("PACS", "127.0.0.1:1000", now=90.0)
    receive(queue, "1.1.1", at=100.0, association=killed)
    queue.close()
    reopened = JobQueue(tmp_path / "q.sqlite")  # the gateway died with the association open
    assert reopened.associations_killed() == 1
    assert reopened.association_state(killed) == ("killed", 1)
    assert reopened.waiting_groups() == {"study:1": WaitingGroup(100.0, cut_off=True)}
    released = reopened.association_started("PACS", "127.0.0.1:1001", now=200.0)
    assert receive(reopened, "1.1.1", at=210.0, association=released) == "resent"
    assert reopened.waiting_groups() == {"study:1": WaitingGroup(210.0, cut_off=False)}  # open now: the plain quiet period
    reopened.association_ended(released, "released")
    reopened.association_ended(released, "aborted")  # the connection closing after the release changes nothing
    assert reopened.association_state(released) == ("released", 1)
    assert reopened.waiting_groups() == {"study:1": WaitingGroup(210.0, cut_off=False)}
