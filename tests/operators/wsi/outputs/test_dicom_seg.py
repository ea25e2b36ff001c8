"""The FRACTIONAL SEG on the real DICOM WSI (wsidicomizer's conversion of the CMU-1 crop)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from operators.dicom.seg import EquipmentSpec, write_seg
from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.outputs.dicom_seg import build_fractional_wsi_seg, choose_seg_source_level, dicom_volume_levels, tumor_segment
from operators.wsi.outputs.map_resampling import map_on_pixel_grid
from operators.wsi.slide.reader import SlideHandle, open_slide
from tests.real_slides import real_dicom_wsi, real_svs
from tests.validators import DCIODVFY, dciodvfy_errors, requires_dciodvfy

SEGMENT = tumor_segment("Metastasis detection (test)", "0.0.1")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "wsi_metastasis_app", "0.1.0", "test-host")
SLIDE_MPP = 0.499
# (width, height) of the VOLUME levels wsidicomizer wrote; by PixelSpacing exactly 1, 2, 4, 8, 16 times level 0's
LEVEL_SIZES = [(2220, 2967), (1110, 1484), (555, 742), (278, 371), (139, 186)]


@pytest.fixture(scope="module")
def slide() -> Iterator[SlideHandle]:
    with open_slide(real_dicom_wsi()) as handle:
        yield handle


def blob_map(size_xy: tuple[int, int], model_mpp: float, stride_model_px: int) -> ProbabilityMap:
    """A cone of probability peaking at 1 at level-0 (700, 1800), 0 beyond 400 level-0 px from it."""
    grid = grid_for_slide(size_xy, SLIDE_MPP, model_mpp, stride_model_px, 224)
    rows, cols = grid.shape_rows_cols
    x, y = np.meshgrid(grid.centres_model_px(cols) * grid.level0_px_per_model_px, grid.centres_model_px(rows) * grid.level0_px_per_model_px)
    probabilities = np.clip(1.0 - np.hypot(x - 700.0, y - 1800.0) / 400.0, 0.0, 1.0).astype(np.float32)
    return ProbabilityMap(probabilities, grid)


def test_every_volume_level_is_a_candidate_with_its_pixel_spacing_downsample(slide: SlideHandle):
    levels = dicom_volume_levels(slide.dicom_source)
    assert [level.size_xy for level in levels] == LEVEL_SIZES  # including the levels OpenSlide cannot decode
    assert len(slide.levels) < len(LEVEL_SIZES)
    for index, level in enumerate(levels):
        assert level.downsample_xy == pytest.approx((2**index, 2**index))
        assert all(str(ds.ImageType[2]) == "VOLUME" for ds in level.datasets)


@pytest.mark.parametrize(
    ("stride_px_level0", "expected_size_xy"),
    [
        (1.0, (2220, 2967)),
        (1.3, (2220, 2967)),
        (2.0, (1110, 1484)),
        (3.0, (555, 742)),
        (64 * 0.243 / SLIDE_MPP, (139, 186)),
        (500.0, (139, 186)),
    ],
)
def test_the_level_closest_to_the_map_stride_is_chosen(slide: SlideHandle, stride_px_level0, expected_size_xy):
    assert choose_seg_source_level(slide.dicom_source, stride_px_level0).size_xy == expected_size_xy


@dataclass(frozen=True)
class WrittenSeg:
    path: Path
    prob_map: ProbabilityMap
    level_size_xy: tuple[int, int]
    level_downsample: float
    source: pydicom.Dataset


@pytest.fixture(scope="module", params=[(0.243, 64, 4), (SLIDE_MPP, 4, 2)], ids=["app-map-level4-one-tile", "fine-map-level2-12-tiles"])
def written(request, slide: SlideHandle, tmp_path_factory) -> WrittenSeg:
    model_mpp, stride_model_px, level_index = request.param
    prob_map = blob_map(slide.size_xy, model_mpp, stride_model_px)
    seg = build_fractional_wsi_seg(slide, prob_map, SEGMENT, EQUIPMENT)
    path = write_seg(seg, tmp_path_factory.mktemp("seg") / "tumor_seg.dcm")
    source = slide.dicom_source.volume_levels[level_index][0].header
    return WrittenSeg(path, prob_map, LEVEL_SIZES[level_index], 2.0**level_index, source)


@requires_dciodvfy
def test_seg_passes_dciodvfy(written: WrittenSeg):
    assert dciodvfy_errors(written.path) == []


def test_seg_references_the_chosen_level_and_shares_its_geometry(written: WrittenSeg):
    seg = pydicom.dcmread(written.path)
    source = written.source
    referenced = [item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence]
    assert referenced == [source.SOPInstanceUID]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert (seg.TotalPixelMatrixColumns, seg.TotalPixelMatrixRows) == written.level_size_xy
    assert (seg.Columns, seg.Rows) == (source.Columns, source.Rows)  # tiled like its source
    columns, rows = -(-written.level_size_xy[0] // source.Columns), -(-written.level_size_xy[1] // source.Rows)
    assert seg.NumberOfFrames == columns * rows  # every tile, empty ones included
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    source_spacing = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([float(v) for v in source_spacing])
    assert [item.ReferencedSOPInstanceUID for item in seg.SourceImageSequence] == [source.SOPInstanceUID]
    assert "PatientOrientation" in seg


def test_seg_tiles_lie_on_the_level_pixel_grid_in_slide_coordinates(written: WrittenSeg):
    """Each frame's slide-coordinate position is its top-left pixel's, computed from the source level's
    origin, orientation and spacing (the source is TILED_FULL, so it lists no positions of its own)."""
    seg = pydicom.dcmread(written.path)
    source = written.source
    origin = source.TotalPixelMatrixOriginSequence[0]
    origin_mm = np.array([float(origin.XOffsetInSlideCoordinateSystem), float(origin.YOffsetInSlideCoordinateSystem)])
    orientation = np.array([float(v) for v in source.ImageOrientationSlide])
    along_row, along_column = orientation[:2], orientation[3:5]  # slide (X, Y) steps per column and per row
    row_mm, column_mm = (float(v) for v in source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    positions = set()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSlideSequence[0]
        column, row = int(position.ColumnPositionInTotalImagePixelMatrix), int(position.RowPositionInTotalImagePixelMatrix)
        assert (column - 1) % int(source.Columns) == 0 and (row - 1) % int(source.Rows) == 0
        expected_mm = origin_mm + (column - 1) * column_mm * along_row + (row - 1) * row_mm * along_column
        actual_mm = [float(position.XOffsetInSlideCoordinateSystem), float(position.YOffsetInSlideCoordinateSystem)]
        np.testing.assert_allclose(actual_mm, expected_mm, atol=1e-6)
        positions.add((column, row))
    assert len(positions) == seg.NumberOfFrames


def test_seg_is_a_coded_fractional_probability_segmentation(written: WrittenSeg):
    seg = hd.seg.segread(written.path)
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY" and seg.MaximumFractionalValue == 255
    assert "NOT FOR CLINICAL USE" in seg.SeriesDescription
    description = seg.get_segment_description(1)
    assert description.segment_label == "Tumor"
    assert description.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
    assert description.segmented_property_type.value == "14799000" and description.segmented_property_type.scheme_designator == "SCT"
    algorithm = description.algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (SEGMENT.algorithm_name, SEGMENT.algorithm_version)
    assert seg.Manufacturer == EQUIPMENT.manufacturer


def test_seg_reads_back_to_the_map_on_the_level_grid(written: WrittenSeg):
    seg = hd.seg.segread(written.path)
    readback = seg.get_total_pixel_matrix(combine_segments=False)[..., 0]
    width, height = written.level_size_xy
    assert readback.shape == (height, width)
    ds = written.level_downsample
    expected = map_on_pixel_grid(written.prob_map, written.level_size_xy, (ds, ds))
    np.testing.assert_allclose(readback, expected, atol=0.5 / 255 + 1e-6)
    # independently of the resampling code: the cone's peak is at level-0 (700, 1800)
    row, col = np.unravel_index(np.argmax(readback), readback.shape)
    assert abs((col + 0.5) * ds - 700.0) <= written.prob_map.grid.stride_level0_px
    assert abs((row + 0.5) * ds - 1800.0) <= written.prob_map.grid.stride_level0_px
    assert readback[0, 0] == 0.0 and readback.max() > 0.9


def test_a_slide_that_is_not_dicom_is_refused():
    with open_slide(real_svs()) as svs:
        with pytest.raises(ValueError, match="DICOM"):
            build_fractional_wsi_seg(svs, blob_map(svs.size_xy, 0.243, 64), SEGMENT, EQUIPMENT)


def test_omitting_empty_tiles_keeps_the_others_in_place(slide: SlideHandle, tmp_path: Path):
    grid = grid_for_slide(slide.size_xy, SLIDE_MPP, SLIDE_MPP, 4, 224)  # 555 x 742 cells -> level 2, 3 x 4 tiles of 240
    probabilities = np.zeros(grid.shape_rows_cols, np.float32)
    probabilities[250:300, 300:350] = 0.75  # level-2 pixels (250..299, 300..349): tiles (column 1, row 1) only
    prob_map = ProbabilityMap(probabilities, grid)
    path = write_seg(build_fractional_wsi_seg(slide, prob_map, SEGMENT, EQUIPMENT, omit_empty_frames=True), tmp_path / "sparse.dcm")
    seg = hd.seg.segread(path)
    assert seg.NumberOfFrames == 1
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSlideSequence[0]
    assert (position.ColumnPositionInTotalImagePixelMatrix, position.RowPositionInTotalImagePixelMatrix) == (241, 241)
    readback = seg.get_total_pixel_matrix(combine_segments=False)[..., 0]
    np.testing.assert_allclose(readback, map_on_pixel_grid(prob_map, LEVEL_SIZES[2], (4.0, 4.0)), atol=0.5 / 255 + 1e-6)
    if DCIODVFY is not None:
        assert dciodvfy_errors(path) == []
