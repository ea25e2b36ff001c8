"""Multi-frame CT (Enhanced CT, Legacy Converted Enhanced CT) read as one series, checked against highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from operators.core.errors import InvalidSeriesError, NoUsableSeriesError
from operators.ct.enhanced_ct import frame_headers, is_multiframe_ct
from operators.ct.seg_writer import build_binary_seg
from operators.ct.series_selector import SeriesRules, SeriesSelection, rejection_reason, select_ct_series, slice_headers
from operators.ct.summary import mask_extent_lps_mm
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import DicomInstance, DicomSeries, scan_dicom_folder
from operators.dicom.seg import EquipmentSpec, SegmentSpec
from operators.dicom.seg_readback import read_seg_on_source
from testkit.seg_geometry import seg_voxel_points_lps_mm
from testkit.transcode import to_legacy_converted
from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.dicom_series import write_ct_series

SEGMENT = SegmentSpec("Spleen", codes.SCT.AnatomicalStructure, codes.SCT.Spleen, "threshold (test)", "1")
EQUIPMENT = EquipmentSpec("test", "test", "1", "test")


@pytest.fixture(scope="module")
def single_frame_series(tmp_path_factory) -> Path:
    phantom = make_abdomen_phantom((10, 64, 64), (2.5, 5.0, 5.0), seed=5)
    folder = tmp_path_factory.mktemp("single") / "ct"
    write_ct_series(phantom.hu_zyx, (2.5, 5.0, 5.0), folder, seed=5)
    return folder


def test_real_enhanced_ct_frames_match_highdicom_volume():
    path = get_testdata_file("eCT_Supplemental.dcm")  # a real Enhanced CT (two DERIVED perfusion frames)
    scan = scan_dicom_folder(Path(path))
    series = scan.series[0]
    assert is_multiframe_ct(series.first) and len(slice_headers(series)) == 2
    assert "ImageType is ['DERIVED/PRIMARY']" in rejection_reason(series, SeriesRules(min_slices=2))
    volume = build_ct_volume(SeriesSelection(series, 10.0, ()), SeriesRules(min_slices=2))
    reference = hd.imread(path).get_volume(apply_real_world_transform=False, apply_modality_transform=True)  # (slice, row, column)
    # The normal (row x column) points to -z here, so the app's stack runs frame 2, frame 1; highdicom keeps frame order.
    assert volume.source_images == (series.first,) and volume.source_frame_numbers == (2, 1)
    np.testing.assert_allclose(volume.in_source_order(volume.hu_zyx), reference.array, atol=1e-3)
    np.testing.assert_allclose(volume.affine_lps[:3, :2], reference.affine[:3, [2, 1]], atol=1e-5)  # column, row steps
    for index, frame in enumerate(volume.source_frame_numbers):
        np.testing.assert_allclose(volume.affine_lps @ [0, 0, index, 1], reference.affine @ [frame - 1, 0, 0, 1], atol=1e-4)


@pytest.mark.parametrize("order", [None, [3, 0, 7, 1, 9, 2, 8, 4, 6, 5]], ids=["in-order", "frames-shuffled"])
def test_legacy_converted_ct_gives_the_single_frame_volume(single_frame_series, tmp_path: Path, order):
    reference = build_ct_volume(select_ct_series(scan_dicom_folder(single_frame_series)))
    path = to_legacy_converted(single_frame_series, tmp_path / "lce" / "ct.dcm", order)
    selection = select_ct_series(scan_dicom_folder(path.parent))
    volume = build_ct_volume(selection)
    np.testing.assert_array_equal(volume.hu_zyx, reference.hu_zyx)
    np.testing.assert_allclose(volume.affine_lps, reference.affine_lps, atol=1e-6)
    frames = volume.in_source_order(volume.hu_zyx)  # back in the instance's frame order
    np.testing.assert_array_equal(frames, pydicom.dcmread(path).pixel_array.astype(np.float32) - 1024)
    assert selection.slice_spacing_mm == pytest.approx(2.5)


def test_frames_inherit_shared_groups_and_keep_their_own(single_frame_series, tmp_path: Path):
    path = to_legacy_converted(single_frame_series, tmp_path / "ct.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    frames = frame_headers(header)
    assert len(frames) == int(header.NumberOfFrames)
    positions = [tuple(float(v) for v in f.ImagePositionPatient) for f in frames]
    assert positions == [
        tuple(float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient) for g in header.PerFrameFunctionalGroupsSequence
    ]
    assert all(f.SOPInstanceUID == header.SOPInstanceUID and "PixelSpacing" in f and "ImageOrientationPatient" in f for f in frames)


def test_inconsistent_frames_are_refused_with_the_reason(single_frame_series, tmp_path: Path):
    path = to_legacy_converted(single_frame_series, tmp_path / "lce" / "ct.dcm")
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence[0].ImagePositionPatient[2] += 7.0  # a frame out of place
    ds.save_as(path)
    with pytest.raises(NoUsableSeriesError, match="uneven slice spacing"):
        select_ct_series(scan_dicom_folder(path.parent))


def test_two_multiframe_instances_in_one_series_are_refused(single_frame_series, tmp_path: Path):
    first = to_legacy_converted(single_frame_series, tmp_path / "lce" / "a.dcm")
    second = pydicom.dcmread(first)
    second.SOPInstanceUID = generate_uid()
    second.save_as(tmp_path / "lce" / "b.dcm")
    with pytest.raises(NoUsableSeriesError, match="2 multi-frame CT instances in one series"):
        select_ct_series(scan_dicom_folder(tmp_path / "lce"))


def test_truncated_multiframe_pixel_data_is_a_named_error(single_frame_series, tmp_path: Path):
    path = to_legacy_converted(single_frame_series, tmp_path / "lce" / "ct.dcm")
    selection = select_ct_series(scan_dicom_folder(path.parent))
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(InvalidSeriesError, match="pixel data"):
        build_ct_volume(selection)


def test_seg_of_a_multiframe_source_references_its_frames(single_frame_series, tmp_path: Path):
    path = to_legacy_converted(single_frame_series, tmp_path / "lce" / "ct.dcm", [3, 0, 7, 1, 9, 2, 8, 4, 6, 5])
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(path.parent)))
    mask = (volume.hu_zyx > 0).astype(np.uint8)
    seg_path = tmp_path / "seg.dcm"
    build_binary_seg(volume.source_images, volume.in_source_order(mask), SEGMENT, EQUIPMENT).save_as(seg_path)
    seg = pydicom.dcmread(seg_path)
    references = [
        (
            str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
            int(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber),
        )
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert references == [(volume.multiframe_source.SOPInstanceUID, n) for n in range(1, 11)]
    np.testing.assert_array_equal(
        read_seg_on_source(seg_path, [volume.multiframe_source.SOPInstanceUID], source_frame_numbers=volume.source_frame_numbers), mask
    )
    voxels = seg_voxel_points_lps_mm(seg_path)  # through the SEG's own frame positions
    np.testing.assert_allclose(voxels.mean(axis=0), mask_extent_lps_mm(mask, volume.affine_lps)["centroid_lps_mm"], atol=0.01)


@pytest.mark.parametrize(
    ("number_of_frames", "expected"),
    [
        (10, None),
        (1_000_000_000, "NumberOfFrames is 1000000000 but PerFrameFunctionalGroupsSequence has 10 items"),
        (9, "NumberOfFrames is 9 but PerFrameFunctionalGroupsSequence has 10 items"),
        (0, "NumberOfFrames is 0 but PerFrameFunctionalGroupsSequence has 10 items"),
    ],
    ids=["consistent", "a-billion", "one-short", "zero"],
)
def test_a_frame_count_the_functional_groups_do_not_hold_is_refused_before_any_frame_header(
    single_frame_series, tmp_path: Path, number_of_frames, expected
):
    path = to_legacy_converted(single_frame_series, tmp_path / "lce" / "ct.dcm")
    with pydicom.config.disable_value_validation():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        header.NumberOfFrames = number_of_frames
    reason = rejection_reason(DicomSeries(header.SeriesInstanceUID, (DicomInstance(path, header),)), SeriesRules())
    assert reason is None if expected is None else expected in reason
