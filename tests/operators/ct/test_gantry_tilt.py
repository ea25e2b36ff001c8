"""Gantry-tilted series end to end through the geometry: selection, volume, STL, SEG and summary.

The truth is independent of the app's affine: a world-space ellipsoid sampled on each slice's own
ImagePositionPatient, and the SEG's voxels placed through the SEG's own per-frame positions as a
DICOM reader (pydicom, no project code) finds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import trimesh
from pydicom.sr.codedict import codes

from operators.core.errors import NoUsableSeriesError
from operators.ct.seg_writer import build_binary_seg
from operators.ct.series_selector import SeriesRules, select_ct_series
from operators.ct.stl_writer import write_mask_stl
from operators.ct.summary import gantry_tilt_summary, mask_extent_lps_mm
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import scan_dicom_folder
from operators.dicom.seg import EquipmentSpec, SegmentSpec
from testkit.seg_geometry import seg_voxel_points_lps_mm
from training.synthetic.ct_tilt import TiltedGrid, tilted_grid

CENTRE_LPS_MM = np.array([12.0, -8.0, 5.0])
RADII_MM = np.array([42.0, 30.0, 38.0])
SEGMENT = SegmentSpec("Spleen", codes.SCT.AnatomicalStructure, codes.SCT.Spleen, "threshold (test)", "1")
EQUIPMENT = EquipmentSpec("test", "test", "1", "test")

TILTS = [
    pytest.param(5.0, "x", id="5-about-x"),
    pytest.param(10.0, "x", id="10-about-x"),
    pytest.param(25.0, "x", id="25-about-x"),
    pytest.param(-10.0, "x", id="minus-10-about-x"),
    pytest.param(-25.0, "x", id="minus-25-about-x"),
    pytest.param(10.0, "y", id="10-about-y"),
    pytest.param(-25.0, "y", id="minus-25-about-y"),
]


def write_ellipsoid_series(grid: TiltedGrid, folder: Path, tilt_deg: float | None) -> None:
    hu = np.full(grid.shape_zyx, -1000, np.int16)
    for k in range(grid.shape_zyx[0]):
        inside = (((grid.slice_points_lps_mm(k) - CENTRE_LPS_MM) / RADII_MM) ** 2).sum(axis=-1) <= 1
        hu[k][inside] = 100
    grid.write(hu, folder, tilt_deg=tilt_deg, seed=7)


def tilted_case(tmp_path: Path, tilt_deg: float, axis: str):
    grid = tilted_grid((60, 150, 150), (2.5, 0.9, 0.9), tilt_deg, axis)
    write_ellipsoid_series(grid, tmp_path / "ct", tilt_deg)
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))
    return grid, volume, (volume.hu_zyx > 0).astype(np.uint8)


@pytest.mark.parametrize(("tilt_deg", "axis"), TILTS)
def test_stl_of_a_tilted_series_sits_on_the_seg_voxels(tmp_path: Path, tilt_deg: float, axis: str):
    grid, volume, mask = tilted_case(tmp_path, tilt_deg, axis)
    assert volume.gantry_tilted and volume.gantry_tilt_deg == pytest.approx(abs(tilt_deg), abs=0.01)

    seg_path = tmp_path / "seg.dcm"
    build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT).save_as(seg_path)
    voxels = seg_voxel_points_lps_mm(seg_path)
    surface = trimesh.load(write_mask_stl(mask, volume.affine_lps, tmp_path / "organ.stl"))

    assert surface.is_watertight and surface.volume > 0
    assert np.linalg.norm(surface.center_mass - voxels.mean(axis=0)) < 1.5
    assert np.linalg.norm(voxels.mean(axis=0) - CENTRE_LPS_MM) < 1.5  # the truth sampled where the scanner put the slices
    separation_mm = abs(float(grid.slice_step_lps_mm @ grid.normal))  # slices lie step * cos(tilt) apart
    voxel_mm3 = grid.row_spacing_mm * grid.column_spacing_mm * separation_mm
    assert surface.volume == pytest.approx(len(voxels) * voxel_mm3, rel=0.02)
    assert surface.volume == pytest.approx(mask.sum() * volume.voxel_volume_mm3, rel=0.02)
    half_voxel = 0.5 * np.linalg.norm(volume.affine_lps[:3, :3], axis=0).max()
    assert np.all(voxels >= surface.bounds[0] - half_voxel) and np.all(voxels <= surface.bounds[1] + half_voxel)

    extent = mask_extent_lps_mm(mask, volume.affine_lps)
    np.testing.assert_allclose(extent["centroid_lps_mm"], voxels.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(extent["bounding_box_lps_mm"]["min"], voxels.min(axis=0), atol=0.01)
    np.testing.assert_allclose(extent["bounding_box_lps_mm"]["max"], voxels.max(axis=0), atol=0.01)
    report = gantry_tilt_summary(volume)
    assert report["tilted"] and report["angle_deg"] == pytest.approx(abs(tilt_deg), abs=0.01)
    assert report["gantry_detector_tilt_deg"] == pytest.approx(tilt_deg)


def test_an_oblique_series_stepping_along_its_normal_is_not_tilted(tmp_path: Path):
    tilted = tilted_grid((40, 120, 120), (2.5, 0.9, 0.9), 15.0, "x")
    separation = 2.5
    grid = TiltedGrid(
        tilted.shape_zyx,
        tilted.row_direction,
        tilted.column_direction,
        0.9,
        0.9,
        tilted.normal * separation,  # positions along the tilted normal: oblique, but an orthogonal grid
        CENTRE_LPS_MM - (59.5 * 0.9 * (tilted.row_direction + tilted.column_direction) + 19.5 * separation * tilted.normal),
    )
    write_ellipsoid_series(grid, tmp_path / "ct", None)
    for policy in ("correct", "refuse"):
        volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct"), SeriesRules(on_gantry_tilt=policy)))
        assert not volume.gantry_tilted and volume.gantry_tilt_deg < 0.01
    np.testing.assert_allclose(volume.affine_lps[:3, 2], tilted.normal * separation, atol=1e-5)
    assert volume.voxel_volume_mm3 == pytest.approx(0.9 * 0.9 * separation, rel=1e-5)
    assert gantry_tilt_summary(volume) == {"angle_deg": 0.0, "tilted": False, "gantry_detector_tilt_deg": None, "handling": None}


@pytest.mark.parametrize(("tilt_deg", "axis"), [(10.0, "x"), (-25.0, "y")])
def test_refuse_mode_names_the_tilt_and_its_angle(tmp_path: Path, tilt_deg: float, axis: str):
    write_ellipsoid_series(tilted_grid((20, 40, 40), (2.5, 0.9, 0.9), tilt_deg, axis), tmp_path / "ct", tilt_deg)
    with pytest.raises(NoUsableSeriesError, match=rf"gantry tilt of {abs(tilt_deg):.1f} degrees.*--on-gantry-tilt refuse"):
        select_ct_series(scan_dicom_folder(tmp_path / "ct"), SeriesRules(on_gantry_tilt="refuse"))


def test_a_tilt_below_the_tolerance_is_rounding_and_passes_refuse_mode(tmp_path: Path):
    write_ellipsoid_series(tilted_grid((20, 40, 40), (2.5, 0.9, 0.9), 0.3, "x"), tmp_path / "ct", None)
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct"), SeriesRules(on_gantry_tilt="refuse")))
    assert not volume.gantry_tilted and volume.gantry_tilt_deg == pytest.approx(0.3, abs=0.01)


def test_a_series_whose_in_plane_offset_changes_is_refused(tmp_path: Path):
    write_ellipsoid_series(tilted_grid((20, 40, 40), (2.5, 0.9, 0.9), 10.0, "x"), tmp_path / "ct", 10.0)
    for path in sorted((tmp_path / "ct").glob("*.dcm"))[10:]:  # a second block, moved 5 mm along x
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 5.0, *ds.ImagePositionPatient[1:]]
        ds.save_as(path)
    with pytest.raises(NoUsableSeriesError, match="slice positions do not lie on one line"):
        select_ct_series(scan_dicom_folder(tmp_path / "ct"))


def test_rules_refuse_an_unknown_policy():
    with pytest.raises(ValueError, match="on_gantry_tilt"):
        SeriesRules(on_gantry_tilt="ignore")
