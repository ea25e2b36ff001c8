"""DICOMweb STOW-RS as a destination, against Orthanc's DICOMweb plugin (Debian orthanc-dicomweb)."""

from __future__ import annotations

import email
import email.policy
import io
from pathlib import Path

import pytest
from pydicom import dcmread

from gateway.config import Destination
from gateway.sender import stow_body, stow_files
from testkit.gateway_process import GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series, write_series
from testkit.orthanc import Orthanc
from tests.gateway.fake_seg_app import fake_route


def test_stow_body_is_multipart_related_with_one_application_dicom_part_per_file(tmp_path: Path):
    files = write_series(ct_series(2), tmp_path)
    body = stow_body(files, "BOUNDARY")
    message = email.message_from_bytes(
        b'Content-Type: multipart/related; type="application/dicom"; boundary=BOUNDARY\r\n\r\n' + body, policy=email.policy.HTTP
    )
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/dicom"] * 2
    assert [p.get_payload(decode=True) for p in parts] == [f.read_bytes() for f in files]


def test_stow_to_an_unreachable_server_reports_every_file_unsent(tmp_path: Path):
    files = write_series(ct_series(1), tmp_path)
    results = stow_files(files, Destination(name="web", type="dicomweb", url="http://127.0.0.1:9/dicom-web", timeout_s=5))
    assert list(results) == files and all("STOW-RS" in error for error in results.values())


@pytest.mark.slow
def test_gateway_sends_the_app_seg_to_orthanc_by_stow_rs(tmp_path: Path, gateway_port: int, orthanc_dicomweb: Orthanc):
    web = {"name": "orthanc-web", "type": "dicomweb", "url": f"{orthanc_dicomweb.url}/dicom-web"}
    gateway = GatewayProcess(
        write_config(tmp_path, gateway_port, [fake_route(tmp_path)], [web]), gateway_port, tmp_path / "gateway.log"
    ).start()
    series = ct_series(3)
    assert store(gateway_port, series) == [0, 0, 0]
    [job] = gateway.wait_for_jobs({"done", "failed"})
    assert gateway.terminate() == 0
    assert job["state"] == "done", gateway.log_text()[-3000:]
    [output] = job["outputs"]
    assert (output["destination"], output["send_count"]) == ("orthanc-web", 1)
    [instance] = orthanc_dicomweb.find("Instance", {"SOPInstanceUID": output["sop_instance_uid"]})
    assert dcmread(io.BytesIO(orthanc_dicomweb.instance_file(instance))).Modality == "SEG"
