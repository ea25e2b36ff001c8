"""The real apps in the cluster mode, one end-to-end run each: Orthanc sends a study half to each of two receivers
(separate processes on one PostgreSQL queue and one storage folder), one worker process runs the app as its MAP
runs it, and its outputs come back to Orthanc once each (Orthanc's log of every C-STORE it received)."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread

from testkit.cluster import cluster, orthanc_destination, outputs_by_destination, receptions
from testkit.gateway_process import GATEWAY_AET
from testkit.orthanc import Orthanc
from tests.gateway.test_pacs_round_trip import SPLEEN_ROUTE, random_classifier, wsi_route
from tests.real_slides import real_dicom_wsi

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs an app end to end (its own limit: 900 s)
logger = logging.getLogger(__name__)

SEG, SR, ANNOTATIONS, PARAMETRIC_MAP = (
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.34",
    "1.2.840.10008.5.1.4.1.1.91.1",
    "1.2.840.10008.5.1.4.1.1.30",
)


def cluster_round_trip(tmp_path: Path, dsn: str, orthanc: Orthanc, route: dict, files: list[Path]) -> tuple[object, dict, float]:
    """Orthanc sends the even instances to receiver 1 and the odd ones to receiver 2; the job and its SEG as Orthanc has it."""
    nodes = cluster(tmp_path, dsn, [route], [orthanc_destination(orthanc)], receivers=2, workers=1, quiet_period_s=2).start()
    try:
        for index, port in enumerate(nodes.ports):
            orthanc.add_modality(f"receiver-{index + 1}", GATEWAY_AET, port)
        uploaded = orthanc.upload(files)
        study_uid = orthanc.request("GET", f"/studies/{uploaded[0]['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]
        began = time.monotonic()
        for index in range(2):
            orthanc.store_to(f"receiver-{index + 1}", [u["ID"] for u in uploaded[index::2]])
        [job] = nodes.wait_for_studies({study_uid}, timeout_s=900)
        seconds = time.monotonic() - began
    finally:
        stopped = nodes.stop()
    assert set(stopped.values()) == {0}, stopped
    assert (job["state"], job["attempts"], job["node"]) == ("done", 1, "worker-1"), job
    exported = outputs_by_destination([job])
    assert receptions(orthanc) == Counter({uid: 1 for _, uid in exported})
    [seg_output] = [o for o in job["outputs"] if o["sop_class_uid"] == SEG]
    [seg_id] = orthanc.find("Instance", {"SOPInstanceUID": seg_output["sop_instance_uid"]})
    return dcmread(io.BytesIO(orthanc.instance_file(seg_id))), job, seconds


def test_ct_study_split_over_two_receivers_runs_the_spleen_app_once_on_a_worker_and_its_seg_and_sr_come_back_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc, demo_ct
):
    files = sorted(demo_ct.dicom_dir.glob("*.dcm"))
    source = [dcmread(f, stop_before_pixels=True) for f in files]
    seg, job, seconds = cluster_round_trip(tmp_path, postgres_dsn, counting_orthanc, SPLEEN_ROUTE, files)
    logger.info("spleen cluster round trip: %.1f s for %d slices", seconds, len(files))
    assert sorted(o["sop_class_uid"] for o in job["outputs"]) == [SEG, SR]
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {ds.SOPInstanceUID for ds in source}
    assert seg.SegmentSequence[0].SegmentLabel == "Spleen"


def test_dicom_slide_split_over_two_receivers_runs_the_wsi_app_once_on_a_worker_and_its_three_outputs_come_back_once(
    tmp_path: Path, postgres_dsn: str, counting_orthanc: Orthanc
):
    files = sorted(real_dicom_wsi().glob("*.dcm"))
    source = [dcmread(f, stop_before_pixels=True) for f in files]
    route = wsi_route(random_classifier(tmp_path / "model"))
    seg, job, seconds = cluster_round_trip(tmp_path, postgres_dsn, counting_orthanc, route, files)
    logger.info("WSI cluster round trip: %.1f s for %d instances", seconds, len(files))
    assert sorted(o["sop_class_uid"] for o in job["outputs"]) == sorted([SEG, ANNOTATIONS, PARAMETRIC_MAP])
    assert seg.SegmentationType == "FRACTIONAL" and seg.StudyInstanceUID == source[0].StudyInstanceUID
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
