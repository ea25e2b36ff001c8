"""/healthz and /metrics: scraped with urllib from ``gateway serve`` after real C-STOREs and a real job run (the fake SEG
app, a destination nobody listens on), parsed with prometheus_client's own text parser."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from gateway.health import health_report, scp_problem, storage_write_problem, thread_problem
from gateway.metrics import app_outcome, jobs_by_state
from gateway.resources import disk_usage
from testkit.gateway_process import GATEWAY_AET, SCU_AET, GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series
from testkit.orthanc import free_port
from tests.gateway.fake_seg_app import fake_route


@pytest.mark.parametrize(
    ("checks", "status", "failing"),
    [
        ({"scp": None, "worker-0": None, "storage": None}, 200, None),
        ({"scp": None, "worker-0": "not running", "storage": None}, 503, ["worker-0"]),
        ({"scp": "not listening", "storage": "storage 90.0 % used: above the 75 % watermark"}, 503, ["scp", "storage"]),
    ],
)
def test_health_is_503_naming_every_failing_check(checks: dict, status: int, failing: list[str] | None):
    code, body = health_report(checks)
    assert code == status and body.get("failing") == failing
    assert body["status"] == ("ok" if failing is None else "unhealthy")
    assert body["checks"] == {name: problem or "ok" for name, problem in checks.items()}


def test_a_thread_that_ended_and_a_server_that_never_started_are_named():
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    assert thread_problem(done) == "not running" and thread_problem(None) == "not running"
    assert scp_problem(None) == "not listening"


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "success"),
        ("stopped: timeout after 4 s", "timeout"),
        ("stopped: gateway shutdown", "stopped"),
        ("exit 2: spleen_seg_app: error: no CT series", "failure"),
        ("incomplete output set: no summary.json in /x", "failure"),
    ],
)
def test_app_run_outcomes(error: str | None, outcome: str):
    assert app_outcome(error) == outcome


def test_jobs_by_state_lists_every_state():
    assert jobs_by_state(["done", "failed", "done"], ("pending", "done", "failed")) == {"pending": 0, "done": 2, "failed": 1}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for_metric(url: str, key: tuple, value: float, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = samples(get(url)[1])
        if found.get(key) == value:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{key} did not reach {value}: {found.get(key)}")


@pytest.mark.slow
def test_metrics_and_health_after_real_c_stores_and_a_job_whose_export_fails(tmp_path: Path, gateway_port: int):
    http_port = free_port()
    nowhere = {"name": "nowhere", "type": "dicom", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port(), "timeout_s": 5}
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], [nowhere], http_port=http_port, max_send_attempts=1)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    base = f"http://127.0.0.1:{http_port}"
    try:
        status, body = get(f"{base}/healthz")
        assert status == 200, body
        health = json.loads(body)
        assert health["status"] == "ok" and health["checks"] == {"scp": "ok", "dispatcher": "ok", "worker-0": "ok", "storage": "ok"}

        assert store(gateway_port, ct_series(3)) == [0, 0, 0]
        [job] = gateway.wait_for_jobs({"done", "failed"})
        assert job["state"] == "failed" and "nowhere" in job["error"]
        found = samples(get(f"{base}/metrics")[1])
        assert found[("gateway_instances_received_total", (("calling_aet", SCU_AET),))] == 3
        assert found[("gateway_jobs", (("state", "failed"),))] == 1
        assert all(found[("gateway_jobs", (("state", s),))] == 0 for s in ("pending", "running", "sending", "done", "unrouted"))
        run = (("outcome", "success"), ("route", "fake-seg"))
        assert found[("gateway_app_run_seconds_count", run)] == 1
        assert 0 < found[("gateway_app_run_seconds_sum", run)] < 120
        assert found[("gateway_export_failures_total", (("destination", "nowhere"),))] == 1
        usage = disk_usage(tmp_path)
        assert found[("gateway_storage_total_bytes", ())] == usage.total_bytes
        assert abs(found[("gateway_storage_used_ratio", ())] - usage.used_percent / 100) < 0.01
        assert get(f"{base}/nothing")[0] == 404
        assert gateway.jobs()[0]["id"] == job["id"]  # `gateway jobs` still answers beside the endpoint
    finally:
        assert gateway.terminate() == 0


@pytest.mark.slow
def test_health_is_503_naming_the_storage_above_its_watermark_and_refusals_are_counted(tmp_path: Path, gateway_port: int):
    http_port = free_port()
    full = disk_usage(tmp_path).available_bytes + 10**15
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], http_port=http_port, storage_min_free_bytes=full)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    base = f"http://127.0.0.1:{http_port}"
    try:
        status, body = get(f"{base}/healthz")
        health = json.loads(body)
        assert status == 503 and health["status"] == "unhealthy" and health["failing"] == ["storage"]
        assert "below min_free_bytes" in health["checks"]["storage"] and health["checks"]["worker-0"] == "ok"
        before = samples(get(f"{base}/metrics")[1])[("gateway_associations_refused_total", ())]
        ae = AE(ae_title=SCU_AET)
        ae.add_requested_context(CTImageStorage)
        assert ae.associate("127.0.0.1", gateway_port, ae_title=GATEWAY_AET).is_rejected
        wait_for_metric(f"{base}/metrics", ("gateway_associations_refused_total", ()), before + 1)
    finally:
        assert gateway.terminate() == 0


def test_a_storage_folder_that_cannot_be_written_is_named(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        assert storage_write_problem(folder) == f"{folder} is not writable: Read-only file system"
        assert storage_write_problem(tmp_path) is None and [p.name for p in tmp_path.iterdir()] == ["ro"]  # nothing left behind
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_cluster_roles_keep_the_watermark_and_serve_health(tmp_path: Path, postgres_dsn: str):
    """A cluster receiver above its watermark refuses associations and says so on /healthz; a worker's /healthz checks
    its own threads and no SCP (it listens for none)."""
    from gateway.service import ROLES, Gateway
    from tests.gateway.test_cluster_engine import cluster_config

    receive_port, receive_http, worker_http = free_port(), free_port(), free_port()
    full = disk_usage(tmp_path).available_bytes + 10**15
    for role in ("r", "w"):
        (tmp_path / role).mkdir()
    receiver = Gateway(
        cluster_config(tmp_path / "r", postgres_dsn, port=receive_port, http_port=receive_http, storage_min_free_bytes=full),
        ROLES["receive"],
    )
    worker = Gateway(cluster_config(tmp_path / "w", postgres_dsn, http_port=worker_http), ROLES["worker"])
    receiver.start()
    worker.start()
    try:
        status, body = get(f"http://127.0.0.1:{receive_http}/healthz")
        health = json.loads(body)
        assert status == 503 and health["failing"] == ["storage"] and health["checks"]["scp"] == "ok"
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage)
        assert ae.associate("127.0.0.1", receive_port, ae_title="GW").is_rejected
        status, body = get(f"http://127.0.0.1:{worker_http}/healthz")
        health = json.loads(body)
        assert status == 200, health
        assert "scp" not in health["checks"] and "procrastinate-worker" in health["checks"]
    finally:
        worker.stop()
        receiver.stop()
