"""The cluster under load: two receivers and three workers as separate processes on one PostgreSQL queue and one
storage folder; 2,000 instances of 20 studies over 8 concurrent associations, every study dealt slice by slice over
all 8 (so each study reaches both receivers). Every instance is stored once, every study becomes exactly one job
holding all its slices, every job runs once (the stand-in app's run log) and every output reaches Orthanc once
(Orthanc's own log of every C-STORE it received, duplicates included).

About 1-2 minutes on 2 loaded cores (the stand-in app is tests/gateway/fake_seg_app.py).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from testkit.cluster import cluster, orthanc_destination, outputs_by_destination, receptions, split_studies, study_of
from testkit.load import send_concurrently, stored_uids
from testkit.orthanc import Orthanc
from tests.gateway.fake_seg_app import fake_route, runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
logger = logging.getLogger(__name__)

STUDIES, SLICES, ASSOCIATIONS = 20, 100, 8  # 2,000 instances


def test_2000_instances_over_8_associations_to_2_receivers_give_one_job_per_study_run_once_by_3_workers_and_each_seg_in_orthanc_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc
):
    nodes = cluster(
        tmp_path, postgres_dsn, [fake_route(tmp_path)], [orthanc_destination(counting_orthanc)], receivers=2, workers=3, quiet_period_s=3
    ).start()
    try:
        batches, studies = split_studies(STUDIES, SLICES, ASSOCIATIONS)
        sent = send_concurrently(nodes.ports, batches)
        logger.info(
            "%d instances over %d associations to 2 receivers: %.0f instances/s", len(sent.sent_uids), ASSOCIATIONS, sent.per_second
        )
        assert sent.failed_statuses == [] and len(sent.sent_uids) == STUDIES * SLICES
        jobs = nodes.wait_for_studies(set(studies), timeout_s=400)
    finally:
        stopped = nodes.stop()
    assert set(stopped.values()) == {0}, stopped

    on_disk = Counter(stored_uids(nodes.storage_dir))
    assert set(on_disk) == set(sent.sent_uids) and set(on_disk.values()) == {1}
    assert sorted(study_of(j) for j in jobs) == sorted(studies)  # exactly one job per study
    assert {(j["state"], j["attempts"]) for j in jobs} == {("done", 1)}, [j for j in jobs if j["state"] != "done"]
    assert {study_of(j): tuple(j["series_uids"]) for j in jobs} == {
        study: (str(series[0].SeriesInstanceUID),) for study, series in studies.items()
    }
    assert {j["node"] for j in jobs} == {"worker-1", "worker-2", "worker-3"}  # the three workers shared the studies
    events = Counter(event for event, _ in runs(tmp_path))
    assert events == {"start": STUDIES, "finish": STUDIES}  # every job ran exactly once

    exported = outputs_by_destination(jobs)
    assert len(exported) == STUDIES and set(exported.values()) == {1}
    received = receptions(counting_orthanc)
    assert received == Counter({uid: 1 for _, uid in exported}), "each SEG reaches Orthanc exactly once"
    for job in jobs:  # each SEG references every slice of its study: the job held the parts both receivers took
        [seg_id] = counting_orthanc.find("Instance", {"SOPInstanceUID": job["outputs"][0]["sop_instance_uid"]})
        [referenced] = dcmread(io.BytesIO(counting_orthanc.instance_file(seg_id))).ReferencedSeriesSequence
        assert {str(r.ReferencedSOPInstanceUID) for r in referenced.ReferencedInstanceSequence} == {
            str(ds.SOPInstanceUID) for ds in studies[study_of(job)]
        }
