"""PACS round trips with the real apps: Orthanc sends a study to the gateway, the routed app runs as its MAP
runs it, and its DICOM SEG arrives back in Orthanc referencing the source series (checked over REST).
With the real spleen app: a gateway killed mid-study gives one SEG from the whole study once it is sent
again; a resent instance gives no second SEG, new slices one superseding SEG in the same series; an app
that refuses its model exports nothing.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import torch
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from operators.models.config import load_model_config
from operators.models.networks import build_patch_classifier
from testkit.gateway_process import GATEWAY_AET, REPO_ROOT, SCU_AET, GatewayProcess, store, write_config
from testkit.orthanc import Orthanc
from tests.real_slides import real_dicom_wsi

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs an app end to end (its own limit: 900 s)
logger = logging.getLogger(__name__)

SPLEEN_MODEL = REPO_ROOT / "model_zoo" / "spleen_ct_segmentation" / "model.ts"
SPLEEN_ROUTE = {
    "name": "spleen-ct",
    "match": {"Modality": "CT"},
    "app": str(REPO_ROOT / "apps" / "spleen_seg_app"),
    "model": str(SPLEEN_MODEL),
    "timeout_s": 900,
}


def wsi_route(model: Path) -> dict:
    # --mpp: a finer scan than the slide's 0.499 um/px, so about 16x fewer windows on 2 cores (as the app's tests do)
    return {
        "name": "wsi-metastasis",
        "match": {"Modality": "SM"},
        "app": str(REPO_ROOT / "apps" / "wsi_metastasis_app"),
        "model": str(model),
        "args": ["--mpp", "0.1215", "--workers", "2"],
        "timeout_s": 900,
    }


def random_classifier(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(
        {"model": build_patch_classifier(load_model_config("pathology_tumor_detection")["network"]).state_dict()}, folder / "model.pt"
    )
    (folder / "metadata.json").write_text(json.dumps({"name": "Tumor patch classifier (random test weights)", "version": "0.0.1"}))
    return folder / "model.pt"


def round_trip(orthanc: Orthanc, tmp_path: Path, port: int, route: dict, files: list[Path]) -> tuple[object, dict, float]:
    """Upload ``files`` to Orthanc, have Orthanc send their study to the gateway, wait for the SEG to come back."""
    orthanc.add_modality("gateway", GATEWAY_AET, port)
    destination = {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    gateway = GatewayProcess(write_config(tmp_path, port, [route], [destination], quiet_period_s=2), port, tmp_path / "gateway.log").start()
    try:
        uploaded = orthanc.upload(files)
        study_id = uploaded[0]["ParentStudy"]
        study_uid = orthanc.request("GET", f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]
        began = time.monotonic()
        orthanc.store_to("gateway", [study_id])
        deadline = began + 900
        segs: list[str] = []
        while time.monotonic() < deadline and not segs:
            segs = orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"})
            if gateway.process.poll() is not None or any(j["state"] == "failed" for j in gateway.jobs()):
                break
            time.sleep(1)
        seconds = time.monotonic() - began
        [job] = gateway.wait_for_jobs({"done", "failed"}, timeout_s=60)
        assert job["state"] == "done", (job, gateway.log_text()[-4000:])
    finally:
        assert gateway.terminate() == 0
    [seg_series] = segs
    [seg_id] = orthanc.series_instances(seg_series)
    return dcmread(io.BytesIO(orthanc.instance_file(seg_id))), job, seconds


def test_ct_study_from_orthanc_runs_the_spleen_app_and_its_seg_comes_back_referencing_the_series(
    orthanc: Orthanc, demo_ct, tmp_path: Path, gateway_port: int
):
    files = sorted(demo_ct.dicom_dir.glob("*.dcm"))
    source = [dcmread(f, stop_before_pixels=True) for f in files]
    seg, job, seconds = round_trip(orthanc, tmp_path, gateway_port, SPLEEN_ROUTE, files)
    logger.info("spleen round trip (Orthanc -> gateway -> app -> Orthanc): %.1f s for %d slices", seconds, len(files))
    assert job["route"] == "spleen-ct" and job["attempts"] == 1
    # the SEG and the SR: STL, PNG, JSON stay
    assert sorted((o["sop_class_uid"], o["destination"], o["send_count"]) for o in job["outputs"]) == [
        ("1.2.840.10008.5.1.4.1.1.66.4", "orthanc", 1),
        ("1.2.840.10008.5.1.4.1.1.88.34", "orthanc", 1),
    ]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.StudyInstanceUID == source[0].StudyInstanceUID
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {ds.SOPInstanceUID for ds in source}
    assert seg.SegmentSequence[0].SegmentLabel == "Spleen"


def test_dicom_whole_slide_image_from_orthanc_runs_the_wsi_app_and_its_seg_comes_back_referencing_the_slide(
    orthanc: Orthanc, tmp_path: Path, gateway_port: int
):
    slide = real_dicom_wsi()
    files = sorted(slide.glob("*.dcm"))
    source = [dcmread(f, stop_before_pixels=True) for f in files]
    seg, job, seconds = round_trip(orthanc, tmp_path, gateway_port, wsi_route(random_classifier(tmp_path / "model")), files)
    logger.info("WSI round trip (Orthanc -> gateway -> app -> Orthanc): %.1f s for %d instances", seconds, len(files))
    assert job["route"] == "wsi-metastasis" and job["attempts"] == 1
    # the SEG, the Bulk Simple Annotations and the Parametric Map
    assert sorted((o["sop_class_uid"], o["destination"], o["send_count"]) for o in job["outputs"]) == [
        ("1.2.840.10008.5.1.4.1.1.30", "orthanc", 1),
        ("1.2.840.10008.5.1.4.1.1.66.4", "orthanc", 1),
        ("1.2.840.10008.5.1.4.1.1.91.1", "orthanc", 1),
    ]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "FRACTIONAL"
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    [referenced] = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    level_uids = {ds.SOPInstanceUID for ds in source if "VOLUME" in ds.ImageType}
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} <= level_uids


def test_gateway_killed_after_part_of_a_study_then_the_study_resent_gives_one_seg_from_all_its_instances(
    orthanc: Orthanc, demo_ct, tmp_path: Path, gateway_port: int
):
    files = sorted(demo_ct.dicom_dir.glob("*.dcm"))
    source = [dcmread(f) for f in files]
    destination = {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    config = write_config(tmp_path, gateway_port, [SPLEEN_ROUTE], [destination], quiet_period_s=2, cut_off_wait_s=300)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()

    ae = AE(ae_title=SCU_AET)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway_port, ae_title=GATEWAY_AET)
    acknowledged = [assoc.send_c_store(ds).Status for ds in source[:27]]
    assert acknowledged == [0] * 27
    gateway.kill()  # SIGKILL with the association open: 27 of 80 instances stored and acknowledged
    assoc.abort()
    time.sleep(3)  # the gateway is down longer than the quiet period

    gateway.start()
    time.sleep(5)  # more than two quiet periods with the gateway up: a partial study must not become a job
    assert gateway.jobs() == []
    assert "1 associations were still open when the gateway stopped" in gateway.log_text()
    assert store(gateway_port, files) == [0] * len(files)  # the sender sends the whole study again
    [job] = gateway.wait_for_jobs({"done", "failed"}, timeout_s=900)
    time.sleep(3)  # nothing else follows
    jobs = gateway.jobs()
    assert gateway.terminate() == 0
    assert [j["id"] for j in jobs] == [job["id"]] and job["state"] == "done", gateway.log_text()[-4000:]

    study_uid = str(source[0].StudyInstanceUID)
    [seg_series] = orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"})
    [seg_id] = orthanc.series_instances(seg_series)  # exactly one SEG in the PACS
    seg = dcmread(io.BytesIO(orthanc.instance_file(seg_id)))
    [referenced] = seg.ReferencedSeriesSequence
    assert len(files) == 80
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {str(ds.SOPInstanceUID) for ds in source}
    summary = json.loads((tmp_path / "gateway-data" / "jobs" / f"{job['id']:06d}" / "output" / "summary.json").read_text())
    assert sorted(summary["input"]["sop_instance_uids"]) == sorted(str(ds.SOPInstanceUID) for ds in source)  # the app read all 80
    assert seg.SegmentSequence[0].SegmentLabel == "Spleen"


def test_spleen_study_resent_in_part_gives_no_second_seg_and_new_slices_give_one_superseding_seg_in_the_same_series(
    orthanc: Orthanc, demo_ct, tmp_path: Path, gateway_port: int
):
    files = sorted(demo_ct.dicom_dir.glob("*.dcm"), key=lambda f: int(dcmread(f, stop_before_pixels=True).InstanceNumber))
    first_part, added = files[:72], files[72:]  # the sender first sends 72 of the 80 slices, then the other 8
    destination = {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    config = write_config(tmp_path, gateway_port, [SPLEEN_ROUTE], [destination], quiet_period_s=2)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    try:
        assert store(gateway_port, first_part) == [0] * len(first_part)
        [first] = gateway.wait_for_jobs({"done", "failed"}, timeout_s=900)
        assert first["state"] == "done", gateway.log_text()[-4000:]
        assert store(gateway_port, first_part[10:11]) == [0]  # one instance sent again, unchanged
        time.sleep(5)
        assert [j["id"] for j in gateway.jobs()] == [first["id"]]
        assert store(gateway_port, added) == [0] * len(added)
        jobs = gateway.wait_for_jobs({"done", "failed"}, count=2, timeout_s=900)
    finally:
        assert gateway.terminate() == 0
    first, rerun = jobs
    assert rerun["state"] == "done", gateway.log_text()[-4000:]
    [first_seg] = [o for o in first["outputs"] if o["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.66.4"]
    assert (rerun["supersedes_job_id"], first["superseded_by"]) == (first["id"], rerun["id"])
    assert (rerun["supersedes_sop_uid"], rerun["result_series_uid"]) == (first_seg["sop_instance_uid"], first_seg["series_uid"])

    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    [seg_series] = orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"})
    segs = [dcmread(io.BytesIO(orthanc.instance_file(i))) for i in orthanc.series_instances(seg_series)]
    assert len(segs) == 2 and {str(s.SeriesInstanceUID) for s in segs} == {first_seg["series_uid"]}  # one series, two instances
    [superseding] = [s for s in segs if str(s.SOPInstanceUID) != first_seg["sop_instance_uid"]]
    assert first_seg["sop_instance_uid"] in superseding.ImageComments
    [referenced] = superseding.ReferencedSeriesSequence
    assert len(referenced.ReferencedInstanceSequence) == 80
    summary = json.loads((tmp_path / "gateway-data" / "jobs" / f"{rerun['id']:06d}" / "output" / "summary.json").read_text())
    assert summary["result"]["supersedes_sop_instance_uid"] == first_seg["sop_instance_uid"]
    assert summary["result"]["series_instance_uid"] == first_seg["series_uid"]
    assert summary["result"]["sop_instance_uid"] == str(superseding.SOPInstanceUID)


def test_spleen_app_refusing_a_model_with_flipped_weights_exports_nothing_and_the_job_fails_with_its_reason(
    orthanc: Orthanc, demo_ct, tmp_path: Path, gateway_port: int
):
    model_dir = tmp_path / "model"
    shutil.copytree(SPLEEN_MODEL.parent, model_dir)
    weights = bytearray((model_dir / SPLEEN_MODEL.name).read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte in the weights; the card beside them keeps the original SHA-256
    (model_dir / SPLEEN_MODEL.name).write_bytes(bytes(weights))
    route = {**SPLEEN_ROUTE, "model": str(model_dir / SPLEEN_MODEL.name)}
    destination = {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    config = write_config(tmp_path, gateway_port, [route], [destination], quiet_period_s=1, max_attempts=1)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    files = sorted(demo_ct.dicom_dir.glob("*.dcm"))
    try:
        assert store(gateway_port, files) == [0] * len(files)
        [job] = gateway.wait_for_jobs({"done", "failed"}, timeout_s=300)
    finally:
        assert gateway.terminate() == 0
    assert (job["state"], job["outputs"]) == ("failed", [])
    assert job["error"].startswith("exit 2: spleen_seg_app: error: ") and "fails its integrity check: SHA-256" in job["error"], job["error"]
    output = tmp_path / "gateway-data" / "jobs" / f"{job['id']:06d}" / "output"
    assert [p.name for p in output.iterdir()] == []  # nothing written: no partial set to export
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    assert orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"}) == []
