"""Bulk Simple Annotations on the real DICOM WSI (wsidicomizer's conversion of the CMU-1 crop), read back
by highdicom and checked by dciodvfy: the GeoJSON's points and outlines, in the same coordinates."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from operators.dicom.seg import EquipmentSpec, ResultSeries
from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.nms import non_maximum_suppression
from operators.wsi.outputs.bulk_annotations import AREA, DETECTIONS_LABEL, PROBABILITY, REGIONS_LABEL, build_bulk_annotations
from operators.wsi.outputs.dicom_seg import tumor_segment
from operators.wsi.outputs.geojson import detections_and_contours_geojson
from operators.wsi.slide.reader import SlideHandle, open_slide
from tests.real_slides import real_dicom_wsi
from tests.validators import DCIODVFY_2D_ANN_FALSE_ERROR, dciodvfy_errors, requires_dciodvfy

SEGMENT = tumor_segment("Metastasis detection (test)", "0.0.1")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "wsi_metastasis_app", "0.1.0", "test-host")
SLIDE_MPP, MODEL_MPP, STRIDE_MODEL_PX = 0.499, 0.243, 64


@pytest.fixture(scope="module")
def slide() -> Iterator[SlideHandle]:
    with open_slide(real_dicom_wsi()) as handle:
        yield handle


def cones_map(cones: list[tuple[float, float, float, float]]) -> ProbabilityMap:
    """The app's map grid on the slide, the maximum of cones (x, y, radius in level-0 px, peak)."""
    grid = grid_for_slide((2220, 2967), SLIDE_MPP, MODEL_MPP, STRIDE_MODEL_PX, 224)
    rows, cols = grid.shape_rows_cols
    x, y = np.meshgrid(grid.centres_model_px(cols) * grid.level0_px_per_model_px, grid.centres_model_px(rows) * grid.level0_px_per_model_px)
    probabilities = np.zeros((rows, cols), np.float32)
    for cx, cy, radius, peak in cones:
        probabilities = np.maximum(probabilities, peak * np.clip(1.0 - np.hypot(x - cx, y - cy) / radius, 0.0, 1.0))
    return ProbabilityMap(probabilities.astype(np.float32), grid)


def donut_map() -> ProbabilityMap:
    """A ring of high probability around a low centre: a region with a hole."""
    prob_map = cones_map([(1100.0, 1400.0, 700.0, 1.0)])
    grid = prob_map.grid
    rows, cols = grid.shape_rows_cols
    x, y = np.meshgrid(grid.centres_model_px(cols) * grid.level0_px_per_model_px, grid.centres_model_px(rows) * grid.level0_px_per_model_px)
    probabilities = np.where(np.hypot(x - 1100.0, y - 1400.0) < 150.0, 0.1, prob_map.probabilities).astype(np.float32)
    return ProbabilityMap(probabilities, grid)


def findings(prob_map: ProbabilityMap, threshold: float = 0.5) -> dict:
    grid = prob_map.grid
    detections = non_maximum_suppression(prob_map.probabilities, grid.origin_xy_level0, grid.stride_level0_px, 400.0, threshold)
    return detections_and_contours_geojson(detections, prob_map, threshold)


def level0_header(slide: SlideHandle) -> pydicom.Dataset:
    return slide.dicom_source.volume_levels[0][0].header


def written(slide: SlideHandle, geojson: dict, folder: Path) -> Path:
    annotations = build_bulk_annotations(level0_header(slide), geojson, SEGMENT, EQUIPMENT)
    assert annotations is not None
    path = folder / "ann.dcm"
    annotations.save_as(path, enforce_file_format=True)
    return path


def features(geojson: dict, kind: str) -> list[dict]:
    return [f for f in geojson["features"] if f["geometry"]["type"] == kind]


@pytest.mark.parametrize("cones", [[(700.0, 1800.0, 400.0, 1.0)], [(700.0, 1800.0, 400.0, 1.0), (1600.0, 600.0, 300.0, 0.9)]])
def test_one_point_per_detection_with_its_probability_and_one_polygon_per_region(slide, tmp_path: Path, cones):
    geojson = findings(cones_map(cones))
    points, polygons = features(geojson, "Point"), features(geojson, "Polygon")
    assert len(points) >= len(cones) and len(polygons) == len(cones)
    annotations = hd.ann.annread(written(slide, geojson, tmp_path))
    detections = annotations.get_annotation_groups(label=DETECTIONS_LABEL)[0]
    assert detections.graphic_type == hd.ann.GraphicTypeValues.POINT
    coordinates = detections.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD)
    assert len(coordinates) == len(points)
    np.testing.assert_array_equal(np.vstack(coordinates), [f["geometry"]["coordinates"] for f in points])
    names, values, units = detections.get_measurements()
    assert names == [PROBABILITY] and units[0].value == "1"
    np.testing.assert_array_equal(values[:, 0], np.float32([f["properties"]["measurements"]["probability"] for f in points]))

    regions = annotations.get_annotation_groups(label=REGIONS_LABEL)[0]
    assert regions.graphic_type == hd.ann.GraphicTypeValues.POLYGON
    outlines = regions.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD)
    for outline, feature in zip(outlines, polygons, strict=True):
        np.testing.assert_allclose(outline, np.asarray(feature["geometry"]["coordinates"][0])[:-1], atol=0)
    names, values, units = regions.get_measurements()
    assert names == [PROBABILITY, AREA] and [u.value for u in units] == ["1", "um2"]
    measured = [f["properties"]["measurements"] for f in polygons]
    np.testing.assert_allclose(values, [[m["max probability"], m["area um^2"]] for m in measured], rtol=1e-6)


