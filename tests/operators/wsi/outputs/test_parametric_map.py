"""The float Parametric Map of the probability map on the real DICOM WSI, read back by highdicom and
pydicom, and checked by dciodvfy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from operators.dicom.seg import EquipmentSpec
from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.outputs.dicom_seg import choose_seg_source_level, tumor_segment
from operators.wsi.outputs.map_resampling import map_on_pixel_grid
from operators.wsi.outputs.parametric_map import build_probability_parametric_map
from operators.wsi.slide.reader import SlideHandle, open_slide
from tests.real_slides import real_dicom_wsi, real_svs
from tests.validators import dciodvfy_errors, requires_dciodvfy

SEGMENT = tumor_segment("Metastasis detection (test)", "0.0.1")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "wsi_metastasis_app", "0.1.0", "test-host")
SLIDE_MPP = 0.499
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


@pytest.fixture(scope="module")
def slide() -> Iterator[SlideHandle]:
    with open_slide(real_dicom_wsi()) as handle:
        yield handle


def random_map(model_mpp: float, stride_model_px: int, seed: int = 0) -> ProbabilityMap:
    grid = grid_for_slide((2220, 2967), SLIDE_MPP, model_mpp, stride_model_px, 224)
    probabilities = np.random.default_rng(seed).random(grid.shape_rows_cols, dtype=np.float32)
    probabilities[probabilities < 0.6] = 0.0  # off-tissue zeros beside fractional values
    return ProbabilityMap(probabilities, grid)


def written(slide: SlideHandle, prob_map: ProbabilityMap, folder: Path) -> Path:
    path = folder / "pm.dcm"
    build_probability_parametric_map(slide, prob_map, SEGMENT, EQUIPMENT).save_as(path, enforce_file_format=True)
    return path


def test_on_a_level_with_the_maps_own_grid_the_values_are_the_maps(slide, tmp_path: Path):
    prob_map = random_map(SLIDE_MPP, 4)  # 4 level-0 px per cell, origin at half a cell: level 2's pixel grid (555 x 742)
    assert prob_map.probabilities.shape == (742, 555)
    image = hd.imread(written(slide, prob_map, tmp_path))
    assert (image.TotalPixelMatrixColumns, image.TotalPixelMatrixRows) == (555, 742) and image.NumberOfFrames > 1
    np.testing.assert_array_equal(image.get_total_pixel_matrix(), prob_map.probabilities)


def test_the_apps_map_is_stored_as_floats_on_the_level_the_seg_uses(slide, tmp_path: Path):
    prob_map = random_map(0.243, 64)  # the app's map: 31.2 level-0 px per cell
    level = choose_seg_source_level(slide.dicom_source, prob_map.grid.stride_level0_px)
    path = written(slide, prob_map, tmp_path)
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == PARAMETRIC_MAP_STORAGE and "FloatPixelData" in dataset and dataset.BitsAllocated == 32
    np.testing.assert_array_equal(hd.imread(path).get_total_pixel_matrix(), map_on_pixel_grid(prob_map, level.size_xy, level.downsample_xy))
    mapping = dataset.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert (float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)) == (1.0, 0.0)
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    source = level.datasets[0]
    referenced = {ref.ReferencedSOPInstanceUID for series in dataset.ReferencedSeriesSequence for ref in series.ReferencedInstanceSequence}
    assert source.SOPInstanceUID in referenced
    assert (dataset.StudyInstanceUID, dataset.FrameOfReferenceUID) == (source.StudyInstanceUID, source.FrameOfReferenceUID)
    assert dataset.SeriesInstanceUID != source.SeriesInstanceUID and "NOT FOR CLINICAL USE" in dataset.SeriesDescription


def test_the_map_carries_the_results_flags(slide):
    parametric_map = build_probability_parametric_map(slide, random_map(0.243, 64), SEGMENT, EQUIPMENT, flags=("UNVERIFIED MODEL",))
    assert parametric_map.SeriesDescription == "Tumor probability map - UNVERIFIED MODEL - NOT FOR CLINICAL USE"


def test_a_slide_that_is_not_dicom_is_refused():
    with open_slide(real_svs()) as svs, pytest.raises(ValueError, match="needs a DICOM whole-slide image"):
        build_probability_parametric_map(svs, random_map(0.243, 64), SEGMENT, EQUIPMENT)


@requires_dciodvfy
@pytest.mark.parametrize(("model_mpp", "stride_model_px"), [(0.243, 64), (SLIDE_MPP, 4)], ids=["app-map", "fine-map"])
def test_parametric_map_passes_dciodvfy(slide, tmp_path: Path, model_mpp, stride_model_px):
    assert dciodvfy_errors(written(slide, random_map(model_mpp, stride_model_px), tmp_path)) == []
