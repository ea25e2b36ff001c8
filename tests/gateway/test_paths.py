"""No received value names a path outside storage_dir: UIDs that are not UIDs are refused by the real SCP with a
failure status naming the attribute, other attributes (PatientID) never name a path, and the service keeps serving."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage

from gateway.sender import SenderAE
from gateway.storage import UnsafeNameError, instance_path
from testkit.gateway_process import GATEWAY_AET, SCU_AET, GatewayProcess, echo, write_config
from testkit.gateway_samples import ct_series, write_series
from testkit.orthanc import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
]

ROUTES = [{"name": "none", "match": {"Modality": "NOTHING"}, "command": ["true"]}]
DOES_NOT_MATCH_SOP_CLASS = 0xA900


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("paths")
    port = free_port()
    process = GatewayProcess(write_config(folder, port, ROUTES), port, folder / "gateway.log").start()
    yield folder, process
    assert process.terminate() == 0


def store_statuses(port: int, datasets: list[Dataset]) -> list[Dataset]:
    """C-STORE each data set over one association; the whole status of each response (Status, ErrorComment, ...)."""
    ae = SenderAE(ae_title=SCU_AET)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AET)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def every_path(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SeriesInstanceUID", "../../../x"),
        ("StudyInstanceUID", "1.2/../../x"),
        ("StudyInstanceUID", "/tmp/gateway-absolute-x"),
        ("SeriesInstanceUID", "1." + "2" * 70),
        ("SOPInstanceUID", "../../x"),
    ],
    ids=["series-dotdot", "study-dotdot", "study-absolute", "series-over-long", "sop-instance-dotdot"],
)
def test_a_uid_that_is_a_path_is_refused_naming_the_attribute_and_nothing_lands_outside(served, keyword: str, value: str):
    folder, gateway = served
    bad, good = ct_series(2)
    setattr(bad, keyword, value)
    before = every_path(folder.parent)
    refused, stored = store_statuses(gateway.port, [bad, good])  # one association: the good one after the bad one
    assert refused.Status == DOES_NOT_MATCH_SOP_CLASS
    assert refused.ErrorComment == f"{keyword} missing or not a UID"
    assert Tag(refused.OffendingElement) == Tag(keyword)
    assert stored.Status == 0x0000
    good_path = instance_path(folder / "gateway-data" / "incoming", good.StudyInstanceUID, good.SeriesInstanceUID, good.SOPInstanceUID)
    new = every_path(folder.parent) - before
    expected = {str(p.relative_to(folder.parent)) for p in (good_path, good_path.parent, good_path.parent.parent)}
    assert {p for p in new if "gateway-data" not in p or "incoming" in p} == expected
    assert not Path("/tmp/gateway-absolute-x").exists()
    assert f"Refused C-STORE from {SCU_AET} (SOP instance {bad.SOPInstanceUID}) with 0xA900: {keyword} {value!r} is not a UID" in (
        gateway.log_text()
    )
    assert echo(gateway.port) == 0


def test_a_patient_id_with_slashes_is_kept_as_data_and_names_no_path(served):
    folder, gateway = served
    [ds] = ct_series(1)
    ds.PatientID = "../../../etc/x/1"
    [status] = store_statuses(gateway.port, [ds])
    assert status.Status == 0x0000
    path = instance_path(folder / "gateway-data" / "incoming", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert dcmread(path).PatientID == "../../../etc/x/1"
    assert not [p for p in every_path(folder.parent) if "etc" in Path(p).parts]


@pytest.mark.parametrize(
    ("study", "series", "sop", "named"),
    [
        ("..", "1.2", "1.3", "StudyInstanceUID '..' cannot name a file"),
        ("1.2", "../../x", "1.3", "SeriesInstanceUID '../../x' cannot name a file"),
        ("1.2", "1.3", "/etc/passwd", "SOPInstanceUID '/etc/passwd' cannot name a file"),
        ("1.2", "", "1.3", "SeriesInstanceUID '' cannot name a file: it is empty"),
    ],
)
def test_instance_path_builds_no_path_from_a_value_that_is_not_a_uid(study: str, series: str, sop: str, named: str, tmp_path: Path):
    with pytest.raises(UnsafeNameError, match=f"^{re.escape(named)}"):
        instance_path(tmp_path, study, series, sop)


def test_instance_path_of_uids_stays_inside_incoming(tmp_path: Path):
    path = instance_path(tmp_path, "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert path == tmp_path / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm" and path.resolve().is_relative_to(tmp_path.resolve())


def test_a_stored_file_whose_header_names_a_path_is_not_recorded_at_start_up(tmp_path: Path, gateway_port: int):
    """A file under incoming/ the database does not know (as a crash leaves) is recorded at start-up from its header;
    a header whose SeriesInstanceUID is a path would name the job's input folder, so that file is left unrecorded."""
    [ds] = ct_series(1)
    ds.SeriesInstanceUID = "../../../x"
    incoming = tmp_path / "gateway-data" / "incoming" / "1.2" / "1.3"
    [written] = write_series([ds], incoming)
    gateway = GatewayProcess(write_config(tmp_path, gateway_port, ROUTES), gateway_port, tmp_path / "gateway.log").start()
    try:
        assert gateway.jobs() == []
    finally:
        assert gateway.terminate() == 0
    assert f"Stored file {written} is not recorded: SeriesInstanceUID:" in gateway.log_text()
    assert written.exists() and not (tmp_path / "x").exists()
    assert "Recorded 1 stored files" not in gateway.log_text()
