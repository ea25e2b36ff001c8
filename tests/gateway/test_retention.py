"""The retention cleaner: done jobs and their received files go after completed_days, failed and unrouted ones after the
longer failed_days unless retried; periodically in ``gateway serve`` and once by ``gateway clean [--dry-run]``. The jobs
are real (``gateway serve`` with the fake SEG app); a later ``now`` stands for the days passing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import ConfigError, Retention, load_config, parse_retention
from gateway.jobs import Job
from gateway.queue import JobQueue
from gateway.retention import DAY_S, CleanReport, clean, cutoffs, expired_jobs, released_series
from testkit.gateway_process import REPO_ROOT, GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series
from tests.gateway.fake_seg_app import fake_route

NOW = 1_000 * DAY_S


def job(job_id: int, state: str, finished_days_ago: float | None, series: tuple[str, ...] = ("1.2",)) -> Job:
    finished = None if finished_days_ago is None else NOW - finished_days_ago * DAY_S
    return Job(job_id, "study:1", "r", series, state, 1, 0, None, 0, 0, 0, finished)


@pytest.mark.parametrize(
    ("state", "finished_days_ago", "expired"),
    [
        ("done", 8, True),
        ("done", 6, False),
        ("failed", 8, False),  # kept for the longer limit
        ("failed", 31, True),
        ("unrouted", 31, True),
        ("unrouted", 29, False),
        ("pending", 400, False),  # a retried job is never removed
        ("running", 400, False),
        ("sending", 400, False),
        ("done", None, False),
    ],
)
def test_which_jobs_expire(state: str, finished_days_ago: float | None, expired: bool):
    candidates = [job(1, state, finished_days_ago)]
    assert expired_jobs(candidates, cutoffs(Retention(7, 30), NOW)) == (candidates if expired else [])


def test_a_series_goes_only_with_the_last_job_that_holds_it():
    old, rerun = job(1, "done", 10, ("1.2", "1.3")), job(2, "done", 1, ("1.3",))
    assert released_series([old, rerun], [old]) == {"1.2"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ({"completed_days": 7}, Retention(7, 7, 3600)),
        ({"completed_days": 7, "failed_days": 30, "interval_s": 60}, Retention(7, 30, 60)),
    ],
)
def test_retention_is_off_unless_configured(raw: dict | None, expected: Retention | None):
    assert parse_retention(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"failed_days": 30}, "retention: missing 'completed_days'"),
        ({"completed_days": 30, "failed_days": 7}, "retention.failed_days: must be at least completed_days (30), got 7"),
        ({"completed_days": -1}, "retention.completed_days: must be positive, got -1"),
        ([7], "retention: expected a mapping with completed_days and failed_days"),
    ],
)
def test_a_bad_retention_setting_is_named(raw: object, message: str):
    with pytest.raises(ConfigError) as error:
        parse_retention(raw)
    assert str(error.value) == message


def gateway_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def series_folder(storage: Path, series: list) -> Path:
    return storage / "incoming" / str(series[0].StudyInstanceUID) / str(series[0].SeriesInstanceUID)


@pytest.mark.slow
def test_clean_removes_done_jobs_then_failed_and_unrouted_ones_and_spares_a_retried_one(tmp_path: Path, gateway_port: int):
    failing = fake_route(tmp_path, FAKE_APP_FAIL="no usable series") | {"name": "failing", "match": {"Modality": "MR"}}
    retention = {"completed_days": 7, "failed_days": 30}
    config_path = write_config(tmp_path, gateway_port, [fake_route(tmp_path), failing], max_attempts=1, retention=retention)
    storage = tmp_path / "gateway-data"
    ct, mr_retried, mr_expiring, other = ct_series(3), ct_series(2, modality="MR"), ct_series(2, modality="MR"), ct_series(1, modality="OT")
    gateway = GatewayProcess(config_path, gateway_port, tmp_path / "gateway.log").start()
    try:
        for series in (ct, mr_retried, mr_expiring, other):
            assert set(store(gateway_port, series)) == {0}
        jobs = gateway.wait_for_jobs({"done", "failed", "unrouted"}, count=4)
    finally:
        assert gateway.terminate() == 0
    ids = {job["series_uids"][0]: job["id"] for job in jobs}
    done_id, retried_id, expiring_id, unrouted_id = (ids[str(s[0].SeriesInstanceUID)] for s in (ct, mr_retried, mr_expiring, other))

    result = gateway_cli(config_path, "clean", "--dry-run")
    assert (result.returncode, result.stdout) == (0, "retention would remove 0 jobs (none) and 0 received files of 0 series\n")

    config = load_config(config_path)
    queue = JobQueue(config.database)
    try:
        later = time.time() + 10 * DAY_S
        assert clean(config, queue, later, dry_run=True) == CleanReport((done_id,), 1, 3, dry_run=True)
        assert (storage / "jobs" / f"{done_id:06d}").is_dir() and len(list(series_folder(storage, ct).iterdir())) == 3

        assert clean(config, queue, later) == CleanReport((done_id,), 1, 3)
        assert not (storage / "jobs" / f"{done_id:06d}").exists() and not series_folder(storage, ct).parent.exists()
        assert queue.series_files([str(ct[0].SeriesInstanceUID)]) == {str(ct[0].SeriesInstanceUID): []}
        assert sorted(job.id for job in queue.jobs()) == sorted([retried_id, expiring_id, unrouted_id])  # ids follow dispatch order
        assert all(series_folder(storage, s).is_dir() for s in (mr_retried, mr_expiring, other))
    finally:
        queue.close()

    assert gateway_cli(config_path, "retry", str(retried_id)).returncode == 0
    queue = JobQueue(config.database)
    try:
        assert clean(config, queue, time.time() + 40 * DAY_S) == CleanReport(tuple(sorted((expiring_id, unrouted_id))), 2, 3)
        [kept] = queue.jobs()
        assert (kept.id, kept.state) == (retried_id, "pending")
        assert len(list(series_folder(storage, mr_retried).iterdir())) == 2
        assert not series_folder(storage, mr_expiring).exists() and not series_folder(storage, other).exists()
    finally:
        queue.close()
    listed = [job["id"] for job in gateway.jobs()]
    assert listed == [retried_id]  # `gateway jobs` agrees


def test_clean_without_retention_configured_is_exit_2(tmp_path: Path, gateway_port: int):
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)])
    result = gateway_cli(config, "clean")
    assert result.returncode == 2
    assert result.stderr == (
        f"gateway: error: retention is not configured in {config} (give retention: {{completed_days: N, failed_days: M}})\n"
    )


@pytest.mark.slow
def test_serve_cleans_periodically_and_a_resent_study_is_then_new(tmp_path: Path, gateway_port: int):
    retention = {"completed_days": 3 / DAY_S, "failed_days": 1, "interval_s": 1}  # 3 s
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], retention=retention)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(2)
    try:
        assert store(gateway_port, series) == [0, 0]
        [first] = gateway.wait_for_jobs({"done"})
        deadline = time.monotonic() + 60
        while gateway.jobs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert gateway.jobs() == []
        assert not series_folder(tmp_path / "gateway-data", series).exists()
        assert f"retention removed 1 jobs ({first['id']}) and 2 received files of 1 series" in gateway.log_text()

        assert store(gateway_port, series) == [0, 0]  # the same instances: new to the gateway now
        [again] = gateway.wait_for_jobs({"done"})
        assert again["id"] > first["id"] and again["supersedes_job_id"] is None
    finally:
        assert gateway.terminate() == 0
