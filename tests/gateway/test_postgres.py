"""The queue's PostgreSQL backend (gateway/postgres.py): the same promises as SQLite with several processes on one
database, which separate connections stand for here (one per claimer, dispatcher or receiver), on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.grouping import WaitingGroup
from gateway.postgres import PostgresJobQueue, placeholders
from gateway.queue import FAILED, PENDING, RUNNING, SENDING, DicomOutput, Holder, LeaseLost
from gateway.reception import ReceivedInstance
from testkit.postgres import PostgresServer

MAX_ATTEMPTS = 2
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
A, B = Holder("host-a", "1.0"), Holder("host-b", "2.0")


def received(queue: PostgresJobQueue, sop: str, series: str, group: str, at: float = 100.0) -> str:
    return queue.record_instance(
        ReceivedInstance(sop, "1.2.840.10008.5.1.4.1.1.2", group, series, group, Path(f"/data/{sop}.dcm"), "PACS", "h1"), now=at
    )


def jobs_for(queue: PostgresJobQueue, count: int) -> list[int]:
    """``count`` pending jobs, one per study of one series."""
    ids = []
    for i in range(count):
        received(queue, f"1.{i}.1", f"1.{i}", f"study:{i}")
        ids += queue.dispatch_group(f"study:{i}", cutoff=100.0, routed={"ct": [f"1.{i}"]}, unrouted={}, now=200.0)
    return ids


def together(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at the same moment in threads (a barrier), each on its own connection; their results."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


@pytest.fixture
def queues(postgres_dsn: str):
    """Two connections to one new database, as two processes have."""
    first, second = PostgresJobQueue(postgres_dsn), PostgresJobQueue(postgres_dsn)
    yield first, second
    first.close()
    second.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM jobs WHERE id = ?", "SELECT * FROM jobs WHERE id = %s"),
        ("UPDATE t SET a = ?, b = ? WHERE c LIKE '5%'", "UPDATE t SET a = %s, b = %s WHERE c LIKE '5%%'"),
        ("SELECT 1", "SELECT 1"),
    ],
)
def test_the_queues_sql_is_given_to_psycopg_with_its_placeholders(sql: str, expected: str):
    assert placeholders(sql) == expected


def test_two_claimers_on_one_database_never_claim_one_job_twice(queues):
    first, second = queues
    ids = jobs_for(first, 30)

    def claim_all(queue: PostgresJobQueue, holder: Holder) -> list[int]:
        claimed = []
        while (job := queue.claim(set(), holder=holder, held_after=time.time() - 60)) is not None:
            claimed.append(job.id)
        return claimed

    by_a, by_b = together(lambda: claim_all(first, A), lambda: claim_all(second, B))
    assert sorted(by_a + by_b) == sorted(ids)  # every job once: none twice, none left
    assert by_a and by_b, "both claimers took work"
    owners = {job.id: (job.state, job.attempts, job.lease_owner) for job in first.jobs()}
    assert all(owners[i] == (RUNNING, 1, A.owner) for i in by_a) and all(owners[i] == (RUNNING, 1, B.owner) for i in by_b)


def test_a_job_held_by_a_live_lease_is_not_claimed_by_another_worker(queues):
    first, second = queues
    [job_id] = jobs_for(first, 1)
    first.claim(set(), holder=A)
    first.app_succeeded(job_id, {Path("/out/seg.dcm"): DicomOutput("9.9", SEG)}, ["pacs"], owner=A.owner)
    assert first.job(job_id).state == SENDING  # A is sending: still its job
    assert second.claim(set(), holder=B, held_after=time.time() - 60, only=job_id) is None
    first.sending_failed(job_id, "pacs: refused", max_send_attempts=5, retry_delay_s=0, owner=A.owner)  # A lets go
    resumed = second.claim(set(), holder=B, held_after=time.time() - 60, only=job_id)
    assert (resumed.state, resumed.lease_owner, resumed.node) == (SENDING, B.owner, "host-b")


def test_a_job_whose_lease_expires_goes_to_another_worker_and_the_first_can_record_nothing(queues):
    first, second = queues
    [job_id] = jobs_for(first, 1)
    first.claim(set(), holder=A, now=1000.0)
    assert first.renew(A.owner, now=1010.0) == {job_id}
    assert second.recover(MAX_ATTEMPTS, now=1020.0, stale_before=1005.0) == []  # renewed at 1010: alive
    [expired] = second.recover(MAX_ATTEMPTS, now=1200.0, stale_before=1080.0)
    assert (expired.id, expired.lease_owner) == (job_id, A.owner)
    assert (second.job(job_id).state, second.job(job_id).attempts) == (PENDING, 1)  # the attempt counts
    rerun = second.claim(set(), holder=B)
    assert (rerun.id, rerun.attempts, rerun.worker) == (job_id, 2, "2.0")
    with pytest.raises(LeaseLost, match="no longer held by host-a/1.0"):
        first.app_succeeded(job_id, {Path("/out/a.dcm"): DicomOutput("1.1", SEG)}, ["pacs"], owner=A.owner)
    with pytest.raises(LeaseLost):
        first.app_failed(job_id, "exit 1", MAX_ATTEMPTS, 0, owner=A.owner)
    assert first.renew(A.owner) == set()  # what tells A's worker to stop its run
    second.app_succeeded(job_id, {Path("/out/b.dcm"): DicomOutput("2.2", SEG)}, ["pacs"], owner=B.owner)
    assert [o.sop_instance_uid for o in first.outputs(job_id)] == ["2.2"]  # only the holder's result


def test_a_job_whose_lease_expires_on_its_last_attempt_is_kept_as_failed(queues):
    first, second = queues
    [job_id] = jobs_for(first, 1)
    for holder in (A, B):
        first.claim(set(), holder=holder, now=1000.0)
        second.recover(MAX_ATTEMPTS, now=2000.0, stale_before=1500.0)
    job = first.job(job_id)
    assert job.state == FAILED and job.error == "interrupted 2 times (its worker stopped renewing its lease)"
    assert job.lease_owner is None and job.attempt_ended_at == 2000.0


def test_a_sending_job_whose_lease_expires_is_resumed_by_another_worker_without_a_rerun(queues):
    first, second = queues
    [job_id] = jobs_for(first, 1)
    first.claim(set(), holder=A, now=1000.0)
    first.app_succeeded(job_id, {Path("/out/seg.dcm"): DicomOutput("9.9", SEG)}, ["pacs"], owner=A.owner)
    assert second.recover(MAX_ATTEMPTS, now=time.time() + 500, stale_before=time.time() + 400) == []  # not running
    resumed = second.claim(set(), holder=B)
    assert (resumed.state, resumed.attempts, resumed.lease_owner) == (SENDING, 1, B.owner)


def test_two_dispatchers_racing_on_the_same_groups_make_each_groups_jobs_once(queues):
    first, second = queues
    for i in range(15):
        received(first, f"1.{i}.1", f"1.{i}", f"study:{i}")
        received(second, f"1.{i}.2", f"1.{i}.9", f"study:{i}")  # the study's second series came to the other receiver

    def dispatch_all(queue: PostgresJobQueue) -> list[int]:
        ids = []
        for i in range(15):
            ids += queue.dispatch_group(f"study:{i}", 100.0, {"ct": [f"1.{i}", f"1.{i}.9"]}, {}, now=200.0)
        return ids

    by_first, by_second = together(lambda: dispatch_all(first), lambda: dispatch_all(second))
    jobs = first.jobs()
    assert len(by_first) + len(by_second) == len(jobs) == 15  # one job per study, whoever made it
    assert {job.group_key: job.series_uids for job in jobs} == {f"study:{i}": (f"1.{i}", f"1.{i}.9") for i in range(15)}
    assert first.waiting_groups() == {}


def test_a_dispatcher_routing_a_group_that_changed_meanwhile_makes_nothing(queues):
    first, second = queues
    received(first, "1.1.1", "1.1", "study:1")
    routed_from_a_stale_look = {"ct": ["1.1"]}
    received(second, "1.2.1", "1.2", "study:1", at=150.0)  # a second series arrived before the dispatch, up to the cutoff
    assert first.dispatch_group("study:1", 160.0, routed_from_a_stale_look, {}, now=200.0) == []
    [job_id] = first.dispatch_group("study:1", 160.0, {"ct": ["1.1", "1.2"]}, {}, now=200.0)
    assert first.job(job_id).series_uids == ("1.1", "1.2")


def test_one_instance_recorded_by_two_receivers_at_once_is_one_instance(queues):
    first, second = queues
    kinds = together(*(lambda q=q: received(q, "1.1.1", "1.1", "study:1") for q in (first, second, first, second)))
    assert sorted(kinds) == ["new", "resent", "resent", "resent"]
    assert first.instance_count() == 1
    assert first._query("SELECT receive_count FROM instances")[0]["receive_count"] == 4


def test_a_dead_receivers_open_associations_are_killed_once_its_lease_expires(queues):
    first, second = queues
    live = first.association_started("PACS", "127.0.0.1:1", now=1000.0, owner="host-a/11")
    dead = second.association_started("PACS", "127.0.0.1:2", now=1000.0, owner="host-b/22")
    first.associations_alive("host-a/11", now=1100.0)
    assert first.associations_killed(now=1150.0, stale_before=1050.0) == 1
    assert first.association_state(dead) == ("killed", 0) and first.association_state(live) == ("open", 0)


def test_the_queue_reconnects_after_postgresql_restarts(own_postgres: PostgresServer):
    queue = PostgresJobQueue(own_postgres.dsn)
    assert received(queue, "1.1.1", "1.1", "study:1") == "new"
    own_postgres.stop()
    restarted = threading.Timer(3.0, own_postgres.start)  # comes back while the next C-STORE waits
    restarted.start()
    try:
        assert received(queue, "1.1.2", "1.1", "study:1") == "new"  # retried on a new connection
    finally:
        restarted.join()
    assert queue.instance_count() == 2
    queue.close()


def test_a_study_half_received_by_a_receiver_that_died_waits_for_the_resend(queues):
    first, second = queues
    dead = first.association_started("PACS", "127.0.0.1:1", now=1000.0, owner="host-a/11")
    live = second.association_started("PACS", "127.0.0.1:2", now=1000.0, owner="host-b/22")
    received_in = [(first, "1.1.1", dead), (second, "1.1.2", live)]
    for queue, sop, association in received_in:
        queue.record_instance(
            ReceivedInstance(sop, "1.2.840.10008.5.1.4.1.1.2", "1", "1.1", "study:1", Path(f"/d/{sop}"), "PACS", "h", association),
            now=1001.0,
        )
    second.association_ended(live, "released", now=1002.0)
    assert second.waiting_groups()["study:1"].receiving  # host-a's association is open: the study is still coming in
    first.associations_alive("host-a/11", now=1003.0)  # host-a's last sign of life
    assert second.associations_killed(now=1200.0, stale_before=1100.0) == 1
    assert second.waiting_groups()["study:1"] == WaitingGroup(1001.0, cut_off=True)  # waits the cut-off wait
    resend = second.association_started("PACS", "127.0.0.1:3", now=1010.0, owner="host-b/22")  # begun after host-a died
    second.record_instance(
        ReceivedInstance("1.1.3", "1.2.840.10008.5.1.4.1.1.2", "1", "1.1", "study:1", Path("/d/1.1.3"), "PACS", "h", resend), now=1011.0
    )
    second.association_ended(resend, "released", now=1012.0)
    assert second.waiting_groups()["study:1"] == WaitingGroup(1011.0)  # answered: the plain quiet period
