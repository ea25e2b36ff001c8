from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from operators.ct.seg_writer import build_binary_seg
from operators.ct.series_selector import select_ct_series
from operators.ct.volume import build_ct_volume
from operators.dicom.result_texts import SLICES_DROPPED_FLAG, dropped_slices_note
from operators.dicom.scan import scan_dicom_folder
from operators.dicom.seg import EquipmentSpec, ResultSeries, SegmentSpec, seg_series_description, write_seg
from testkit.dicom_factories import ct_stack, save_all
from tests.validators import dciodvfy_errors, requires_dciodvfy

SEGMENT = SegmentSpec("Spleen", codes.SCT.AnatomicalStructure, codes.SCT.Spleen, "Spleen CT segmentation (test)", "0.1.0")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "spleen_seg_app", "0.1.0", "test-host")


@pytest.fixture
def volume(tmp_path: Path):
    save_all(ct_stack([6.0, 0.0, 4.0, 2.0, 8.0], rows=16, columns=12), tmp_path / "ct")
    return build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))


def mask_with_empty_slices(shape) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 4:9, 3:7] = 1  # slices 0, 3 and 4 are empty
    return mask


def test_seg_has_one_frame_per_source_slice_at_its_position(volume):
    mask = mask_with_empty_slices(volume.hu_zyx.shape)
    seg = build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT)
    assert seg.NumberOfFrames == len(volume.source_datasets)
    frame_positions = [
        tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient) for f in seg.PerFrameFunctionalGroupsSequence
    ]
    source_positions = {tuple(float(v) for v in ds.ImagePositionPatient) for ds in volume.source_datasets}
    assert set(frame_positions) == source_positions


def test_seg_reads_back_with_highdicom_to_the_same_mask(volume, tmp_path: Path):
    mask = mask_with_empty_slices(volume.hu_zyx.shape)
    path = write_seg(build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT), tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    source_uids = [ds.SOPInstanceUID for ds in volume.source_datasets]
    readback = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, segment_numbers=[1])[..., 0]
    np.testing.assert_array_equal(readback, mask)
    description = seg.get_segment_description(1)
    assert description.segmented_property_type == codes.SCT.Spleen
    assert description.algorithm_identification[0].AlgorithmName == SEGMENT.algorithm_name
    assert description.algorithm_identification[0].AlgorithmVersion == SEGMENT.algorithm_version
    assert "NOT FOR CLINICAL USE" in seg.SeriesDescription
    assert seg.Manufacturer == "clinical-ai-apps"


@requires_dciodvfy
@pytest.mark.parametrize("content", ["partial", "empty", "full"])
def test_seg_passes_dciodvfy(volume, tmp_path: Path, content):
    mask = {"partial": mask_with_empty_slices, "empty": lambda s: np.zeros(s, np.uint8), "full": lambda s: np.ones(s, np.uint8)}[content](
        volume.hu_zyx.shape
    )
    path = write_seg(build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT), tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == []


def test_seg_refuses_a_mask_of_another_length(volume):
    with pytest.raises(ValueError, match="slices"):
        build_binary_seg(volume.source_datasets, np.zeros((3, 16, 12), np.uint8), SEGMENT, EQUIPMENT)


@pytest.mark.parametrize("label", ["Spleen", "A very long segment label that would overflow the sixty-four characters"])
def test_series_description_warns_and_fits_the_vr(label):
    description = seg_series_description(label)
    assert len(description) <= 64 and description.startswith(label[:10])
    if len(label) < 30:
        assert description.endswith("NOT FOR CLINICAL USE")


@requires_dciodvfy
@pytest.mark.parametrize("supersedes", ["1.2.3.4.5", "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678"])
def test_a_superseding_seg_keeps_the_series_names_the_earlier_result_and_stays_valid(volume, tmp_path: Path, supersedes):
    mask = mask_with_empty_slices(volume.hu_zyx.shape)
    result = ResultSeries.new("1.2.826.0.1.3680043.8.498.777", supersedes)
    path = write_seg(
        build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT, result=result, flags=("IMPLAUSIBLE VOLUME",)),
        tmp_path / "seg.dcm",
    )
    seg = hd.seg.segread(path)
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID, seg.SeriesNumber) == (result.series_instance_uid, result.sop_instance_uid, 900)
    assert f"Supersedes {supersedes}" in seg.ImageComments
    assert seg.ContentDescription == f"Supersedes {supersedes}" or "ImageComments" in seg.ContentDescription
    assert seg.SeriesDescription == "Spleen - IMPLAUSIBLE VOLUME - NOT FOR CLINICAL USE"
    assert dciodvfy_errors(path) == []


@requires_dciodvfy
def test_a_seg_of_a_volume_that_dropped_an_edge_slice_says_so_when_read_back(tmp_path: Path):
    paths = save_all(ct_stack([0.0, 2.0, 4.0, 6.0, 8.0, 10.0], rows=16, columns=12), tmp_path / "ct")
    paths[-1].write_bytes(paths[-1].read_bytes()[:-50])  # truncated pixel data at the top edge
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))
    dropped = [(d.sop_instance_uid, d.image_position_patient_mm, d.reason) for d in volume.dropped_slices]
    note = dropped_slices_note(len(volume.source_datasets), dropped)
    mask = mask_with_empty_slices(volume.hu_zyx.shape)
    seg = build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT, flags=(SLICES_DROPPED_FLAG,), note=note)
    path = write_seg(seg, tmp_path / "seg.dcm")
    read = hd.seg.segread(path)
    assert read.SeriesDescription == "Spleen - SLICES DROPPED - NOT FOR CLINICAL USE"
    assert read.ImageComments.startswith("Covers 5 of the 6 slices of the source series")
    assert f"{volume.dropped_slices[0].sop_instance_uid} at (-3.00, -3.00, 10.00) mm: pixel data unreadable" in read.ImageComments
    assert read.NumberOfFrames == 5
    assert dciodvfy_errors(path) == []
