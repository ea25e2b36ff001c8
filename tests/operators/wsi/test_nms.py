from __future__ import annotations

import numpy as np
import pytest

from operators.wsi.nms import Detection, nms_parameters, non_maximum_suppression


def peaks(*cells) -> np.ndarray:
    grid = np.zeros((20, 30), np.float32)
    for row, col, value in cells:
        grid[row, col] = value
    return grid


@pytest.mark.parametrize(
    ("grid", "radius_px", "expected"),
    [
        (peaks((5, 5, 0.9), (5, 7, 0.8)), 64.0, [Detection(0.9, 5 * 32, 5 * 32)]),
        (peaks((5, 5, 0.9), (5, 7, 0.8)), 32.0, [Detection(0.9, 160, 160), Detection(0.8, 7 * 32, 160)]),
        (peaks((1, 1, 0.49)), 32.0, []),
        (peaks(), 32.0, []),
        (
            peaks((10, 20, 0.7), (2, 3, 0.95), (15, 1, 0.6)),
            32.0,
            [Detection(0.95, 96, 64), Detection(0.7, 640, 320), Detection(0.6, 32, 480)],
        ),
    ],
    ids=["neighbour-suppressed", "outside-radius-kept", "below-threshold", "empty", "sorted-by-probability"],
)
def test_nms_reports_maxima_in_level0_pixels(grid, radius_px, expected):
    detections = non_maximum_suppression(grid, (0.0, 0.0), 32.0, radius_px, threshold=0.5)
    assert [(d.x, d.y) for d in detections] == [(e.x, e.y) for e in expected]
    assert [d.probability for d in detections] == pytest.approx([e.probability for e in expected])


def test_nms_applies_the_map_origin_and_leaves_the_input_unchanged():
    grid = peaks((2, 3, 0.8))
    before = grid.copy()
    [detection] = non_maximum_suppression(grid, (112.0, 112.0), 64.0, 100.0)
    assert (detection.x, detection.y) == (112 + 3 * 64, 112 + 2 * 64)
    np.testing.assert_array_equal(grid, before)


POSTPROCESSING = {"nms_radius_um": 155.5, "nms_threshold": 0.5}


@pytest.mark.parametrize(
    ("radius_um", "threshold", "expected"),
    [
        (None, None, (155.5, 0.5)),
        (100.0, None, (100.0, 0.5)),
        (None, 0.0, (155.5, 0.0)),  # a zero threshold is an override, not "unset"
        (80.0, 0.9, (80.0, 0.9)),
    ],
)
def test_nms_parameters_take_the_config_unless_overridden(radius_um, threshold, expected):
    assert nms_parameters(POSTPROCESSING, radius_um, threshold) == expected
