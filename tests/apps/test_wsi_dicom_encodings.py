"""The WSI app on DICOM WSI in other tile encodings than the default JPEG: one run over a folder holding a JPEG-LS slide
(read through wsidicom, since OpenSlide 4 does not decode JPEG-LS) and a slide in a syntax no backend decodes.

The reader's pixels for every encoding are checked in tests/operators/wsi/slide/test_dicom_encodings.py; this run
checks that the app reads a wsidicom slide end to end (its decoding threads reopen the slide) and refuses the other
one in one line naming its transfer syntax, while still processing the good one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID

from tests.apps.test_wsi_metastasis_app import FAST, summary_of
from tests.conftest import run_app
from tests.real_slides import encoded_dicom_wsi

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
APP = "wsi_metastasis_app"
PART2 = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2 Multi-component (Lossless Only): neither OpenSlide nor wsidicom decodes it


def relabelled_copy(source: Path, target: Path, syntax: str) -> Path:
    target.mkdir(parents=True)
    for file in sorted(source.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        dataset.file_meta.TransferSyntaxUID = UID(syntax)
        dataset.save_as(target / file.name, enforce_file_format=True)
    return target


def test_a_jpeg_ls_slide_is_read_and_a_slide_in_an_undecodable_syntax_is_refused_naming_it(classifier, tmp_path: Path):
    slides = tmp_path / "in"
    shutil.copytree(encoded_dicom_wsi("jpegls-lossless"), slides / "jpegls")
    relabelled_copy(encoded_dicom_wsi("jpeg2000-lossless"), slides / "part2", PART2)
    out = tmp_path / "out"
    result = run_app(APP, ["-i", str(slides), "-o", str(out), "-m", str(classifier), *FAST, "--slide-backend", "auto"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("wsi_metastasis_app: error: 1 of 2 slides failed")
    error = json.loads((out / "part2" / "error.json").read_text())["error"]
    assert "\n" not in error
    assert f"wsidicom has no decoder for JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only) ({PART2})" in error
    assert sorted(p.name for p in (out / "part2").iterdir()) == ["error.json"]
    summary = summary_of(out / "jpegls")
    assert summary["slide"]["dicom"] is True and summary["slide"]["reader"] == "wsidicom"
    assert summary["slide"]["mpp"] == pytest.approx(0.1215)
    assert {"dicom_seg", "detections_csv", "probability_map_npy", "geojson"} <= set(summary["outputs"])
    seg = pydicom.dcmread(out / "jpegls" / "tumor_seg.dcm", stop_before_pixels=True)
    assert seg.StudyInstanceUID == pydicom.dcmread(next((slides / "jpegls").glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
