"""The spleen app on the demo series as PACS send it: compressed transfer syntaxes and Enhanced CT.

Lossless inputs must give the very mask of the uncompressed series (read back from each run's SEG).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

from operators.core.metrics import dice_score
from operators.dicom.seg_readback import read_seg_on_source
from testkit.transcode import to_legacy_converted, transcode_series
from tests.conftest import run_app
from tests.validators import dciodvfy_errors

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs the app end to end
APP = "spleen_seg_app"


def run(input_dir: Path, out: Path) -> tuple[np.ndarray, dict]:
    result = run_app(APP, ["-i", str(input_dir), "-o", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    source = summary["input"]
    mask = read_seg_on_source(out / "spleen_seg.dcm", source["sop_instance_uids"], source_frame_numbers=source["source_frame_numbers"])
    return mask, summary


@pytest.fixture(scope="module")
def uncompressed_run(demo_ct, tmp_path_factory) -> tuple[np.ndarray, dict]:
    return run(demo_ct.dicom_dir, tmp_path_factory.mktemp("uncompressed"))


@pytest.mark.parametrize("syntax", [uid.JPEGLosslessSV1, uid.JPEG2000Lossless], ids=["jpeg-lossless-70", "jpeg2000-lossless"])
def test_a_lossless_series_gives_the_uncompressed_mask(demo_ct, uncompressed_run, tmp_path: Path, syntax):
    transcode_series(demo_ct.dicom_dir, tmp_path / "dicom", syntax)
    mask, summary = run(tmp_path / "dicom", tmp_path / "out")
    np.testing.assert_array_equal(mask, uncompressed_run[0])
    assert summary["spleen"]["volume_ml"] == uncompressed_run[1]["spleen"]["volume_ml"]


def test_a_lossy_jpeg_extended_series_is_segmented_close_to_the_uncompressed_one(demo_ct, uncompressed_run, tmp_path: Path):
    transcode_series(demo_ct.dicom_dir, tmp_path / "dicom", uid.JPEGExtended12Bit)  # DCMTK: DERIVED, "Lossy Compression"
    mask, summary = run(tmp_path / "dicom", tmp_path / "out")
    assert dice_score(mask, uncompressed_run[0]) > 0.97
    assert summary["input"]["lossy_compression"] == {"lossy": True, "slices": 80, "methods": ["ISO_10918_1"]}
    assert not uncompressed_run[1]["input"]["lossy_compression"]["lossy"]


def test_a_legacy_converted_enhanced_ct_gives_the_single_frame_mask(demo_ct, uncompressed_run, tmp_path: Path):
    order = list(np.random.default_rng(0).permutation(80))  # frames out of slice order
    path = to_legacy_converted(demo_ct.dicom_dir, tmp_path / "dicom" / "enhanced_ct.dcm", order)
    mask, summary = run(path.parent, tmp_path / "out")
    np.testing.assert_array_equal(mask, uncompressed_run[0])
    assert summary["input"]["sop_instance_uids"] == [pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID]
    assert sorted(summary["input"]["source_frame_numbers"]) == list(range(1, 81))
    assert dciodvfy_errors(tmp_path / "out" / "spleen_seg.dcm") == []
