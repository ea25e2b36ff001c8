"""Crashes in the cluster (separate receiver and worker processes, one PostgreSQL queue, one storage folder):
a worker SIGKILLed mid-job has its job re-run by another worker after the lease, once; a receiver SIGKILLed
mid-association loses nothing, the sender resends what was not acknowledged (to the other receiver) and it is
stored once; PostgreSQL restarted while jobs run and instances arrive: every role reconnects, nothing is lost or
run twice; `gateway retry` from another host's configuration puts a failed job back to a worker. Every output
reaches Orthanc once (Orthanc's log of every C-STORE it received, duplicates included).
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from testkit.cluster import (
    Cluster,
    cluster,
    gateway_command,
    orthanc_destination,
    outputs_by_destination,
    receptions,
    split_studies,
    study_of,
)
from testkit.gateway_samples import ct_series
from testkit.load import LoadResult, send_concurrently, stored_uids
from testkit.orthanc import Orthanc
from testkit.postgres import PostgresServer
from tests.gateway.fake_seg_app import fake_route, runs
from tests.gateway.test_faults import alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def assert_each_output_in_orthanc_once(jobs: list[dict], orthanc: Orthanc) -> None:
    exported = outputs_by_destination(jobs)
    assert set(exported.values()) == {1}
    assert receptions(orthanc) == Counter({uid: 1 for _, uid in exported})


def referenced_uids(orthanc: Orthanc, sop_uid: str) -> set[str]:
    [instance] = orthanc.find("Instance", {"SOPInstanceUID": sop_uid})
    [series] = dcmread(io.BytesIO(orthanc.instance_file(instance))).ReferencedSeriesSequence
    return {str(r.ReferencedSOPInstanceUID) for r in series.ReferencedInstanceSequence}


def test_worker_killed_mid_job_has_its_job_rerun_by_another_worker_after_the_lease_and_its_seg_sent_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc
):
    nodes = cluster(
        tmp_path,
        postgres_dsn,
        [fake_route(tmp_path)],
        [orthanc_destination(counting_orthanc)],
        receivers=1,
        workers=3,
        quiet_period_s=1,
        lease_s=4,
    ).start()
    try:
        (tmp_path / "hold").touch()
        studies = [ct_series(4) for _ in range(3)]
        send_concurrently(nodes.ports, studies)
        nodes.wait_until(lambda: len(runs(tmp_path)) == 3, "three held app runs, one per worker", 120)
        running = nodes.wait_for(lambda jobs: len(jobs) == 3 and all(j["node"] for j in jobs), "three running jobs with their nodes")
        assert sorted(j["node"] for j in running) == ["worker-1", "worker-2", "worker-3"]  # one each: jobs are claimed once
        victim_job = running[0]
        [victim] = [w for w in nodes.workers if w.log.parent.name == victim_job["node"]]
        [(_, app_pid)] = [(e, pid) for e, pid in runs(tmp_path) if nodes.owner(pid) is victim]
        nodes.kill(victim)  # SIGKILL: no hand-back, no more heartbeats
        nodes.wait_until(lambda: not alive(app_pid), "the app to die with its worker", 30)
        (tmp_path / "hold").unlink()
        jobs = nodes.wait_for_studies({str(s[0].StudyInstanceUID) for s in studies}, timeout_s=300)
    finally:
        stopped = nodes.stop()
    assert set(stopped.values()) == {0}, stopped
    assert {(j["state"], j["error"]) for j in jobs} == {("done", None)}
    by_id = {j["id"]: j for j in jobs}
    rerun = by_id[victim_job["id"]]
    assert rerun["attempts"] == 2 and rerun["node"] in {"worker-2", "worker-3", "worker-1"} - {victim_job["node"]}
    assert sorted(j["attempts"] for j in jobs) == [1, 1, 2]
    assert Counter(event for event, _ in runs(tmp_path)) == {"start": 4, "finish": 3}
    assert_each_output_in_orthanc_once(jobs, counting_orthanc)


def test_receiver_killed_mid_association_loses_nothing_and_the_resent_instances_are_stored_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc
):
    nodes = cluster(
        tmp_path,
        postgres_dsn,
        [fake_route(tmp_path)],
        [orthanc_destination(counting_orthanc)],
        receivers=2,
        workers=1,
        quiet_period_s=2,
        cut_off_wait_s=30,
        lease_s=5,  # a receiver that stopped renewing its associations for 5 s is dead: they count as cut off
    ).start()
    [series] = [ct_series(600)]  # one study, its even slices to receiver 1 and its odd slices to receiver 2, together
    batches = [series[0::2], series[1::2]]
    first: list[LoadResult] = []
    sender = threading.Thread(target=lambda: first.append(send_concurrently(nodes.ports, batches)))
    try:
        sender.start()
        nodes.wait_until(lambda: len(stored_uids(nodes.storage_dir)) >= 100, "part of the study to be stored", 120)
        nodes.kill(nodes.receivers[0])  # SIGKILL mid-association
        sender.join(120)
        [result] = first
        assert 0 < len(result.unacknowledged_uids) < len(batches[0]), "the receiver must die mid-association"
        assert set(result.unacknowledged_uids) <= {str(ds.SOPInstanceUID) for ds in batches[0]}
        resend = [ds for ds in series if str(ds.SOPInstanceUID) in set(result.unacknowledged_uids)]
        again = send_concurrently([nodes.ports[1]], [resend])  # the sender resends to the receiver still up
        assert again.failed_statuses == []
        [job] = nodes.wait_for_studies({str(series[0].StudyInstanceUID)}, timeout_s=300)
    finally:
        stopped = nodes.stop()
    assert set(stopped.values()) == {0}, stopped
    on_disk = Counter(stored_uids(nodes.storage_dir))
    assert set(on_disk) == {str(ds.SOPInstanceUID) for ds in series} and set(on_disk.values()) == {1}
    assert (job["state"], job["attempts"]) == ("done", 1)
    assert Counter(event for event, _ in runs(tmp_path)) == {"start": 1, "finish": 1}
    assert_each_output_in_orthanc_once([job], counting_orthanc)
    assert referenced_uids(counting_orthanc, job["outputs"][0]["sop_instance_uid"]) == {str(ds.SOPInstanceUID) for ds in series}


def send_until_acknowledged(nodes: Cluster, batches: list, rounds: int = 5) -> int:
    """Send, then resend whatever was not acknowledged until everything is (as a PACS retries); the rounds it took."""
    pending = batches
    left: set[str] = set()
    for attempt in range(1, rounds + 1):
        try:
            result = send_concurrently(nodes.ports, pending)
        except AssertionError:  # no association (a receiver refused while its database was away): send it all again
            time.sleep(1)
            continue
        left = set(result.unacknowledged_uids)
        if not left:
            return attempt
        pending = [[ds for ds in batch if str(ds.SOPInstanceUID) in left] for batch in pending]
        pending = [batch for batch in pending if batch]
        time.sleep(1)
    raise AssertionError(f"instances still unacknowledged after {rounds} rounds ({len(left)} in the last one that associated)")


def test_postgresql_restarted_while_jobs_run_and_instances_arrive_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, own_postgres: PostgresServer, counting_orthanc: Orthanc
):
    nodes = cluster(
        tmp_path,
        own_postgres.dsn,
        [fake_route(tmp_path)],
        [orthanc_destination(counting_orthanc)],
        receivers=2,
        workers=2,
        quiet_period_s=2,
        lease_s=30,
    ).start()
    (tmp_path / "hold").touch()
    early = [ct_series(4) for _ in range(2)]
    late, late_studies = split_studies(4, 150, 4)
    try:
        assert send_concurrently(nodes.ports, early).failed_statuses == []
        nodes.wait_until(lambda: len(runs(tmp_path)) == 2, "both workers running a held job", 120)
        rounds: list[int] = []
        sender = threading.Thread(target=lambda: rounds.append(send_until_acknowledged(nodes, late)))
        sender.start()
        nodes.wait_until(lambda: len(stored_uids(nodes.storage_dir)) >= 8 + 100, "the late studies to be arriving", 120)
        own_postgres.restart(down_s=3)  # every connection of every role is cut; the server is away 3 s
        assert sender.is_alive(), "PostgreSQL must be restarted while the late studies are still arriving"
        sender.join(300)
        assert rounds, "the sender did not finish"
        (tmp_path / "hold").unlink()
        studies = {str(s[0].StudyInstanceUID) for s in early} | set(late_studies)
        jobs = nodes.wait_for_studies(studies, timeout_s=300)
        assert nodes.dead() == []  # every role rode out the outage
    finally:
        stopped = nodes.stop()
    assert set(stopped.values()) == {0}, stopped
    assert sorted(study_of(j) for j in jobs) == sorted(studies)
    assert {(j["state"], j["attempts"]) for j in jobs} == {("done", 1)}, jobs
    assert Counter(event for event, _ in runs(tmp_path)) == {"start": 6, "finish": 6}
    on_disk = Counter(stored_uids(nodes.storage_dir))
    sent = {str(ds.SOPInstanceUID) for batch in early + late for ds in batch}
    assert set(on_disk) == sent and set(on_disk.values()) == {1}
    assert_each_output_in_orthanc_once(jobs, counting_orthanc)
    for job in jobs:
        study = study_of(job)
        if study in late_studies:
            assert referenced_uids(counting_orthanc, job["outputs"][0]["sop_instance_uid"]) == {
                str(ds.SOPInstanceUID) for ds in late_studies[study]
            }


def test_retry_with_another_hosts_config_gives_a_failed_job_back_to_the_workers(tmp_path: Path, postgres_dsn: str):
    route = fake_route(tmp_path, FAKE_APP_FAIL="no CT series with at least 16 slices")
    nodes = cluster(tmp_path, postgres_dsn, [route], receivers=1, workers=2, quiet_period_s=1, max_attempts=1).start()
    try:
        send_concurrently(nodes.ports, [ct_series(3)])
        [job] = nodes.wait_for(lambda jobs: [j["state"] for j in jobs] == ["failed"], "the job to fail")
        retried = gateway_command(nodes.workers[1].config, "retry", str(job["id"]))  # an operator on worker-2's host
        assert (retried.returncode, retried.stdout) == (0, f"job {job['id']} is pending again\n"), retried.stderr
        nodes.wait_until(lambda: len(runs(tmp_path)) == 2, "the retried job to run again", 120)
        [again] = nodes.wait_for(lambda jobs: [j["state"] for j in jobs] == ["failed"], "the retried job to fail again")
    finally:
        stopped = nodes.stop()
    assert set(stopped.values()) == {0}, stopped
    assert (again["id"], again["attempts"], again["error"]) == (
        job["id"],
        1,
        "exit 2: fake_seg_app: error: no CT series with at least 16 slices",
    )
    assert [event for event, _ in runs(tmp_path)] == ["start", "start"]
