"""The cluster engine (gateway/cluster.py and the roles in gateway/service.py) in one test process: receivers and
workers as separate Gateway objects, each with its own connection, on one real PostgreSQL and one storage folder;
outputs go to a real Orthanc that counts what it receives. (The multi-process runs are test_cluster_load/faults.)"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.cluster import QUEUE, Cluster, queueing_lock
from gateway.config import GatewayConfig, load_config
from gateway.queue import DONE, PENDING, RUNNING, SENDING, Holder
from gateway.runner import job_paths
from gateway.sender import send_files
from gateway.service import ROLES, Gateway
from testkit.cluster import orthanc_destination, receptions
from testkit.gateway_samples import ct_series
from testkit.orthanc import Orthanc, free_port
from tests.gateway.fake_seg_app import fake_route, runs
from tests.gateway.test_dispatch import receive

LEASE_S = 3.0


def cluster_config(tmp_path: Path, dsn: str, orthanc: Orthanc | None = None, **extra: object) -> GatewayConfig:
    config = {
        "ae_title": "GW",
        "port": 1,
        "allowed_calling_aets": ["PACS"],
        "storage_dir": str(tmp_path / "data"),
        "storage_watermark_percent": 100,  # the test machine's disk use is not the test's to assume
        "quiet_period_s": 1,
        "retry_delay_s": 0,
        "routes": [fake_route(tmp_path)],
        "destinations": [orthanc_destination(orthanc)] if orthanc else [],
        "queue": dsn,
        "lease_s": LEASE_S,
        "node_name": "node-1",
        **extra,
    }
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
    return load_config(tmp_path / "gw.yaml")


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 120) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.fixture
def started():
    """Start gateways (roles), and stop every one at the end."""
    gateways: list[Gateway] = []

    def start(config: GatewayConfig, command: str) -> Gateway:
        gateway = Gateway(replace(config, host="127.0.0.1", port=free_port()), ROLES[command])  # a receiver's own port
        gateway.start()
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        gateway.stop()


def test_studies_become_jobs_run_once_by_procrastinate_workers_and_reach_orthanc_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc, started
):
    config = cluster_config(tmp_path, postgres_dsn, counting_orthanc)
    first, second = started(config, "receive"), started(config, "receive")
    workers = [started(config, "worker"), started(config, "worker")]
    for index in range(4):
        series = ct_series(4)
        receive(first if index % 2 else second, series[:2], at=time.time())  # each study split over both receivers
        receive(second if index % 2 else first, series[2:], at=time.time())
    jobs = wait_for(lambda: (j := first.queue.jobs()) and len(j) == 4 and all(job.state == DONE for job in j) and j, "4 jobs done")
    assert [len(first.queue.series_files(job.series_uids)[job.series_uids[0]]) for job in jobs] == [4, 4, 4, 4]
    assert [event for event, _ in runs(tmp_path)].count("start") == 4  # every job's app ran once
    assert {(job.node, job.attempts) for job in jobs} == {("node-1", 1)} and all(job.attempt_ended_at for job in jobs)
    outputs = [output for job in jobs for output in first.queue.outputs(job.id)]
    assert len(outputs) == 4 and all(o.sent_at and o.send_count == 1 for o in outputs)
    assert receptions(counting_orthanc) == {o.sop_instance_uid: 1 for o in outputs}  # each output reached Orthanc once
    assert first.queue._query("SELECT COUNT(*) FROM procrastinate_jobs WHERE status = 'todo'")[0][0] == 0
    assert workers[0].queue.jobs(states=[PENDING, RUNNING, SENDING]) == []


def test_a_task_delivered_twice_runs_the_app_once(tmp_path: Path, postgres_dsn: str, started):
    config = cluster_config(tmp_path, postgres_dsn)
    receiver = started(config, "receive")
    (tmp_path / "hold").touch()  # the app waits while this exists
    receive(receiver, ct_series(2), at=time.time())
    worker = started(config, "worker")
    wait_for(lambda: runs(tmp_path), "the app to start")
    [job] = worker.queue.jobs()
    assert job.state == RUNNING
    worker.run_claimed(job.id, Holder("node-2", "9.0"))  # a second delivery: the job is held, nothing runs
    assert worker.cluster.defer([job.id]) == [job.id]  # a waiting task beside the running one (a sweeper's, a crash's)
    (tmp_path / "hold").unlink()
    wait_for(lambda: worker.queue.job(job.id).state == DONE, "the job to finish")
    wait_for(lambda: not worker.queue._query("SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"), "both tasks done")
    assert [event for event, _ in runs(tmp_path)] == ["start", "finish"]
    assert worker.queue.job(job.id).attempts == 1


def test_a_stopped_worker_hands_its_job_back_and_another_worker_runs_it(tmp_path: Path, postgres_dsn: str, started):
    config = cluster_config(tmp_path, postgres_dsn)
    receiver = started(config, "receive")
    (tmp_path / "hold").touch()
    receive(receiver, ct_series(2), at=time.time())
    stopping = Gateway(replace(config, port=free_port()), ROLES["worker"])
    stopping.start()
    wait_for(lambda: runs(tmp_path), "the app to start")
    [job] = receiver.queue.jobs()
    stopping.stop()  # SIGTERM: the app is stopped, the attempt does not count
    handed_back = receiver.queue.job(job.id)
    assert (handed_back.state, handed_back.attempts, handed_back.lease_owner) == (PENDING, 0, None)
    (tmp_path / "hold").unlink()
    started(config, "worker")
    done = wait_for(lambda: (j := receiver.queue.job(job.id)).state == DONE and j, "another worker to run it")
    assert done.attempts == 1 and [event for event, _ in runs(tmp_path)].count("finish") == 1


def test_a_worker_dying_between_sending_and_recording_gets_its_output_exported_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc, started
):
    config = cluster_config(tmp_path, postgres_dsn, counting_orthanc)
    receiver = started(config, "receive")
    receive(receiver, ct_series(3), at=time.time())
    [job_id] = wait_for(lambda: [j.id for j in receiver.queue.jobs()], "the job")
    dying = Gateway(config, ROLES["worker"])  # not started: it does by hand what a worker does, up to its death
    holder = Holder("node-dead", "1.0")
    job = dying.queue.claim(set(), holder=holder, only=job_id)
    dead = threading.Event()

    def heartbeat() -> None:  # what its sweeper thread does while it lives
        while not dead.wait(0.3):
            dying.queue.renew(holder.owner)

    renewing = threading.Thread(target=heartbeat)
    renewing.start()
    try:
        assert dying._run(job, config.routes[0], holder.owner, dying._stop)  # the app ran, its output is recorded
        [output] = dying.queue.outputs(job_id)
        assert dying.queue.output_sending(job_id, [output.path], "orthanc", holder.owner) == 0
        assert send_files([output.path], config.destinations[0], config.ae_title) == {output.path: None}  # it reached Orthanc...
    finally:
        dead.set()
        renewing.join()
    dying.queue.close()  # ...and the worker died before recording it: its lease is no longer renewed

    started(config, "worker")
    done = wait_for(lambda: (j := receiver.queue.job(job_id)).state == DONE and j, "another worker to resume the job", 60)
    assert done.worker != "1.0" and done.attempts == 1  # resumed, not run again
    assert [event for event, _ in runs(tmp_path)].count("start") == 1
    [sent] = receiver.queue.outputs(job_id)
    assert sent.sop_instance_uid == output.sop_instance_uid and sent.send_count == 1
    assert sent.sent_at >= sent.send_started_at  # the resend's intent was recorded before it
    assert receptions(counting_orthanc) == {output.sop_instance_uid: 2}  # sent twice (the second in doubt)...
    assert counting_orthanc.find("Instance", {"SOPInstanceUID": output.sop_instance_uid}) != []
    assert len(counting_orthanc.request("GET", "/instances")) == 1  # ...and Orthanc holds it once
    assert "in doubt" in (job_paths(config.jobs_dir, job_id).root / "job.log").read_text()


def test_the_sweeper_defers_a_job_that_lost_its_task(tmp_path: Path, postgres_dsn: str):
    config = cluster_config(tmp_path, postgres_dsn)
    receiver = Gateway(config, ROLES["receive"])  # not started: no dispatcher deferring, no worker
    receive(receiver, ct_series(2), at=time.time() - 60)
    [job_id] = receiver.dispatch_ready(time.time())  # made, but never deferred (as if the receiver died right here)
    cluster = Cluster(config.queue, receiver.queue, config.node_name, LEASE_S, config.max_attempts)
    try:
        assert cluster.sweep() == [job_id]
        assert cluster.waiting_tasks() == {queueing_lock(job_id)}
        assert cluster.sweep() == []  # one waiting task per job
        [(queue_name, args)] = [tuple(r) for r in receiver.queue._query("SELECT queue_name, args::text FROM procrastinate_jobs")]
        assert queue_name == QUEUE and args == f'{{"job_id": {job_id}}}'
    finally:
        cluster.stop(5)
        receiver.queue.close()


@pytest.mark.parametrize("command", ["receive", "worker"])
def test_receive_and_worker_refuse_the_sqlite_queue_in_one_line(tmp_path: Path, command: str, capsys):
    config = {"ae_title": "GW", "port": 1, "allowed_calling_aets": ["PACS"], "storage_dir": str(tmp_path), "routes": [fake_route(tmp_path)]}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
    assert main([command, "--config", str(tmp_path / "gw.yaml")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"gateway: error: {command} needs the cluster mode (queue: postgresql://... in ")


def test_receivers_and_workers_carry_on_after_postgresql_restarts(tmp_path: Path, own_postgres, started):
    config = cluster_config(tmp_path, own_postgres.dsn)
    receiver, worker = started(config, "receive"), started(config, "worker")
    receive(receiver, ct_series(2), at=time.time())
    wait_for(lambda: [j for j in worker.queue.jobs() if j.state == DONE], "the first job")
    own_postgres.restart(down_s=3)  # every connection of both roles is cut
    receive(receiver, ct_series(2), at=time.time())  # waits for the server, then records
    jobs = wait_for(lambda: (j := worker.queue.jobs()) and len(j) == 2 and all(job.state == DONE for job in j) and j, "the second job")
    assert [job.attempts for job in jobs] == [1, 1]
    assert [event for event, _ in runs(tmp_path)].count("start") == 2


def test_retry_from_another_host_gets_a_failed_job_run_by_a_worker(tmp_path: Path, postgres_dsn: str, started, capsys):
    config = cluster_config(tmp_path, postgres_dsn)
    receiver = started(config, "receive")
    receive(receiver, ct_series(2), at=time.time())
    [job_id] = wait_for(lambda: [j.id for j in receiver.queue.jobs()], "the job")
    other_host = Holder("node-2", "1.0")
    job = receiver.queue.claim(set(), holder=other_host, only=job_id)
    assert receiver.queue.app_failed(job.id, "exit 1: a fault since fixed", 1, 0, other_host.owner) == "failed"
    assert main(["retry", str(job_id), "--config", str(tmp_path / "gw.yaml")]) == 0  # the command on any host
    assert capsys.readouterr().out == f"job {job_id} is pending again\n"
    started(config, "worker")
    done = wait_for(lambda: (j := receiver.queue.job(job_id)).state == DONE and j, "a worker to run it")
    assert (done.attempts, done.node) == (1, "node-1")
    assert main(["jobs", "--config", str(tmp_path / "gw.yaml")]) == 0
    [_header, line] = capsys.readouterr().out.splitlines()
    assert f"node-1/{os.getpid()}." in line


@pytest.mark.parametrize("command", [["jobs"], ["retry", "1"]])
def test_jobs_and_retry_without_their_postgresql_say_so_in_one_line(tmp_path: Path, command: list[str], capsys):
    port = free_port()  # nothing listens there
    cluster_config(tmp_path, f"postgresql://gateway@127.0.0.1:{port}/gateway")
    started_at = time.monotonic()
    assert main([*command, "--config", str(tmp_path / "gw.yaml")]) == 2
    assert time.monotonic() - started_at < 60  # waited about 10 s for it, not for ever
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"gateway: error: cannot reach the queue database at 127.0.0.1:{port}: ")
