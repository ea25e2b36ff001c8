from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from operators.dicom.seg import (
    EquipmentSpec,
    SegmentSpec,
    new_seg_series_arguments,
    segment_description,
    with_empty_type2_attributes,
    write_seg,
)
from operators.dicom.seg_readback import SourceGeometry, frame_geometry_problems, mask_on_source, read_seg_on_source
from testkit.dicom_factories import ct_stack

SEGMENT = SegmentSpec("Spleen", codes.SCT.AnatomicalStructure, codes.SCT.Spleen, "read-back test", "0.1.0")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "test", "0.1.0", "test-host")


@pytest.fixture
def sources():
    """Five slices stored out of z order (the read-back must follow the UIDs, not the file order)."""
    return ct_stack([6.0, 0.0, 4.0, 2.0, 8.0], rows=16, columns=12)


def mask_with_empty_slices(count: int) -> np.ndarray:
    mask = np.zeros((count, 16, 12), np.uint8)
    mask[1:3, 4:9, 3:7] = 1  # slices 0, 3 and 4 are empty
    return mask


def binary_seg(sources, mask: np.ndarray, omit_empty_frames: bool) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=with_empty_type2_attributes(sources),
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(SEGMENT)],
        omit_empty_frames=omit_empty_frames,
        **new_seg_series_arguments(EQUIPMENT, 300),
    )


@pytest.mark.parametrize("omit_empty_frames", [False, True], ids=["every-frame", "empty-frames-omitted"])
def test_read_back_puts_frames_on_their_source_slices(sources, tmp_path: Path, omit_empty_frames):
    mask = mask_with_empty_slices(len(sources))
    path = write_seg(binary_seg(sources, mask, omit_empty_frames), tmp_path / "seg.dcm")
    uids = [ds.SOPInstanceUID for ds in sources]
    readback = read_seg_on_source(path, uids)
    assert readback.dtype == np.uint8
    np.testing.assert_array_equal(readback, mask)
    np.testing.assert_array_equal(read_seg_on_source(path, uids[::-1]), mask[::-1])


@pytest.mark.parametrize("omit_empty_frames", [False, True], ids=["every-frame", "empty-frames-omitted"])
def test_frames_on_their_sources_have_no_geometry_problem(sources, omit_empty_frames):
    seg = binary_seg(sources, mask_with_empty_slices(len(sources)), omit_empty_frames)
    assert frame_geometry_problems(seg, SourceGeometry.from_datasets(sources)) == []


def test_a_frame_off_its_source_slice_is_a_problem(sources):
    seg = binary_seg(sources, mask_with_empty_slices(len(sources)), omit_empty_frames=False)
    position = seg.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) for v in position.ImagePositionPatient[:2]] + [float(position.ImagePositionPatient[2]) + 0.5]
    problems = frame_geometry_problems(seg, SourceGeometry.from_datasets(sources))
    assert len(problems) == 1 and problems[0].startswith("frame 3 plane position") and "0.500 mm off" in problems[0]


def test_a_frame_of_an_unknown_instance_is_a_problem(sources):
    seg = binary_seg(sources, mask_with_empty_slices(len(sources)), omit_empty_frames=False)
    problems = frame_geometry_problems(seg, SourceGeometry.from_datasets(sources[1:]))
    assert len(problems) == 1 and "references unknown instance" in problems[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rows": 15}, "SEG is 16x12, source 15x12"),
        ({"orientation": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0)}, "SEG orientation"),
        ({"pixel_spacing_mm": (0.8, 0.9)}, "SEG pixel spacing"),
    ],
    ids=["rows", "orientation", "pixel-spacing"],
)
def test_in_plane_geometry_that_differs_is_a_problem(sources, change, expected):
    seg = binary_seg(sources, mask_with_empty_slices(len(sources)), omit_empty_frames=False)
    source = SourceGeometry.from_datasets(sources)
    problems = frame_geometry_problems(seg, SourceGeometry(**(vars(source) | change)))
    assert len(problems) == 1 and problems[0].startswith(expected)


def test_mask_of_another_segment_number_is_refused(sources):
    seg = binary_seg(sources, mask_with_empty_slices(len(sources)), omit_empty_frames=False)
    with pytest.raises(ValueError):
        mask_on_source(seg, [ds.SOPInstanceUID for ds in sources], segment_number=2)
