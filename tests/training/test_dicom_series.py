"""The CT series writer: IOD conformance (dciodvfy), pixel round trip, geometry read back by pydicom and SimpleITK."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut

from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.dicom_series import centred_origin_lps_mm, write_ct_series

DCIODVFY = shutil.which("dciodvfy") or ("/usr/bin/dciodvfy" if Path("/usr/bin/dciodvfy").exists() else None)
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")

SPACING = (2.5, 1.5, 1.25)  # z, y, x mm


@pytest.fixture(scope="module")
def phantom_hu() -> np.ndarray:
    return make_abdomen_phantom((6, 40, 48), SPACING, seed=5).hu_zyx


def _head_like(rng_seed: int = 0) -> np.ndarray:
    """int16 HU with scanner padding below -1024 (needs the signed encoding)."""
    hu = np.random.default_rng(rng_seed).integers(-1024, 3000, size=(4, 24, 20)).astype(np.int16)
    hu[:, :2, :] = -3024
    return hu


@pytest.fixture(params=["phantom", "signed"])
def volume(request, phantom_hu) -> np.ndarray:
    return phantom_hu if request.param == "phantom" else _head_like()


def _read(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


@needs_dciodvfy
def test_dciodvfy_reports_no_errors(volume, tmp_path):
    paths = write_ct_series(volume, SPACING, tmp_path, seed=1)
    for path in (paths[0], paths[-1]):
        result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Error" not in result.stderr, result.stderr


def test_pixels_round_trip_exactly(volume, tmp_path):
    datasets = _read(write_ct_series(volume, SPACING, tmp_path, seed=1))
    restored = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets])
    assert np.array_equal(restored, volume)
    assert datasets[0].file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    if volume.min() >= -1024:
        assert (datasets[0].PixelRepresentation, float(datasets[0].RescaleIntercept)) == (0, -1024.0)
    else:
        assert (datasets[0].PixelRepresentation, float(datasets[0].RescaleIntercept)) == (1, 0.0)


def test_geometry_attributes(phantom_hu, tmp_path):
    origin = (-30.0, -25.0, 100.0)
    datasets = _read(write_ct_series(phantom_hu, SPACING, tmp_path, origin_lps_mm=origin, seed=2))
    for k, ds in enumerate(datasets):
        assert ds.InstanceNumber == k + 1
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-30.0, -25.0, 100.0 + k * SPACING[0]])
        assert float(ds.SliceLocation) == pytest.approx(100.0 + k * SPACING[0])
        assert [float(v) for v in ds.PixelSpacing] == [SPACING[1], SPACING[2]]
        assert float(ds.SliceThickness) == SPACING[0]
        assert (ds.Rows, ds.Columns) == phantom_hu.shape[1:]
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in datasets}) == 1


def test_simpleitk_reads_the_series_with_the_same_geometry(phantom_hu, tmp_path):
    write_ct_series(phantom_hu, SPACING, tmp_path / "series", seed=3)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    image = reader.Execute()
    assert image.GetSpacing() == pytest.approx((SPACING[2], SPACING[1], SPACING[0]))
    assert image.GetOrigin() == pytest.approx(centred_origin_lps_mm(phantom_hu.shape, SPACING))
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert np.array_equal(sitk.GetArrayFromImage(image), phantom_hu)


def test_seed_makes_files_reproducible_and_uids_overridable(phantom_hu, tmp_path):
    first = write_ct_series(phantom_hu, SPACING, tmp_path / "a", seed=9)
    second = write_ct_series(phantom_hu, SPACING, tmp_path / "b", seed=9)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    other = _read(write_ct_series(phantom_hu, SPACING, tmp_path / "c", seed=10))
    assert other[0].SeriesInstanceUID != pydicom.dcmread(first[0]).SeriesInstanceUID
    given = _read(
        write_ct_series(
            phantom_hu,
            SPACING,
            tmp_path / "d",
            study_instance_uid="1.2.3.4",
            series_instance_uid="1.2.3.4.5",
            series_number=7,
            patient_id="X1",
            file_name_pattern="slice_{index:03d}.dcm",
        )
    )
    assert (given[0].StudyInstanceUID, given[0].SeriesInstanceUID, given[0].SeriesNumber) == ("1.2.3.4", "1.2.3.4.5", 7)
    assert given[0].PatientID == "X1"
    assert sorted(p.name for p in (tmp_path / "d").iterdir())[0] == "slice_000.dcm"


@pytest.mark.parametrize(
    ("hu", "spacing", "error"),
    [
        (np.zeros((4, 4), np.int16), SPACING, ValueError),
        (np.zeros((2, 4, 4), np.float32), SPACING, TypeError),
        (np.zeros((2, 4, 4), np.int16), (1.0, 0.0, 1.0), ValueError),
        (np.full((2, 4, 4), 40000, np.int32), SPACING, ValueError),
    ],
)
def test_rejects_bad_input(hu, spacing, error, tmp_path):
    with pytest.raises(error):
        write_ct_series(hu, spacing, tmp_path)
