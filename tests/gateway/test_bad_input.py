"""Bad callers, malformed objects and failed writes get a rejection or a failure status and a log line; the gateway keeps
serving."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import _config as pynetdicom_config

from gateway.config import parse_config
from gateway.queue import JobQueue
from gateway.scp import start_scp
from gateway.storage import write_failure
from testkit import missing_packages
from testkit.gateway_process import GATEWAY_AET, SCU_AET, GatewayProcess, echo, store, write_config
from testkit.gateway_samples import ct_series, write_series

pytestmark = pytest.mark.slow  # each starts the gateway as a process (but the pure write_failure cases)

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's of the same name in the venv
ROUTES = [{"name": "none", "match": {"Modality": "NOTHING"}, "command": ["true"]}]


@pytest.fixture
def gateway(tmp_path: Path, gateway_port: int):
    process = GatewayProcess(write_config(tmp_path, gateway_port, ROUTES), gateway_port, tmp_path / "gateway.log").start()
    yield process
    assert process.terminate() == 0


@pytest.fixture
def dcmtk() -> str:
    if not Path(STORESCU).exists():
        pytest.skip(missing_packages("dcmtk's storescu", ["dcmtk"]))
    return STORESCU


def stored_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "gateway-data" / "incoming").glob("*/*/*.dcm"))


def test_unknown_calling_ae_title_is_rejected_at_association_by_dcmtk_storescu(gateway, dcmtk, tmp_path: Path):
    [path] = write_series(ct_series(1), tmp_path / "in")
    result = subprocess.run(
        [dcmtk, "-aet", "STRANGER", "-aec", GATEWAY_AET, "127.0.0.1", str(gateway.port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr + result.stdout
    assert stored_files(tmp_path) == []
    assert "calling AE title 'STRANGER' (not in allowed_calling_aets)" in gateway.log_text()
    accepted = subprocess.run(
        [dcmtk, "-aet", SCU_AET, "-aec", GATEWAY_AET, "127.0.0.1", str(gateway.port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert [p.name for p in stored_files(tmp_path)] == [path.name]


def test_unknown_calling_ae_title_gets_no_association_from_pynetdicom(gateway):
    assert echo(gateway.port, calling_aet="STRANGER") is None
    assert echo(gateway.port) == 0


@pytest.fixture
def raw_file_sending():
    """pynetdicom sends a file path as its bytes, undecoded: the only way a malformed object reaches the wire."""
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    yield
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


def truncated_copy(good: Path, folder: Path) -> Path:
    data = good.read_bytes()
    target = folder / "truncated.dcm"
    target.write_bytes(data[: len(data) - 60])  # ends inside the pixel data
    return target


def without_sop_instance_uid(good: Path, folder: Path) -> Path:
    ds = dcmread(good)
    del ds.SOPInstanceUID  # the file meta still names it, so it can be sent
    target = folder / "no_sop_uid.dcm"
    ds.save_as(target)
    return target


@pytest.mark.parametrize(
    ("make", "status", "logged"),
    [
        (truncated_copy, 0xC000, "with 0xC000: truncated: (7FE0,0010) needs 128 bytes, 68 left"),
        (without_sop_instance_uid, 0xA900, "with 0xA900: SOPInstanceUID is missing"),
    ],
    ids=["truncated", "missing-sop-instance-uid"],
)
def test_malformed_object_gets_a_failure_status_and_a_log_line_and_the_gateway_keeps_serving(
    gateway, raw_file_sending, tmp_path: Path, make, status, logged
):
    good, spare = write_series(ct_series(2), tmp_path / "in")
    bad = make(good, tmp_path)
    assert store(gateway.port, [bad, spare]) == [status, 0x0000]  # the same association goes on
    assert f"Refused C-STORE from {SCU_AET}" in gateway.log_text() and logged in gateway.log_text()
    assert echo(gateway.port) == 0
    assert store(gateway.port, [good]) == [0x0000]
    assert sorted(p.name for p in stored_files(tmp_path)) == sorted([good.name, spare.name])
    assert not list((tmp_path / "gateway-data" / "incoming").rglob(".incoming-*"))


def test_received_file_holds_the_sent_data_set_unchanged(gateway, raw_file_sending, tmp_path: Path):
    [sent] = write_series(ct_series(1), tmp_path / "in")
    assert store(gateway.port, [sent]) == [0x0000]
    [kept] = stored_files(tmp_path)
    assert dcmread(kept) == dcmread(sent)


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (errno.ENOSPC, "no room to write (ENOSPC: No space left on device)"),
        (errno.EFBIG, "no room to write (EFBIG: File too large)"),
        (errno.EDQUOT, "no room to write (EDQUOT: Disk quota exceeded)"),
        (errno.EIO, "write failed (EIO: Input/output error)"),
    ],
)
def test_a_failed_write_is_one_line_naming_what_ran_out(code: int, line: str):
    assert write_failure(OSError(code, os.strerror(code))) == line


def test_a_write_past_the_file_size_limit_gets_out_of_resources_and_leaves_nothing(gateway, tmp_path: Path):
    """RLIMIT_FSIZE on the running gateway: writing a 1 MB instance fails with EFBIG, as a full disk fails with ENOSPC."""
    limit = 512 * 1024
    [big] = ct_series(1, size=724)  # 724 x 724 x 2 bytes: past the limit
    small = ct_series(2)
    resource.prlimit(gateway.process.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        assert store(gateway.port, [small[0], big, small[1]]) == [0x0000, 0xA700, 0x0000]  # the association goes on
    finally:
        resource.prlimit(gateway.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    incoming = tmp_path / "gateway-data" / "incoming"
    assert sorted(p.name for p in stored_files(tmp_path)) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in small)
    assert not (incoming / big.StudyInstanceUID).exists()  # neither the file, its temporary file nor its folders
    assert not list(incoming.rglob(".incoming-*"))
    log = gateway.log_text()
    assert (
        f"Could not store SOP instance {big.SOPInstanceUID} from {SCU_AET}, answered 0xA700: no room to write (EFBIG: File too large)"
        in log
    )
    assert "Traceback" not in log
    assert echo(gateway.port) == 0
    assert store(gateway.port, [big]) == [0x0000]  # room again: the sender's resend is stored
    assert (incoming / big.StudyInstanceUID / big.SeriesInstanceUID / f"{big.SOPInstanceUID}.dcm").is_file()


def test_an_instance_the_queue_cannot_record_gets_out_of_resources_and_leaves_no_file(
    tmp_path: Path, gateway_port: int, caplog: pytest.LogCaptureFixture
):
    """The file is written, then recording it fails (here the database is closed under the running SCP: a real sqlite3
    error): the sender gets 0xA700 and will resend, and the file goes, or a restart would record it as an orphan."""
    raw = {"ae_title": GATEWAY_AET, "host": "127.0.0.1", "port": gateway_port, "allowed_calling_aets": [SCU_AET]}
    config = parse_config({**raw, "storage_dir": str(tmp_path / "storage"), "routes": ROUTES}, tmp_path)
    config.incoming_dir.mkdir(parents=True)
    queue = JobQueue(config.database)
    server = start_scp(config, queue)
    try:
        queue.close()
        [ds] = ct_series(1)
        assert store(gateway_port, [ds]) == [0xA700]
    finally:
        server.shutdown()
    assert list(config.incoming_dir.iterdir()) == []
    assert any(f"Could not record SOP instance {ds.SOPInstanceUID} from {SCU_AET}" in r.getMessage() for r in caplog.records)
