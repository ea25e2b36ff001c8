"""Results a PACS can trust, from the spleen app's command line: all outputs or none, model integrity,
pre-flight checks of the output folder, and a rerun's result superseding the earlier one."""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from tests.conftest import REPO_ROOT, run_app
from tests.validators import dciodvfy_errors, requires_dciodvfy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs an app end to end (its own limit: 900 s)
APP = "spleen_seg_app"
MODEL_DIR = REPO_ROOT / "model_zoo" / "spleen_ct_segmentation"
FILE_SIZE_LIMIT = 400 * 1024  # below the demo's SEG (about 700 kB) and STL, above its summary


@pytest.fixture(scope="module")
def previous_result(demo_ct, tmp_path_factory) -> Path:
    """A complete result set of the demo phantom, as an earlier run left it."""
    out = tmp_path_factory.mktemp("previous")
    result = run_app(APP, ["-i", str(demo_ct.dicom_dir), "-o", str(out), "--backend", "torch"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every entry of ``folder`` (staging folders included) with its content."""
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in folder.iterdir()}


def copy_of(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def flip_in_largest_tensor(model_ts: Path) -> None:
    """Flip the lowest mantissa bit of one float32 weight: the archive still loads and runs."""
    with zipfile.ZipFile(model_ts) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(model_ts.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, entry.header_offset + 26)  # the local file header
    data[entry.header_offset + 30 + name_length + extra_length + 4096] ^= 0x01
    model_ts.write_bytes(bytes(data))


def flip_central_directory(model_ts: Path) -> None:
    """Flip the bytes of the last entry names in the zip's central directory (what gave a UnicodeDecodeError)."""
    data = bytearray(model_ts.read_bytes())
    for i in range(len(data) - 200, len(data) - 150):
        data[i] ^= 0xFF
    model_ts.write_bytes(bytes(data))


def run_with_file_size_limit(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    """The app with RLIMIT_FSIZE: a write past ``limit_bytes`` fails with EFBIG, as a full disk fails with
    ENOSPC. (A small filesystem would be refused by the pre-flight room check before the run starts.)"""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "apps" / APP), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        preexec_fn=limit,
    )


def test_a_disk_filling_mid_write_leaves_the_previous_set_and_no_partial_one(demo_ct, previous_result, tmp_path: Path):
    out = copy_of(previous_result, tmp_path / "out")
    before = folder_bytes(out)
    result = run_with_file_size_limit(["-i", str(demo_ct.dicom_dir), "-o", str(out), "--backend", "torch"], FILE_SIZE_LIMIT)
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("spleen_seg_app: error: cannot write the outputs into") and "previous outputs are kept" in last_line
    assert "Traceback" not in result.stderr
    assert folder_bytes(out) == before  # the same four files, byte for byte, and no .partial-* folder


def test_a_disk_filling_mid_write_of_a_first_run_leaves_nothing(demo_ct, tmp_path: Path):
    result = run_with_file_size_limit(["-i", str(demo_ct.dicom_dir), "-o", str(tmp_path / "out"), "--backend", "torch"], FILE_SIZE_LIMIT)
    assert result.returncode == 2, result.stderr[-3000:]
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "check"),
    [(flip_in_largest_tensor, "fails its integrity check"), (flip_central_directory, "fails its integrity check")],
    ids=["weight-bits", "archive-header"],
)
def test_damaged_weights_beside_their_card_are_refused_with_exit_2_naming_the_check(demo_ct, tmp_path: Path, damage, check):
    model = copy_of(MODEL_DIR, tmp_path / "model")
    damage(model / "model.ts")
    start = time.monotonic()
    result = run_app(APP, ["-i", str(demo_ct.dicom_dir), "-o", str(tmp_path / "out"), "-m", str(model)])
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert check in last_line and "SHA-256" in last_line and "--allow-unverified-model" in last_line
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "out").iterdir()) == []
    assert time.monotonic() - start < 60  # refused at start-up, before any DICOM is read


def test_a_damaged_archive_without_a_card_is_refused_with_one_line_not_a_traceback(demo_ct, tmp_path: Path):
    shutil.copy(MODEL_DIR / "model.ts", tmp_path / "model.ts")
    flip_central_directory(tmp_path / "model.ts")
    result = run_app(APP, ["-i", str(demo_ct.dicom_dir), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model.ts")])
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("spleen_seg_app: error:") and "damaged" in last_line
    assert "Traceback" not in result.stderr and "UnicodeDecodeError" in last_line


@pytest.mark.parametrize("output", ["/proc", "under-a-file"])
def test_an_unusable_output_folder_is_refused_within_a_second(demo_ct, tmp_path: Path, output: str):
    (tmp_path / "a_file").write_text("not a folder")
    target = "/proc" if output == "/proc" else str(tmp_path / "a_file" / "out")  # /proc takes no file, even from root
    start = time.monotonic()
    result = run_app(APP, ["-i", str(demo_ct.dicom_dir), "-o", target])
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"spleen_seg_app: error: output folder {target} is not writable " + (
        "(No such file or directory)" if output == "/proc" else "(Not a directory)"
    )
    assert elapsed < 1.0, elapsed


@requires_dciodvfy
def test_a_rerun_supersedes_the_earlier_result_in_its_series_and_an_unverified_model_is_flagged(demo_ct, previous_result, tmp_path: Path):
    out = copy_of(previous_result, tmp_path / "out")
    earlier = pydicom.dcmread(out / "spleen_seg.dcm", stop_before_pixels=True)
    model = copy_of(MODEL_DIR, tmp_path / "model")
    flip_in_largest_tensor(model / "model.ts")
    args = ["-i", str(demo_ct.dicom_dir), "-o", str(out), "-m", str(model), "--backend", "torch", "--allow-unverified-model"]
    args += ["--result-series-uid", earlier.SeriesInstanceUID, "--supersedes-sop-uid", earlier.SOPInstanceUID]
    result = run_app(APP, args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fails its integrity check" in result.stderr and "running it as unverified" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["integrity"]["status"] == "unverified" and "differs from" in summary["model"]["integrity"]["reason"]
    assert "UNVERIFIED MODEL" in summary["checks"]["flags"]
    assert summary["result"]["supersedes_sop_instance_uid"] == earlier.SOPInstanceUID
    seg = hd.seg.segread(out / "spleen_seg.dcm")
    assert (seg.SeriesInstanceUID, seg.SeriesNumber) == (earlier.SeriesInstanceUID, earlier.SeriesNumber)
    assert seg.SOPInstanceUID == summary["result"]["sop_instance_uid"] != earlier.SOPInstanceUID
    assert f"Supersedes {earlier.SOPInstanceUID}" in seg.ImageComments
    assert seg.ContentDescription in (f"Supersedes {earlier.SOPInstanceUID}", "Supersedes an earlier result (UID in ImageComments)")
    assert "UNVERIFIED MODEL" in seg.SeriesDescription
    assert dciodvfy_errors(out / "spleen_seg.dcm") == []
    assert sorted(p.name for p in out.iterdir()) == ["spleen.stl", "spleen_overlay.png", "spleen_seg.dcm", "spleen_sr.dcm", "summary.json"]
