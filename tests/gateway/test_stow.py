"""DICOMweb STOW-RS as a destination, against Orthanc's DICOMweb plugin (Debian orthanc-dicomweb): which instances a
response says were stored (PS3.18 10.5.3), and a resend of only the others."""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import CTImageStorage

from gateway.config import Destination
from gateway.sender import stow_body, stow_files, stow_outcome
from testkit.gateway_process import GatewayProcess, store, write_config
from testkit.gateway_samples import ct_series, write_series
from testkit.orthanc import Orthanc, missing_orthanc, start_orthanc
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


UIDS = [generate_uid() for _ in range(4)]


def response_body(stored: list[str], failed: dict[str, int] | None = None, warned: dict[str, int] | None = None) -> bytes:
    """A STOW-RS response (PS3.18 10.5.3) in application/dicom+json, as pydicom writes it."""
    response = Dataset()
    items = []
    for uid in stored:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, uid
        if warned and uid in warned:
            item.WarningReason = warned[uid]
        items.append(item)
    response.ReferencedSOPSequence = items
    failures = []
    for uid, reason in (failed or {}).items():
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID, item.FailureReason = CTImageStorage, uid, reason
        failures.append(item)
    if failures:
        response.FailedSOPSequence = failures
    return json.dumps(response.to_json_dict()).encode()


@pytest.mark.parametrize(
    ("status", "phrase", "body", "expected"),
    [
        (200, "OK", response_body(UIDS), [None] * 4),
        (200, "OK", b"", [None] * 4),  # a server that answers nothing: 200 is all stored
        (
            200,
            "OK",
            response_body(UIDS[:1]),  # Orthanc's DICOMweb 1.7 after a failed instance: 200, the rest left out
            [None] + ["STOW-RS HTTP 200: not in the response's ReferencedSOPSequence (not stored)"] * 3,
        ),
        (
            202,
            "Accepted",
            response_body(UIDS[:2], {UIDS[2]: 0xA700, UIDS[3]: 0xC122}, warned={UIDS[1]: 0xB000}),
            [
                None,
                None,  # stored with a warning (coercion) is stored
                "STOW-RS HTTP 202: failure reason 0xA700 (out of resources)",
                "STOW-RS HTTP 202: failure reason 0xC122 (transfer syntax not supported)",
            ],
        ),
        (202, "Accepted", b"<not json>", ["STOW-RS HTTP 202: the response lists no stored instances"] * 4),
        (
            409,
            "Conflict",
            response_body([], dict.fromkeys(UIDS, 0xA900)),
            ["STOW-RS HTTP 409 Conflict: failure reason 0xA900 (data set does not match SOP class)"] * 4,
        ),
        (409, "Conflict", b"", ["STOW-RS HTTP 409 Conflict: not stored"] * 4),
        (400, "Bad Request", b"", ["STOW-RS HTTP 400 Bad Request: not stored"] * 4),
        (415, "Unsupported Media Type", b"", ["STOW-RS HTTP 415 Unsupported Media Type: not stored"] * 4),
        (503, "Service Unavailable", b"", ["STOW-RS HTTP 503 Service Unavailable: not stored"] * 4),
    ],
    ids=["200", "200-empty", "200-left-out", "202", "202-unreadable", "409", "409-empty", "400", "415", "503"],
)
def test_stow_outcome_reads_which_instances_were_stored_from_the_response(status, phrase, body, expected):
    files = {Path(f"{uid}.dcm"): uid for uid in UIDS}
    assert list(stow_outcome(status, phrase, body, files).values()) == expected


def lua_filter(folder: Path, refused: list[str], always: bool) -> Path:
    """An Orthanc Lua ReceivedInstanceFilter that raises for the given SOP Instance UIDs (the first time each comes, or
    always), and logs every instance it sees (Orthanc's index keeps one copy per SOP UID, so the log counts the sends)."""
    script = folder / "refuse.lua"
    script.parent.mkdir(parents=True, exist_ok=True)
    table = ", ".join(f'["{uid}"] = true' for uid in refused)
    script.write_text(
        f"refuse = {{{table}}}\nrefused = {{}}\n"
        "function ReceivedInstanceFilter(dicom, origin, info)\n"
        '  print("stow-filter " .. dicom.SOPInstanceUID)\n'
        f"  if refuse[dicom.SOPInstanceUID] and ({'true' if always else 'false'} or not refused[dicom.SOPInstanceUID]) then\n"
        "    refused[dicom.SOPInstanceUID] = true\n"
        '    error("refused by the test filter")\n'
        "  end\n"
        "  return true\n"
        "end\n"
    )
    return script


def filtered(orthanc: Orthanc, uid: str) -> int:
    """How many times the Lua filter saw ``uid`` (each STOW-RS part that reached Orthanc's storage)."""
    return (orthanc.folder / "orthanc.log").read_text(errors="replace").count(f"Lua says: stow-filter {uid}")


