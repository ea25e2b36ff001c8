"""Results a PACS can trust, with the gateway as its users run it and a real Orthanc: a study cut off mid-association
waits for the sender to send it again, a resent instance makes no second result, new instances make one result that
supersedes the first in the same SEG series, and an incomplete output set is never exported.

The app is tests/gateway/fake_seg_app.py (a real DICOM SEG in about a second); the real spleen app's version of the
first case is in test_pacs_round_trip.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage

from gateway.sender import SenderAE
from testkit.gateway_process import GATEWAY_AET, REPO_ROOT, SCU_AET, GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series, write_series
from testkit.orthanc import Orthanc
from tests.gateway.fake_seg_app import fake_route, runs

pytestmark = pytest.mark.slow  # each starts the gateway and runs an app (5-20 s)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def orthanc_destination(orthanc: Orthanc) -> dict:
    return {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}


def segs(orthanc: Orthanc, study_uid: str) -> dict[str, list]:
    """SEG series UID -> its instances (read back from Orthanc)."""
    found: dict[str, list] = {}
    for series in orthanc.find("Series", {"StudyInstanceUID": study_uid, "Modality": "SEG"}):
        for instance in orthanc.series_instances(series):
            ds = dcmread(io.BytesIO(orthanc.instance_file(instance)))
            found.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    return found


def referenced(seg) -> set[str]:
    return {item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence}


def send_then_abort(port: int, datasets: list) -> list[int]:
    """C-STORE the datasets, then abort the association (a sender cut off mid-study); the statuses."""
    ae = SenderAE(ae_title=SCU_AET)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AET)
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds).Status for ds in datasets]
    assoc.abort()
    return statuses


def test_a_study_cut_off_by_an_aborted_association_waits_for_the_resend_and_gives_one_job_on_all_of_it(tmp_path: Path, gateway_port: int):
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], quiet_period_s=1, cut_off_wait_s=120)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(4)
    assert send_then_abort(gateway_port, series[:2]) == [0, 0]
    time.sleep(4)  # four quiet periods: a study from a released association would have become a job
    assert gateway.jobs() == []
    assert "ended without a release after 2 instances" in gateway.log_text()
    assert store(gateway_port, series) == [0] * 4  # the sender sends the whole study again
    [job] = gateway.wait_for_jobs({"done", "failed"})
    assert gateway.terminate() == 0
    assert job["state"] == "done" and runs(tmp_path)[-1][0] == "finish"
    job_input = tmp_path / "gateway-data" / "jobs" / f"{job['id']:06d}" / "input"
    assert sorted(p.stem for p in job_input.rglob("*.dcm")) == sorted(str(ds.SOPInstanceUID) for ds in series)


def processed_series(tmp_path: Path, gateway_port: int, orthanc: Orthanc, slices: int) -> tuple[GatewayProcess, list, list[dict]]:
    """Orthanc sends a CT series to the gateway, and its one SEG comes back. The gateway, the series, Orthanc's upload replies."""
    orthanc.add_modality("gateway", GATEWAY_AET, gateway_port)
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], [orthanc_destination(orthanc)], quiet_period_s=1)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(slices)
    uploaded = orthanc.upload(write_series(series, tmp_path / "ct"))
    orthanc.store_to("gateway", [uploaded[0]["ParentSeries"]])
    assert [j["state"] for j in gateway.wait_for_jobs({"done", "failed"})] == ["done"]
    return gateway, series, uploaded


def test_an_instance_resent_unchanged_makes_no_second_job_and_no_second_seg(tmp_path: Path, gateway_port: int, orthanc: Orthanc):
    gateway, series, uploaded = processed_series(tmp_path, gateway_port, orthanc, slices=3)
    orthanc.store_to("gateway", [uploaded[1]["ID"]])  # the PACS user sends one instance again
    time.sleep(4)  # four quiet periods
    assert [j["id"] for j in gateway.jobs()] == [1]
    assert gateway.terminate() == 0
    assert "unchanged and already processed: no new job" in gateway.log_text()
    [[seg]] = segs(orthanc, str(series[0].StudyInstanceUID)).values()
    assert referenced(seg) == {str(ds.SOPInstanceUID) for ds in series}
    assert [event for event, _ in runs(tmp_path)] == ["start", "finish"]


def test_new_instances_in_a_processed_series_give_one_seg_that_supersedes_the_first_in_the_same_seg_series(
    tmp_path: Path, gateway_port: int, orthanc: Orthanc
):
    gateway, series, _ = processed_series(tmp_path, gateway_port, orthanc, slices=3)
    [first_job] = gateway.jobs()
    [first_seg] = first_job["outputs"]
    added = ct_series(5)[3:]  # two more slices of the same series
    for ds in added:
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
            series[0].StudyInstanceUID,
            series[0].SeriesInstanceUID,
            series[0].FrameOfReferenceUID,
        )
    orthanc.store_to("gateway", [r["ID"] for r in orthanc.upload(write_series(added, tmp_path / "added"))])
    jobs = gateway.wait_for_jobs({"done", "failed"}, count=2)
    listing = subprocess.run(
        [sys.executable, "-m", "gateway", "jobs", "--config", str(gateway.config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert gateway.terminate() == 0

    first, rerun = jobs
    assert (first["superseded_by"], rerun["supersedes_job_id"], rerun["state"]) == (2, 1, "done")
    assert rerun["supersedes_sop_uid"] == first_seg["sop_instance_uid"]
    assert rerun["result_series_uid"] == first_seg["series_uid"]
    [[row1, row2]] = [[line.split() for line in listing.splitlines()[1:]]]
    assert (row1[0], row1[-2], row2[0], row2[-3]) == ("1", "2", "2", "1")  # "superseded by 2" / "supersedes 1"

    [(seg_series, instances)] = segs(orthanc, str(series[0].StudyInstanceUID)).items()  # one SEG series, two instances in it
    assert seg_series == first_seg["series_uid"]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in instances}
    assert sorted(by_uid) == sorted([first_seg["sop_instance_uid"], rerun["outputs"][0]["sop_instance_uid"]])
    superseding = by_uid[rerun["outputs"][0]["sop_instance_uid"]]
    assert superseding.ImageComments == f"supersedes {first_seg['sop_instance_uid']}"
    assert referenced(superseding) == {str(ds.SOPInstanceUID) for ds in series + added}
    assert [event for event, _ in runs(tmp_path)] == ["start", "finish", "start", "finish"]


def test_an_app_that_exits_0_with_an_incomplete_output_set_exports_nothing_and_fails_with_the_reason(
    tmp_path: Path, gateway_port: int, orthanc: Orthanc
):
    route = fake_route(tmp_path, FAKE_APP_INCOMPLETE="1")
    config = write_config(tmp_path, gateway_port, [route], [orthanc_destination(orthanc)], max_attempts=2)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    series = ct_series(3)
    assert store(gateway_port, series) == [0, 0, 0]
    [job] = gateway.wait_for_jobs({"done", "failed"})
    assert gateway.terminate() == 0
    assert (job["state"], job["attempts"], job["outputs"]) == ("failed", 2, [])
    assert job["error"] == "incomplete output set: summary.json lists overlay_png overlay.png, which is missing"
    assert segs(orthanc, str(series[0].StudyInstanceUID)) == {}
    assert [event for event, _ in runs(tmp_path)] == ["start", "finish", "start", "finish"]
