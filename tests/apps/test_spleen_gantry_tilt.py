"""The spleen app on a gantry-tilted copy of the demo phantom: every output where the spleen is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from operators.core.metrics import dice_score
from operators.dicom.seg_readback import read_seg_on_source
from testkit.seg_geometry import seg_voxel_points_lps_mm
from tests.conftest import run_app
from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.ct_tilt import resample_phantom, tilted_grid
from training.synthetic.demo_inputs import DEMO_CT_SEED, DEMO_CT_SHAPE_ZYX, DEMO_CT_SPACING_ZYX_MM

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs the app end to end
APP = "spleen_seg_app"
TILT_DEG = 10.0


@pytest.fixture(scope="module")
def tilted_ct(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The demo anatomy (taller, so the tilted planes stay inside it) scanned with a 10-degree gantry tilt."""
    n, rows, columns = DEMO_CT_SHAPE_ZYX
    phantom = make_abdomen_phantom((n + 40, rows, columns), DEMO_CT_SPACING_ZYX_MM, DEMO_CT_SEED)
    grid = tilted_grid(DEMO_CT_SHAPE_ZYX, DEMO_CT_SPACING_ZYX_MM, TILT_DEG, "x")
    hu, truth = resample_phantom(phantom, grid)
    folder = tmp_path_factory.mktemp("tilted") / "dicom"
    grid.write(hu, folder, tilt_deg=TILT_DEG, seed=DEMO_CT_SEED, series_description="Demo phantom, gantry tilt 10")
    return folder, truth


@pytest.fixture(scope="module")
def tilted_run(tilted_ct, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tilted_run")
    result = run_app(APP, ["-i", str(tilted_ct[0]), "-o", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gantry tilt of 10.00 degrees" in result.stderr
    return out, json.loads((out / "summary.json").read_text())


def test_tilt_is_reported_in_the_summary(tilted_run):
    _, summary = tilted_run
    tilt = summary["input"]["gantry_tilt"]
    assert tilt["tilted"] and tilt["angle_deg"] == pytest.approx(TILT_DEG, abs=0.01)
    assert tilt["gantry_detector_tilt_deg"] == pytest.approx(TILT_DEG)
    assert "sheared" in tilt["handling"]


def test_seg_of_the_tilted_series_matches_the_truth(tilted_run, tilted_ct):
    out, summary = tilted_run
    mask = read_seg_on_source(out / "spleen_seg.dcm", summary["input"]["sop_instance_uids"])
    assert dice_score(mask, tilted_ct[1]) >= 0.85


def test_stl_centroid_volume_and_summary_extent_sit_on_the_seg_voxels(tilted_run):
    out, summary = tilted_run
    voxels = seg_voxel_points_lps_mm(out / "spleen_seg.dcm")
    surface = trimesh.load(out / "spleen.stl")
    assert surface.is_watertight
    assert np.linalg.norm(surface.center_mass - voxels.mean(axis=0)) < 1.5
    assert surface.volume / 1000 == pytest.approx(summary["spleen"]["volume_ml"], rel=0.02)
    np.testing.assert_allclose(summary["spleen"]["centroid_lps_mm"], voxels.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(summary["spleen"]["bounding_box_lps_mm"]["min"], voxels.min(axis=0), atol=0.01)
    np.testing.assert_allclose(summary["spleen"]["bounding_box_lps_mm"]["max"], voxels.max(axis=0), atol=0.01)


def test_refuse_mode_exits_2_naming_the_tilt_and_writes_nothing(tilted_ct, tmp_path: Path):
    out = tmp_path / "out"
    result = run_app(APP, ["-i", str(tilted_ct[0]), "-o", str(out), "--on-gantry-tilt", "refuse"])
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert "gantry tilt of 10.0 degrees" in last_line and "Traceback" not in result.stderr
    assert not (out / "spleen_seg.dcm").exists() and not (out / "summary.json").exists()
