"""Results a PACS can trust, from the WSI app's command line: a rerun's SEG supersedes the earlier one,
a disk filling mid-write keeps the previous set, and an unusable output folder is refused at once
(non-finite network outputs, no result: tests/apps/test_bad_inputs_wsi.py)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import pytest

from tests.apps.conftest import write_test_classifier
from tests.conftest import REPO_ROOT, run_app
from tests.real_slides import real_dicom_wsi, real_svs
from tests.validators import dciodvfy_errors, requires_dciodvfy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs an app end to end (its own limit: 900 s)
APP = "wsi_metastasis_app"
FAST = ["--mpp", "0.1215", "--workers", "2", "--backend", "torch"]
EARLIER_SERIES = "1.2.826.0.1.3680043.8.498.4242"
EARLIER_SOP = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678"  # 64 characters: goes to ImageComments
FILE_SIZE_LIMIT = 200 * 1024  # above every output of the small DICOM slide but its overlay (about 900 kB)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in folder.iterdir()}


@pytest.fixture(scope="module")
def superseding_run(tmp_path_factory) -> tuple[Path, Path]:
    """The DICOM slide's result as a rerun superseding an earlier one: (output root, model)."""
    root = tmp_path_factory.mktemp("wsi_rerun")
    model = write_test_classifier(root / "model")
    args = ["-i", str(real_dicom_wsi()), "-o", str(root / "out"), "-m", str(model), *FAST]
    result = run_app(APP, [*args, "--result-series-uid", EARLIER_SERIES, "--supersedes-sop-uid", EARLIER_SOP])
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "out", model


@requires_dciodvfy
def test_a_rerun_seg_keeps_the_earlier_series_and_names_the_result_it_supersedes(superseding_run):
    out = superseding_run[0] / real_dicom_wsi().name
    summary = json.loads((out / "summary.json").read_text())
    seg = hd.seg.segread(out / "tumor_seg.dcm")
    assert (seg.SeriesInstanceUID, seg.SeriesNumber) == (EARLIER_SERIES, 901)
    assert summary["result"] == {
        "series_instance_uid": EARLIER_SERIES,
        "sop_instance_uid": seg.SOPInstanceUID,
        "supersedes_sop_instance_uid": EARLIER_SOP,
    }
    assert seg.ContentDescription == "Supersedes an earlier result (UID in ImageComments)"
    assert seg.ImageComments.startswith(f"Supersedes {EARLIER_SOP}")
    assert summary["model"]["integrity"]["status"] == "verified" and summary["flags"] == []
    assert seg.SeriesDescription == "Tumor probability segmentation - NOT FOR CLINICAL USE"
    assert dciodvfy_errors(out / "tumor_seg.dcm") == []


def test_a_disk_filling_mid_write_keeps_the_previous_set_and_records_the_error(superseding_run, tmp_path: Path):
    root = shutil.copytree(superseding_run[0], tmp_path / "out")
    out = root / real_dicom_wsi().name
    before = folder_bytes(out)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "apps" / APP), "-i", str(real_dicom_wsi()), "-o", str(root), "-m", str(superseding_run[1]), *FAST],
        cwd=REPO_ROOT,
        env={**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        preexec_fn=limit,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = json.loads((out / "error.json").read_text())
    assert "cannot write the outputs into" in error["error"] and "overlay.png" in error["error"]
    after = folder_bytes(out)
    assert after.pop("error.json") and after == before  # the previous eight files, byte for byte; no .partial-* folder


def test_one_result_series_for_several_slides_is_refused(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.svs", "b.svs"):
        shutil.copy(real_svs(), folder / name)
    result = run_app(APP, ["-i", str(folder), "-o", str(tmp_path / "out"), "--result-series-uid", "1.2.3", *FAST])
    assert result.returncode == 2
    assert "name one result, and the input holds 2 slides" in result.stderr.strip().splitlines()[-1]


def test_an_unwritable_output_folder_is_refused_within_a_second(tmp_path: Path):
    start = time.monotonic()
    result = run_app(APP, ["-i", str(real_svs()), "-o", "/proc"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("wsi_metastasis_app: error: output folder /proc is not writable")
    assert time.monotonic() - start < 1.0
