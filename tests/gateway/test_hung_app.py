"""A hung app: killed at its route's ``timeout_s`` with the children it started (one ignores SIGTERM), its attempt
counted, its partial outputs removed and its log kept; the next job runs. Through ``gateway serve``, with
tests/gateway/sleeping_app.py (hangs) and fake_seg_app.py (a real SEG) as app folders."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.runner import group_alive, kill_group
from testkit.gateway_process import GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series
from tests.gateway.fake_seg_app import fake_route

pytestmark = pytest.mark.slow

SLEEPING_APP = Path(__file__).with_name("sleeping_app.py")


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed orphan may stay a zombie where nothing reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pids(path: Path) -> dict[str, int]:
    return {role: int(pid) for role, pid in (line.split() for line in path.read_text().splitlines())} if path.exists() else {}


def test_a_hung_app_is_killed_with_its_children_at_the_timeout_and_the_next_job_runs(tmp_path: Path, gateway_port: int):
    hung = {"name": "hung", "match": {"Modality": "MR"}, "app": str(SLEEPING_APP), "timeout_s": 4,
            "env": {"SLEEPING_APP_PIDS": str(tmp_path / "pids.txt")}}  # fmt: skip
    config = write_config(tmp_path, gateway_port, [hung, fake_route(tmp_path)], max_attempts=1, shutdown_grace_s=1)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    try:
        assert store(gateway_port, ct_series(2, modality="MR")) == [0, 0]
        deadline = time.monotonic() + 60
        while "child" not in pids(tmp_path / "pids.txt") and time.monotonic() < deadline:
            time.sleep(0.2)
        started = pids(tmp_path / "pids.txt")
        assert alive(started["app"]) and alive(started["child"])
        assert store(gateway_port, ct_series(3)) == [0, 0, 0]  # queued behind the hung job (one worker)

        jobs = gateway.wait_for_jobs({"done", "failed"}, count=2, timeout_s=180)
        by_route = {job["route"]: job for job in jobs}
        assert (by_route["hung"]["state"], by_route["hung"]["attempts"]) == ("failed", 1)
        assert by_route["hung"]["error"] == "stopped: timeout after 4 s"
        assert by_route["fake-seg"]["state"] == "done" and len(by_route["fake-seg"]["outputs"]) == 0  # no destinations
        assert not alive(started["app"]) and not alive(started["child"])  # the child that ignored SIGTERM too

        folder = tmp_path / "gateway-data" / "jobs" / f"{by_route['hung']['id']:06d}"
        assert list((folder / "output").iterdir()) == [] and list((folder / "work").iterdir()) == []
        assert "sleeping_app: started, sleeping" in (folder / "attempt-1.log").read_text()
        assert "attempt 1 failed (stopped: timeout after 4 s): failed" in (folder / "job.log").read_text()
        assert (tmp_path / "gateway-data" / "jobs" / f"{by_route['fake-seg']['id']:06d}" / "output" / "seg.dcm").exists()
    finally:
        assert gateway.terminate() == 0


def test_what_is_left_of_a_process_group_after_its_leader_ended_is_killed():
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
         "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); print('ok', flush=True)"],
        start_new_session=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert leader.stdout.readline().strip() == "ok" and leader.wait(30) == 0
    assert group_alive(leader.pid)  # the grandchild is still in the group
    started = time.monotonic()
    kill_group(leader.pid, grace_s=0.5)
    deadline = time.monotonic() + 10
    while group_alive(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(leader.pid) and time.monotonic() - started < 10
