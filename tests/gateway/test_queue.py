"""The SQLite job queue's promises, on a real database file reopened as after a restart."""

from __future__ import annotations

from pathlib import Path

from gateway.grouping import WaitingGroup
from gateway.queue import DONE, FAILED, PENDING, RUNNING, SENDING, UNROUTED, DicomOutput, JobQueue
from gateway.reception import Arrival, ReceivedInstance

MAX_ATTEMPTS = 2


def received(queue: JobQueue, sop: str, series: str = "1.1", group: str = "study:1", at: float = 100.0, sha256: str = "h1") -> Arrival:
    return queue.record_instance(
        ReceivedInstance(sop, "1.2.840.10008.5.1.4.1.1.2", "1", series, group, Path(f"/data/{sop}.dcm"), "PACS", sha256), now=at
    )


def one_job(path: Path) -> tuple[JobQueue, int]:
    queue = JobQueue(path)
    received(queue, "1.1.1")
    [job_id] = queue.dispatch_group("study:1", cutoff=100.0, routed={"ct": ["1.1"]}, unrouted={}, now=200.0)
    return queue, job_id


def test_a_job_interrupted_while_running_runs_again_after_reopening(tmp_path: Path):
    queue, job_id = one_job(tmp_path / "q.sqlite")
    assert queue.claim(set()).state == RUNNING
    queue.close()  # the gateway died here
    reopened = JobQueue(tmp_path / "q.sqlite")
    assert [job.id for job in reopened.recover(MAX_ATTEMPTS)] == [job_id]
    job = reopened.claim(set())
    assert (job.id, job.state, job.attempts) == (job_id, RUNNING, 2)


def test_a_job_interrupted_on_every_attempt_is_kept_as_failed(tmp_path: Path):
    queue, job_id = one_job(tmp_path / "q.sqlite")
    for _ in range(MAX_ATTEMPTS):
        queue.claim(set())
        queue.recover(MAX_ATTEMPTS)
    job = queue.job(job_id)
    assert job.state == FAILED and "interrupted 2 times" in job.error
    assert queue.claim(set()) is None


def test_a_finished_job_is_never_claimed_again(tmp_path: Path):
    queue, job_id = one_job(tmp_path / "q.sqlite")
    queue.claim(set())
    queue.app_succeeded(job_id, {Path("/out/seg.dcm"): DicomOutput("9.9")}, ["pacs"])
    queue.output_sent(job_id, Path("/out/seg.dcm"), "pacs")
    queue.sending_done(job_id)
    queue.close()
    reopened = JobQueue(tmp_path / "q.sqlite")
    assert reopened.recover(MAX_ATTEMPTS) == []
    assert reopened.claim(set()) is None and reopened.job(job_id).state == DONE


def test_a_job_stopped_while_sending_resumes_with_only_the_unsent_outputs(tmp_path: Path):
    queue, job_id = one_job(tmp_path / "q.sqlite")
    queue.claim(set())
    outputs = {Path("/out/seg.dcm"): DicomOutput("9.1"), Path("/out/sr.dcm"): DicomOutput("9.2")}
    queue.app_succeeded(job_id, outputs, ["pacs", "archive"])
    queue.output_sent(job_id, Path("/out/seg.dcm"), "pacs")
    queue.close()
    reopened = JobQueue(tmp_path / "q.sqlite")
    reopened.recover(MAX_ATTEMPTS)
    job = reopened.claim(set())
    assert (job.state, job.attempts) == (SENDING, 1)  # the app does not run again
    unsent = {(o.destination, o.path.name) for o in reopened.outputs(job_id, unsent_only=True)}
    assert unsent == {("archive", "seg.dcm"), ("archive", "sr.dcm"), ("pacs", "sr.dcm")}


def test_a_failing_job_is_retried_a_bounded_number_of_times_then_kept_with_its_error(tmp_path: Path):
    queue, job_id = one_job(tmp_path / "q.sqlite")
    queue.claim(set())
    assert queue.app_failed(job_id, "exit 2: app: error: bad", MAX_ATTEMPTS, retry_delay_s=0) == PENDING
    queue.claim(set())
    assert queue.app_failed(job_id, "exit 2: app: error: bad again", MAX_ATTEMPTS, retry_delay_s=0) == FAILED
    job = queue.job(job_id)
    assert (job.state, job.attempts, job.error) == (FAILED, 2, "exit 2: app: error: bad again")
    assert queue.claim(set()) is None
    assert queue.retry(job_id).state == PENDING and queue.claim(set()).attempts == 1


def test_a_retry_waits_for_its_delay(tmp_path: Path):
    queue, job_id = one_job(tmp_path / "q.sqlite")
    queue.claim(set())
    queue.app_failed(job_id, "boom", MAX_ATTEMPTS, retry_delay_s=3600)
    assert queue.claim(set()) is None


def test_instances_arriving_after_the_cutoff_wait_for_the_next_job_and_a_resent_instance_waits_again(tmp_path: Path):
    queue = JobQueue(tmp_path / "q.sqlite")
    assert received(queue, "1.1.1", at=100.0) == "new"
    assert received(queue, "1.1.2", at=150.0) == "new"
    queue.dispatch_group("study:1", cutoff=120.0, routed={"ct": ["1.1"]}, unrouted={}, now=125.0)
    assert queue.waiting_groups() == {"study:1": WaitingGroup(150.0)}
    assert received(queue, "1.1.1", at=160.0, sha256="h2") == "changed"  # the same SOP instance, new content: one row, waits again
    assert queue.instance_count() == 2 and queue.waiting_groups() == {"study:1": WaitingGroup(160.0)}


def test_unrouted_series_are_kept_as_records_with_the_reason(tmp_path: Path):
    queue = JobQueue(tmp_path / "q.sqlite")
    received(queue, "1.1.1")
    received(queue, "2.1.1", series="2.1")
    ids = queue.dispatch_group(
        "study:1", cutoff=100.0, routed={"ct": ["1.1"]}, unrouted={"2.1": "no route matches (Modality=MR)"}, now=200.0
    )
    unrouted = [queue.job(i) for i in ids if queue.job(i).state == UNROUTED]
    assert [(j.series_uids, j.error) for j in unrouted] == [(("2.1",), "no route matches (Modality=MR)")]
    assert queue.claim(set()).route == "ct" and queue.claim({ids[0]}) is None
