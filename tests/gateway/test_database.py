"""A database written by the gateway's first version opens: its tables gain the new columns and its jobs keep working."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from gateway.config import load_config
from gateway.database import ADDED_COLUMNS, missing_columns
from gateway.queue import DONE
from gateway.reception import ReceivedInstance
from gateway.service import Gateway
from testkit.gateway_process import REPO_ROOT
from testkit.gateway_samples import ct_series, write_series
from tests.gateway.fake_seg_app import fake_route

# The schema of the first version (gateway/queue.py before associations, hashes and supersession), as it was written.
FIRST_VERSION_SCHEMA = """
CREATE TABLE instances (
    sop_instance_uid TEXT PRIMARY KEY, sop_class_uid TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    group_key TEXT NOT NULL, path TEXT NOT NULL, calling_aet TEXT NOT NULL, received_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 1, dispatched INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX instances_waiting ON instances (dispatched, group_key);
CREATE INDEX instances_series ON instances (series_uid);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, group_key TEXT NOT NULL, route TEXT, series_uids TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, send_attempts INTEGER NOT NULL DEFAULT 0, error TEXT, next_try_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL
);
CREATE INDEX jobs_state ON jobs (state, next_try_at);
CREATE TABLE outputs (
    job_id INTEGER NOT NULL REFERENCES jobs (id), path TEXT NOT NULL, sop_instance_uid TEXT NOT NULL, destination TEXT NOT NULL,
    sent_at REAL, send_count INTEGER NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (job_id, path, destination)
);
"""


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({}, list(ADDED_COLUMNS)),
        ({"instances": {"content_sha256", "association_id"}, "jobs": set(), "outputs": set()}, list(ADDED_COLUMNS[2:])),
        ({t: {c for tt, c, _ in ADDED_COLUMNS if tt == t} for t in ("instances", "jobs", "outputs")}, []),
    ],
)
def test_only_the_columns_a_database_lacks_are_added(present: dict[str, set[str]], expected: list):
    assert missing_columns(present) == expected


def real_seg(tmp_path: Path, series: list) -> Path:
    """A SEG made by the fake app (a real highdicom SEG) on ``series``."""
    write_series(series, tmp_path / "seg-input" / "ct")
    (tmp_path / "seg-output").mkdir()
    env = {**os.environ, "HOLOSCAN_INPUT_PATH": str(tmp_path / "seg-input"), "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "seg-output")}
    subprocess.run([sys.executable, fake_route(tmp_path)["app"]], env=env, cwd=REPO_ROOT, check=True, timeout=120)
    return tmp_path / "seg-output" / "seg.dcm"


def first_version_database(path: Path, series: list, seg: Path, incoming: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(FIRST_VERSION_SCHEMA)
    [ds] = series
    db.execute(
        "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, 'PACS', 100.0, 1, 1)",
        (ds.SOPInstanceUID, ds.SOPClassUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, f"study:{ds.StudyInstanceUID}", str(incoming)),
    )
    db.execute(
        "INSERT INTO jobs (group_key, route, series_uids, state, attempts, created_at, updated_at, finished_at) "
        "VALUES (?, 'fake-seg', ?, 'done', 1, 110.0, 120.0, 120.0)",
        (f"study:{ds.StudyInstanceUID}", json.dumps([ds.SeriesInstanceUID])),
    )
    db.execute("INSERT INTO outputs VALUES (1, ?, ?, 'pacs', 121.0, 1, NULL)", (str(seg), dcmread(seg).SOPInstanceUID))
    db.commit()
    db.close()


def test_a_first_version_database_opens_and_a_new_instance_in_its_processed_series_supersedes_its_seg(tmp_path: Path):
    series = ct_series(1)
    [ds] = series
    seg = real_seg(tmp_path, series)
    config_path = tmp_path / "gw.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "ae_title": "GW",
                "port": 1,
                "allowed_calling_aets": ["PACS"],
                "storage_dir": str(tmp_path / "data"),
                "routes": [fake_route(tmp_path)],
            }
        )
    )
    config = load_config(config_path)
    [incoming] = write_series(series, config.incoming_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID)
    first_version_database(config.database, series, seg, incoming)

    gateway = Gateway(config)
    assert gateway.queue.migrated == [f"{table}.{column}" for table, column, _ in ADDED_COLUMNS]
    [old] = gateway.queue.jobs()
    assert (old.state, old.supersedes_job_id, old.result_series_uid) == (DONE, None, None)
    [output] = gateway.queue.outputs(old.id)
    assert (output.sop_class_uid, output.series_uid) == (None, None)

    [more] = ct_series(1)
    more.StudyInstanceUID, more.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    key = f"study:{ds.StudyInstanceUID}"
    instance = ReceivedInstance(
        more.SOPInstanceUID, more.SOPClassUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, key, incoming, "PACS", "h"
    )
    assert gateway.queue.record_instance(instance, now=200.0) == "new"
    [rerun_id] = gateway.dispatch_ready(now=1000.0)
    rerun = gateway.queue.claim(set())
    earlier = gateway.earlier_result(rerun)  # the old output's SOP class and series are read from its file
    seg_ds = dcmread(seg)
    assert (earlier.job_id, earlier.sop_instance_uid, earlier.series_uid) == (old.id, seg_ds.SOPInstanceUID, seg_ds.SeriesInstanceUID)
    gateway.queue.close()
    assert Gateway(config).queue.migrated == []  # a second opening has nothing to add
    assert rerun_id == 2