@contextmanager
def refusing_orthanc(folder: Path, refused: list[str], always: bool = False) -> Iterator[Orthanc]:
    problem = missing_orthanc(dicomweb=True)
    if problem:
        pytest.skip(problem)
    server = start_orthanc(folder, dicomweb=True, settings={"LuaScripts": [str(lua_filter(folder, refused, always))]})
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_an_instance_orthanc_left_out_is_sent_again_alone_and_each_is_stored_once(tmp_path: Path):
    """Orthanc's DICOMweb 1.7 answers 200, listing the instances before the refused one: the refused one and those it
    dropped after it (never offered to its storage) are each sent once more in a request of their own."""
    series = ct_series(4)
    files = write_series(series, tmp_path / "in")
    uids = [str(ds.SOPInstanceUID) for ds in series]
    with refusing_orthanc(tmp_path / "orthanc", [uids[1]]) as orthanc:
        web = Destination(name="web", type="dicomweb", url=f"{orthanc.url}/dicom-web", timeout_s=60)
        assert stow_files(files, web) == dict.fromkeys(files, None)
        assert [len(orthanc.find("Instance", {"SOPInstanceUID": uid})) for uid in uids] == [1, 1, 1, 1]
        assert [filtered(orthanc, uid) for uid in uids] == [1, 2, 1, 1]


@pytest.mark.slow
def test_an_instance_that_keeps_failing_is_reported_with_the_others_stored(tmp_path: Path):
    series = ct_series(3)
    files = write_series(series, tmp_path / "in")
    uids = [str(ds.SOPInstanceUID) for ds in series]
    with refusing_orthanc(tmp_path / "orthanc", [uids[0]], always=True) as orthanc:
        web = Destination(name="web", type="dicomweb", url=f"{orthanc.url}/dicom-web", timeout_s=60)
        results = stow_files(files, web)
        assert list(results.values()) == ["STOW-RS HTTP 200: not in the response's ReferencedSOPSequence (not stored)", None, None]
        assert [len(orthanc.find("Instance", {"SOPInstanceUID": uid})) for uid in uids] == [0, 1, 1]
        assert [filtered(orthanc, uid) for uid in uids] == [2, 1, 1]


STAND_IN_APP = '''
"""Writes one copy of the first input instance per UID in $OUTPUT_UIDS (a new series), and a summary listing them."""
import json, os, sys
from pathlib import Path
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import CTImageStorage
from pydicom.uid import generate_uid

source = dcmread(sorted(Path(sys.argv[1]).rglob("*.dcm"))[0])
series_uid = generate_uid()
outputs = {}
for index, uid in enumerate(os.environ["OUTPUT_UIDS"].split(",")):
    source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = uid
    source.SeriesInstanceUID, source.SeriesNumber, source.InstanceNumber = series_uid, 90, index + 1
    source.save_as(Path(sys.argv[2]) / f"result-{index}.dcm")
    outputs[f"result_{index}"] = f"result-{index}.dcm"
(Path(sys.argv[2]) / "summary.json").write_text(json.dumps({"outputs": outputs}))
'''


def copies_route(tmp_path: Path, output_uids: list[str]) -> dict:
    app = tmp_path / "stand_in_app.py"
    app.write_text(STAND_IN_APP)
    return {
        "name": "copies",
        "match": {"Modality": "CT"},
        "command": [sys.executable, str(app), "{input}", "{output}"],
        "env": {"OUTPUT_UIDS": ",".join(output_uids)},
    }


@pytest.mark.slow
@pytest.mark.parametrize("always", [False, True], ids=["refused-once", "refused-always"])
def test_gateway_resends_only_the_outputs_a_stow_rs_left_unstored(tmp_path: Path, gateway_port: int, always: bool):
    outputs = [generate_uid() for _ in range(3)]
    with refusing_orthanc(tmp_path / "orthanc", [outputs[1]], always=always) as orthanc:
        web = {"name": "orthanc-web", "type": "dicomweb", "url": f"{orthanc.url}/dicom-web"}
        config = write_config(tmp_path, gateway_port, [copies_route(tmp_path, outputs)], [web], max_send_attempts=3)
        gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
        try:
            assert store(gateway_port, ct_series(2)) == [0, 0]
            [job] = gateway.wait_for_jobs({"done", "failed"})
        finally:
            assert gateway.terminate() == 0
        by_uid = {o["sop_instance_uid"]: o for o in job["outputs"]}
        job_log = (tmp_path / "gateway-data" / "jobs" / f"{job['id']:06d}" / "job.log").read_text()
        sends = re.findall(r" sent (\d+/\d+ outputs to \S+)", job_log)
        stored = [len(orthanc.find("Instance", {"SOPInstanceUID": uid})) for uid in outputs]
        if not always:
            assert job["state"] == "done", gateway.log_text()[-3000:]
            assert sends == ["3/3 outputs to orthanc-web"]
            assert [by_uid[uid]["send_count"] for uid in outputs] == [1, 1, 1] and stored == [1, 1, 1]
            assert [filtered(orthanc, uid) for uid in outputs] == [1, 2, 1]
        else:
            assert job["state"] == "failed"
            assert sends == ["2/3 outputs to orthanc-web", "0/1 outputs to orthanc-web", "0/1 outputs to orthanc-web"]
            assert "result-1.dcm: STOW-RS HTTP 200: not in the response's ReferencedSOPSequence (not stored)" in job["error"]
            assert [by_uid[uid]["send_count"] for uid in outputs] == [1, 0, 1] and stored == [1, 0, 1]
            assert [filtered(orthanc, uid) for uid in outputs] == [1, 4, 1]  # batch, alone, then one per round
