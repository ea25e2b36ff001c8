from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from operators.core.errors import InvalidSeriesError
from operators.ct.series_selector import select_ct_series
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import scan_dicom_folder
from testkit.dicom_factories import ct_slice, save_all


def write_series(folder: Path, positions, slope=1.0, intercept=-1024.0) -> list[Path]:
    uid = generate_uid()
    slices = [
        ct_slice(
            z, series_uid=uid, instance_number=len(positions) - i, pixels=np.full((8, 8), 100 * i + 10), slope=slope, intercept=intercept
        )
        for i, z in enumerate(positions)
    ]
    return save_all(slices, folder)


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (2.0, -1000.0), (0.5, 0.0)])
def test_build_applies_rescale_slope_and_intercept(tmp_path: Path, slope, intercept):
    write_series(tmp_path, [0, 2, 4, 6, 8], slope, intercept)
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path)))
    np.testing.assert_allclose(volume.hu_zyx[:, 0, 0], [(100 * i + 10) * slope + intercept for i in range(5)])


def test_build_orders_slices_by_position_and_keeps_datasets_in_the_same_order(tmp_path: Path):
    write_series(tmp_path, [8, 0, 4, 2, 6])  # stored pixel value encodes list order
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path)))
    np.testing.assert_allclose(volume.hu_zyx[:, 0, 0] + 1024, [110, 310, 210, 410, 10])
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.source_datasets]
    assert z == sorted(z)
    assert "PixelData" not in volume.source_datasets[0]
    np.testing.assert_allclose(volume.spacing_xyz_mm, (0.8, 0.8, 2.0))
    assert volume.voxel_volume_mm3 == pytest.approx(0.8 * 0.8 * 2.0)


def test_build_skips_a_truncated_copy_read_before_the_good_file(tmp_path: Path):
    paths = write_series(tmp_path / "series", [0, 2, 4, 6, 8])
    broken = tmp_path / "series" / "a_truncated_copy_of_slice_2.dcm"
    broken.write_bytes(paths[2].read_bytes()[:-50])
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path)))
    assert volume.hu_zyx.shape == (5, 8, 8)


def test_build_refuses_the_gap_left_by_a_truncated_slice_and_names_the_file(tmp_path: Path):
    paths = write_series(tmp_path, [0, 2, 4, 6, 8, 10])
    paths[3].write_bytes(paths[3].read_bytes()[:-50])
    with pytest.raises(InvalidSeriesError, match="refused, not resampled: uneven slice spacing") as raised:
        build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path)))
    assert f"; 1 slice unreadable: {paths[3].name} at [-3.0, -3.0, 6.0] mm (pixel data unreadable" in str(raised.value)


@pytest.mark.parametrize("edge", [0, 5], ids=["first", "last"])
def test_build_drops_a_truncated_edge_slice_and_records_it(tmp_path: Path, edge: int):
    paths = write_series(tmp_path, [0, 2, 4, 6, 8, 10])
    paths[edge].write_bytes(paths[edge].read_bytes()[:-50])
    header = pydicom.dcmread(paths[edge], stop_before_pixels=True)
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path)))
    assert volume.hu_zyx.shape == (5, 8, 8)
    [dropped] = volume.dropped_slices
    assert (dropped.sop_instance_uid, dropped.path, dropped.image_position_patient_mm) == (
        header.SOPInstanceUID,
        paths[edge],
        (-3.0, -3.0, 2.0 * edge),
    )
    assert dropped.reason.startswith("pixel data unreadable")
    assert dropped.as_json()["file"] == paths[edge].name
    assert header.SOPInstanceUID not in {ds.SOPInstanceUID for ds in volume.source_datasets}


def test_a_truncated_copy_of_a_slice_read_elsewhere_is_not_a_dropped_slice(tmp_path: Path):
    paths = write_series(tmp_path / "series", [0, 2, 4, 6, 8])
    (tmp_path / "series" / "a_copy.dcm").write_bytes(paths[2].read_bytes()[:-50])
    assert build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path))).dropped_slices == ()
