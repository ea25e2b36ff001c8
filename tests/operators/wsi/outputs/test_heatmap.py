from __future__ import annotations

import math

import numpy as np
import pytest

from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.outputs.heatmap import colour_map, heatmap_rgba, render_heatmap_overlay

SLIDE_SIZE_XY = (2220, 2967)


def blob_map() -> ProbabilityMap:
    grid = grid_for_slide(SLIDE_SIZE_XY, 0.499, 0.243, 64, 224)
    probabilities = np.zeros(grid.shape_rows_cols, np.float32)
    probabilities[10:20, 5:15] = 1.0  # level-0 x in [5S, 15S), y in [10S, 20S)
    return ProbabilityMap(probabilities, grid)


def grey_thumbnail(downsample: float) -> np.ndarray:
    width, height = (math.ceil(s / downsample) for s in SLIDE_SIZE_XY)
    return np.full((height, width, 3), 200, np.uint8)


@pytest.mark.parametrize("downsample", [4.0, 16.0, 32.0, 64.0])
def test_overlay_has_the_thumbnail_size_and_colours_the_blob_only(downsample):
    thumbnail = grey_thumbnail(downsample)
    prob_map = blob_map()
    overlay = render_heatmap_overlay(thumbnail, prob_map, downsample)
    assert overlay.mode == "RGB" and overlay.size == (thumbnail.shape[1], thumbnail.shape[0])
    pixels = np.asarray(overlay)
    stride = prob_map.grid.stride_level0_px
    centre_x, centre_y = int(10 * stride / downsample), int(15 * stride / downsample)
    assert pixels[centre_y, centre_x, 0] > pixels[centre_y, centre_x, 2] + 40  # red over grey
    # away from the blob and from the colour bar (bottom right), the thumbnail is untouched
    np.testing.assert_array_equal(pixels[: int(8 * stride / downsample), :], thumbnail[: int(8 * stride / downsample), :])


def test_the_colour_bar_is_drawn_inside_large_images_only():
    thumbnail = grey_thumbnail(4.0)
    with_bar = np.asarray(render_heatmap_overlay(thumbnail, blob_map(), 4.0))
    without_bar = np.asarray(render_heatmap_overlay(thumbnail, blob_map(), 4.0, colour_bar=False))
    corner = (slice(-100, None), slice(-100, None))
    assert not np.array_equal(with_bar[corner], without_bar[corner])
    np.testing.assert_array_equal(without_bar[corner], thumbnail[corner])
    tiny = np.full((40, 30, 3), 200, np.uint8)
    np.testing.assert_array_equal(
        np.asarray(render_heatmap_overlay(tiny, blob_map(), 100.0)),
        np.asarray(render_heatmap_overlay(tiny, blob_map(), 100.0, colour_bar=False)),
    )


def test_colour_map_runs_blue_to_red_and_alpha_follows_probability():
    colours = colour_map(np.array([0.0, 0.5, 1.0]))
    assert colours[0, 2] > 100 and colours[0, 0] == 0  # blue
    assert colours[2, 0] > 100 and colours[2, 2] == 0  # dark red
    rgba = heatmap_rgba(np.array([[0.01, 0.5, 1.0]]), max_alpha=0.6, min_probability=0.05)
    assert list(rgba[0, :, 3]) == [0, 76, 153]


def test_a_thumbnail_that_is_not_rgb_is_refused():
    with pytest.raises(ValueError):
        render_heatmap_overlay(np.zeros((10, 10), np.uint8), blob_map(), 64.0)