def test_annotations_reference_the_level0_instance_in_the_slides_study(slide, tmp_path: Path):
    source = level0_header(slide)
    annotations = pydicom.dcmread(written(slide, findings(cones_map([(700.0, 1800.0, 400.0, 1.0)])), tmp_path))
    assert annotations.SOPClassUID == "1.2.840.10008.5.1.4.1.1.91.1"  # Microscopy Bulk Simple Annotations Storage
    assert (annotations.AnnotationCoordinateType, annotations.PixelOriginInterpretation) == ("2D", "VOLUME")
    [reference] = annotations.ReferencedImageSequence
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    assert (annotations.StudyInstanceUID, annotations.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert annotations.SeriesInstanceUID != source.SeriesInstanceUID
    assert annotations.Modality == "ANN" and "NOT FOR CLINICAL USE" in annotations.SeriesDescription
    for group in annotations.AnnotationGroupSequence:
        algorithm = group.AnnotationGroupAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (SEGMENT.algorithm_name, SEGMENT.algorithm_version)
        assert group.AnnotationPropertyTypeCodeSequence[0].CodeValue == SEGMENT.property_type.value


def test_a_region_with_a_hole_keeps_its_outline_and_its_net_area(slide, tmp_path: Path):
    geojson = findings(donut_map())
    [polygon] = features(geojson, "Polygon")
    assert len(polygon["geometry"]["coordinates"]) == 2  # the GeoJSON has the hole
    regions = hd.ann.annread(written(slide, geojson, tmp_path)).get_annotation_groups(label=REGIONS_LABEL)[0]
    [outline] = regions.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD)
    np.testing.assert_allclose(outline, np.asarray(polygon["geometry"]["coordinates"][0])[:-1], atol=0)
    _, values, _ = regions.get_measurements(name=AREA)
    assert values[0, 0] == pytest.approx(polygon["properties"]["measurements"]["area um^2"], rel=1e-6)


def test_annotations_carry_the_results_flags_and_series(slide):
    result = ResultSeries.new("1.2.826.0.1.3680043.8.498.779")
    geojson = findings(cones_map([(700.0, 1800.0, 400.0, 1.0)]))
    annotations = build_bulk_annotations(level0_header(slide), geojson, SEGMENT, EQUIPMENT, result=result, flags=("UNVERIFIED MODEL",))
    assert annotations.SeriesDescription == "Tumor findings - UNVERIFIED MODEL - NOT FOR CLINICAL USE"
    assert (annotations.SeriesInstanceUID, annotations.SOPInstanceUID) == (result.series_instance_uid, result.sop_instance_uid)


def test_nothing_found_gives_no_annotations_object(slide):
    assert build_bulk_annotations(level0_header(slide), findings(cones_map([])), SEGMENT, EQUIPMENT) is None


def test_a_source_that_is_not_a_slide_image_is_refused(slide):
    header = copy.deepcopy(level0_header(slide))
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    with pytest.raises(ValueError, match="VL Whole Slide Microscopy Image"):
        build_bulk_annotations(header, findings(cones_map([(700.0, 1800.0, 400.0, 1.0)])), SEGMENT, EQUIPMENT)


@requires_dciodvfy
@pytest.mark.parametrize(
    "prob_map", [cones_map([(700.0, 1800.0, 400.0, 1.0), (1600.0, 600.0, 300.0, 0.9)]), donut_map()], ids=["two", "donut"]
)
def test_annotations_pass_dciodvfy_but_for_its_2d_common_z_check(slide, tmp_path: Path, prob_map):
    path = written(slide, findings(prob_map), tmp_path)
    assert all("CommonZCoordinateValue" not in group for group in pydicom.dcmread(path).AnnotationGroupSequence)
    assert [e for e in dciodvfy_errors(path) if e != DCIODVFY_2D_ANN_FALSE_ERROR] == []
