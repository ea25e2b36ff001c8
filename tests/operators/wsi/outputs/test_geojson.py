from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.nms import Detection
from operators.wsi.outputs.geojson import TUMOR_CLASS, detections_and_contours_geojson, signed_area, tumor_contours, write_geojson

Block = tuple[tuple[int, int], tuple[int, int], float]  # (row start, stop), (col start, stop), value


def map_with(slide_mpp: float, model_mpp: float, stride_model_px: int, blocks: list[Block]) -> ProbabilityMap:
    grid = grid_for_slide((2220, 2967), slide_mpp, model_mpp, stride_model_px, 224)
    probabilities = np.zeros(grid.shape_rows_cols, np.float32)
    for (r0, r1), (c0, c1), value in blocks:
        probabilities[r0:r1, c0:c1] = value
    return ProbabilityMap(probabilities, grid)


def polygons(collection: dict) -> list[list[list[list[float]]]]:
    return [f["geometry"]["coordinates"] for f in collection["features"] if f["geometry"]["type"] == "Polygon"]


def ring_area(ring: list[list[float]]) -> float:
    return signed_area(np.asarray(ring, dtype=np.float64))


@pytest.mark.parametrize(("slide_mpp", "model_mpp", "stride_model_px"), [(0.499, 0.243, 64), (0.243, 0.243, 32), (0.25, 0.5, 16)])
def test_a_square_blob_is_outlined_at_its_level0_extent(slide_mpp, model_mpp, stride_model_px):
    prob_map = map_with(slide_mpp, model_mpp, stride_model_px, [((10, 20), (5, 15), 1.0)])
    stride = prob_map.grid.stride_level0_px
    collection = detections_and_contours_geojson([], prob_map, threshold=0.5)
    (rings,) = polygons(collection)
    (exterior,) = rings
    xy = np.asarray(exterior)
    # at p = 0.5 the contour runs half-way between the blob's cell centres and their neighbours': the cell edges
    np.testing.assert_allclose(xy[:, 0].min(), 5 * stride, atol=0.01)
    np.testing.assert_allclose(xy[:, 0].max(), 15 * stride, atol=0.01)
    np.testing.assert_allclose(xy[:, 1].min(), 10 * stride, atol=0.01)
    np.testing.assert_allclose(xy[:, 1].max(), 20 * stride, atol=0.01)
    assert exterior[0] == exterior[-1] and len(exterior) >= 4
    assert ring_area(exterior) > 0  # RFC 7946 right-hand rule: exterior counter-clockwise (y up)
    # marching squares cuts the four corners by half a cell's triangle each
    assert ring_area(exterior) == pytest.approx((100 - 0.5) * stride * stride, rel=1e-3)
    feature = next(f for f in collection["features"] if f["geometry"]["type"] == "Polygon")
    assert feature["properties"]["measurements"]["area um^2"] == pytest.approx(
        ring_area(exterior) * slide_mpp**2, rel=1e-4
    )  # coordinates rounded to 0.01 px
    assert feature["properties"]["measurements"]["max probability"] == pytest.approx(1.0)


def test_a_ring_blob_has_a_clockwise_hole_and_separate_islands():
    prob_map = map_with(
        0.499,
        0.243,
        64,
        [
            ((10, 30), (10, 30), 0.9),
            ((15, 20), (15, 20), 0.1),  # a hole
            ((60, 62), (40, 43), 0.7),  # an island
        ],
    )
    stride = prob_map.grid.stride_level0_px
    contours = tumor_contours(prob_map, 0.5)
    assert len(contours) == 2
    big, small = contours
    assert len(big.holes) == 1 and not small.holes
    assert signed_area(big.exterior) > 0 and signed_area(big.holes[0]) < 0
    hole = big.holes[0]
    assert 14 * stride < hole[:, 0].min() < 15.5 * stride and 19.5 * stride < hole[:, 0].max() < 21 * stride
    assert (big.max_probability, small.max_probability) == pytest.approx((0.9, 0.7))
    collection = detections_and_contours_geojson([], prob_map, 0.5)
    rings = polygons(collection)
    assert [len(r) for r in rings] == [2, 1]
    assert all(ring[0] == ring[-1] for polygon in rings for ring in polygon)


def test_contours_touching_the_map_edge_are_closed():
    prob_map = map_with(0.499, 0.243, 64, [((0, 5), (0, 4), 1.0)])
    (polygon,) = polygons(detections_and_contours_geojson([], prob_map))
    exterior = np.asarray(polygon[0])
    assert polygon[0][0] == polygon[0][-1]
    np.testing.assert_allclose(exterior.min(axis=0), [0.0, 0.0], atol=0.01)  # the map's edge is the slide's corner


def test_detections_are_qupath_point_annotations_in_level0_pixels(tmp_path: Path):
    prob_map = map_with(0.499, 0.243, 64, [((10, 20), (5, 15), 1.0)])
    detections = [Detection(0.97, 312, 468), Detection(0.55, 1500, 2000)]
    collection = detections_and_contours_geojson(detections, prob_map)
    path = write_geojson(collection, tmp_path / "slide.geojson")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(collection))
    assert loaded["type"] == "FeatureCollection"
    points = [f for f in loaded["features"] if f["geometry"]["type"] == "Point"]
    assert [p["geometry"]["coordinates"] for p in points] == [[312, 468], [1500, 2000]]
    for feature, detection in zip(points, detections, strict=True):
        assert feature["type"] == "Feature"
        properties = feature["properties"]
        assert properties["objectType"] == "annotation"
        assert properties["classification"] == {"name": "Tumor", "color": list(TUMOR_CLASS.color_rgb)}
        assert properties["measurements"]["probability"] == pytest.approx(detection.probability)
    assert all(f["properties"]["objectType"] == "annotation" for f in loaded["features"])


def test_an_empty_map_gives_only_the_detections():
    prob_map = map_with(0.499, 0.243, 64, [])
    assert detections_and_contours_geojson([], prob_map) == {"type": "FeatureCollection", "features": []}


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(ValueError):
        tumor_contours(map_with(0.499, 0.243, 64, []), threshold)
