"""Crashes, shutdowns and failing apps: each job completes exactly once, and its result reaches the PACS once.

The app here is tests/gateway/fake_seg_app.py (a real DICOM SEG in about a second), run as the
gateway runs an app folder; the real apps' PACS round trips are in test_pacs_round_trip.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from testkit.gateway_process import GATEWAY_AET, REPO_ROOT, GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series, write_series
from testkit.orthanc import Orthanc, free_port
from tests.gateway.fake_seg_app import fake_route, runs

pytestmark = pytest.mark.slow  # each starts the gateway and runs an app (5-15 s)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def segs_in_orthanc(orthanc: Orthanc, study_uid: str) -> list[str]:
    series = orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"})
    return [instance for s in series for instance in orthanc.series_instances(s)]


def test_gateway_killed_mid_job_reruns_it_once_and_the_seg_reaches_orthanc_once(tmp_path: Path, gateway_port: int, orthanc: Orthanc):
    orthanc.add_modality("gateway", GATEWAY_AET, gateway_port)
    destination = {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], [destination])
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(4)
    study_uid, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    uploaded = orthanc.upload(write_series(series, tmp_path / "ct"))
    (tmp_path / "hold").touch()
    orthanc.store_to("gateway", [uploaded[0]["ParentSeries"]])  # Orthanc sends the series to the gateway by C-STORE

    wait_until(lambda: runs(tmp_path), 30, "the app to start")
    [(_, first_pid)] = runs(tmp_path)
    gateway.kill()  # SIGKILL: no chance to clean up
    wait_until(lambda: not alive(first_pid), 10, "the app to die with the gateway")
    [job] = gateway.jobs()
    assert (job["state"], job["attempts"]) == ("running", 1)

    (tmp_path / "hold").unlink()
    gateway.start()
    [job] = gateway.wait_for_jobs({"done", "failed"})
    assert (job["state"], job["attempts"], job["error"]) == ("done", 2, None)
    assert [event for event, _ in runs(tmp_path)] == ["start", "start", "finish"]
    assert [(o["destination"], o["sent_at"] is not None, o["send_count"]) for o in job["outputs"]] == [("orthanc", True, 1)]
    assert "Job 1 was interrupted while running (attempt 1): now pending" in gateway.log_text()

    gateway.terminate()
    gateway.start()  # a finished job never runs again
    time.sleep(3)
    assert [event for event, _ in runs(tmp_path)] == ["start", "start", "finish"]
    assert [j["state"] for j in gateway.jobs()] == ["done"]
    assert gateway.terminate() == 0

    [seg_id] = segs_in_orthanc(orthanc, study_uid)
    seg = dcmread(io.BytesIO(orthanc.instance_file(seg_id)))
    assert seg.SOPInstanceUID == job["outputs"][0]["sop_instance_uid"]
    assert [item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence] == [series_uid]


def test_sigterm_stops_the_running_app_and_the_job_runs_after_restart_without_using_an_attempt(tmp_path: Path, gateway_port: int):
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], max_attempts=1)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    (tmp_path / "hold").touch()
    assert store(gateway_port, ct_series(3)) == [0, 0, 0]
    wait_until(lambda: runs(tmp_path), 30, "the app to start")
    began = time.monotonic()
    assert gateway.terminate() == 0
    assert time.monotonic() - began < 15
    [(_, pid)] = runs(tmp_path)
    assert not alive(pid)
    [job] = gateway.jobs()
    assert (job["state"], job["attempts"]) == ("pending", 0)
    (tmp_path / "hold").unlink()
    gateway.start()
    [job] = gateway.wait_for_jobs({"done", "failed"})
    assert (job["state"], job["attempts"]) == ("done", 1)
    assert gateway.terminate() == 0


def test_failing_app_is_retried_then_kept_failed_with_its_error_inputs_and_logs(tmp_path: Path, gateway_port: int):
    route = fake_route(tmp_path, FAKE_APP_FAIL="no CT series with at least 16 slices")
    config = write_config(tmp_path, gateway_port, [route], max_attempts=2)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(3)
    assert store(gateway_port, series) == [0, 0, 0]
    jobs = gateway.wait_for_jobs({"failed"})
    assert gateway.terminate() == 0
    [job] = jobs
    assert (job["state"], job["attempts"]) == ("failed", 2)
    assert job["error"] == "exit 2: fake_seg_app: error: no CT series with at least 16 slices"
    job_dir = tmp_path / "gateway-data" / "jobs" / f"{job['id']:06d}"
    assert sorted(p.name for p in (job_dir / "input").rglob("*.dcm")) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in series)
    assert (job_dir / "attempt-1.log").exists() and (job_dir / "attempt-2.log").exists()
    assert "attempt 2 failed" in (job_dir / "job.log").read_text()
    assert len(list((tmp_path / "gateway-data" / "incoming").rglob("*.dcm"))) == 3
    assert [event for event, _ in runs(tmp_path)] == ["start", "start"]


def test_series_no_route_takes_is_logged_and_kept_while_the_routed_series_of_its_study_runs(tmp_path: Path, gateway_port: int):
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)])
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    ct = ct_series(3)
    mr = ct_series(2, study_uid=ct[0].StudyInstanceUID, modality="MR")
    assert store(gateway_port, ct + mr) == [0] * 5
    jobs = gateway.wait_for_jobs({"done", "failed", "unrouted"}, count=2)
    assert gateway.terminate() == 0
    assert sorted((j["state"], j["route"], tuple(j["series_uids"])) for j in jobs) == sorted(
        [("done", "fake-seg", (ct[0].SeriesInstanceUID,)), ("unrouted", None, (mr[0].SeriesInstanceUID,))]
    )
    [unrouted] = [j for j in jobs if j["state"] == "unrouted"]
    assert "Modality=MR" in unrouted["error"] and "Modality=MR" in gateway.log_text()
    kept = tmp_path / "gateway-data" / "incoming" / ct[0].StudyInstanceUID / mr[0].SeriesInstanceUID
    assert sorted(p.name for p in kept.glob("*.dcm")) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in mr)


def test_unreachable_destination_keeps_the_outputs_unsent_and_retry_resends_without_rerunning_the_app(
    tmp_path: Path, gateway_port: int, orthanc: Orthanc
):
    closed_port = free_port()
    destination = {"name": "pacs", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": closed_port, "timeout_s": 5}
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], [destination], max_send_attempts=2)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(3)
    assert store(gateway_port, series) == [0, 0, 0]
    [job] = gateway.wait_for_jobs({"failed", "done"})
    assert gateway.terminate() == 0
    assert (job["state"], job["attempts"], job["send_attempts"]) == ("failed", 1, 2)
    assert "pacs: seg.dcm: no association" in job["error"]
    [output] = job["outputs"]
    assert output["sent_at"] is None and Path(output["path"]).exists()

    # the PACS is back (the operator fixes the destination), and the job is retried by hand
    config.write_text(config.read_text().replace(f"port: {closed_port}", f"port: {orthanc.dicom_port}"))
    retried = subprocess.run(
        [sys.executable, "-m", "gateway", "retry", str(job["id"]), "--config", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert retried.returncode == 0 and retried.stdout == f"job {job['id']} is sending again\n"
    gateway.start()
    [job] = gateway.wait_for_jobs({"failed", "done"})
    assert gateway.terminate() == 0
    assert job["state"] == "done" and [event for event, _ in runs(tmp_path)] == ["start", "finish"]
    assert len(segs_in_orthanc(orthanc, series[0].StudyInstanceUID)) == 1
