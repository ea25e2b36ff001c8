"""Grouping per study or per series, the quiet period, and start-up recovery of files the database missed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.grouping import group_key
from gateway.queue import PENDING, UNROUTED
from gateway.reception import ReceivedInstance
from gateway.service import Gateway, register_orphan_files
from gateway.storage import TEMP_PREFIX, atomic_write, instance_path, remove_temp_files
from testkit.gateway_samples import ct_series
from tests.gateway.fake_seg_app import fake_route


def make_gateway(tmp_path: Path, grouping: str) -> Gateway:
    config = {
        "ae_title": "GW",
        "port": 1,
        "allowed_calling_aets": ["PACS"],
        "storage_dir": str(tmp_path / "data"),
        "grouping": grouping,
        "quiet_period_s": 10,
        "routes": [fake_route(tmp_path)],
    }
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
    return Gateway(load_config(tmp_path / "gw.yaml"))


def receive(gateway: Gateway, datasets: list, at: float) -> None:
    """What the SCP does for each instance: the file atomically, then the queue."""
    config = gateway.config
    for ds in datasets:
        path = instance_path(config.incoming_dir, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        gateway.queue.record_instance(
            ReceivedInstance(
                ds.SOPInstanceUID,
                ds.SOPClassUID,
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
                group_key(config.grouping, ds.StudyInstanceUID, ds.SeriesInstanceUID),
                path,
                "PACS",
            ),
            now=at,
        )


@pytest.mark.parametrize(("grouping", "jobs_per_study"), [("study", 1), ("series", 2)])
def test_a_group_becomes_jobs_only_after_the_quiet_period(tmp_path: Path, grouping: str, jobs_per_study: int):
    gateway = make_gateway(tmp_path, grouping)
    first = ct_series(2)
    second = ct_series(3, study_uid=first[0].StudyInstanceUID)
    receive(gateway, first, at=1000.0)
    receive(gateway, second, at=1005.0)
    assert gateway.dispatch_ready(now=1012.0) == ([] if grouping == "study" else [1])
    created = gateway.dispatch_ready(now=1015.0)
    jobs = gateway.queue.jobs()
    assert len(jobs) == jobs_per_study and all(job.state == PENDING and job.route == "fake-seg" for job in jobs)
    assert sorted(uid for job in jobs for uid in job.series_uids) == sorted([first[0].SeriesInstanceUID, second[0].SeriesInstanceUID])
    assert created == [1 if grouping == "study" else 2]
    assert gateway.dispatch_ready(now=2000.0) == []  # nothing new arrived: no job twice


def test_unrouted_series_becomes_a_kept_record_not_a_job(tmp_path: Path):
    gateway = make_gateway(tmp_path, "study")
    receive(gateway, ct_series(2, modality="MR"), at=0.0)
    [job_id] = gateway.dispatch_ready(now=100.0)
    job = gateway.queue.job(job_id)
    assert job.state == UNROUTED and "Modality=MR" in job.error
    assert gateway.queue.claim(set()) is None


def test_files_stored_but_not_recorded_before_a_crash_are_recorded_at_start_and_temp_files_removed(tmp_path: Path):
    gateway = make_gateway(tmp_path, "study")
    incoming = gateway.config.incoming_dir
    ds = ct_series(1)[0]
    path = instance_path(incoming, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)  # renamed into place, then the gateway died before the database commit
    (path.parent / f"{TEMP_PREFIX}abc").write_bytes(b"half a file")  # died mid-write: never acknowledged
    assert remove_temp_files(incoming) == 1
    assert register_orphan_files(gateway.config, gateway.queue) == 1
    assert register_orphan_files(gateway.config, gateway.queue) == 0
    [(key, group)] = gateway.queue.waiting_groups().items()
    assert key == f"study:{ds.StudyInstanceUID}" and group.cut_off  # its association never got to the release


def test_atomic_write_replaces_a_file_whole_and_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "a" / "b" / "x.dcm"
    atomic_write(target, b"first")
    atomic_write(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]


def test_after_a_restart_a_group_waits_the_quiet_period_with_the_gateway_up(tmp_path: Path):
    gateway = make_gateway(tmp_path, "study")
    receive(gateway, ct_series(2), at=1000.0)
    gateway.up_since = 5000.0  # the gateway was down from before 1010 until 5000
    assert gateway.dispatch_ready(now=5009.0) == []
    assert gateway.dispatch_ready(now=5010.0) == [1]
