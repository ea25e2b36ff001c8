from __future__ import annotations

import numpy as np
import pytest

from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.outputs.map_resampling import map_on_pixel_grid, overlap_weights


def square_blob_map(
    rows_cols: tuple[slice, slice], value: float = 1.0, slide_size_xy=(2220, 2967), origin_model_px: float | None = None
) -> ProbabilityMap:
    grid = grid_for_slide(slide_size_xy, 0.499, 0.243, 64, 224, origin_model_px=origin_model_px)
    probabilities = np.zeros(grid.shape_rows_cols, np.float32)
    probabilities[rows_cols] = value
    return ProbabilityMap(probabilities, grid)


def test_overlap_weights_split_a_target_pixel_between_cells():
    weights = overlap_weights(2, 10.0, 3, 5.0, 10.0).toarray()  # targets [0,10) [10,20); cells [5,15) [15,25) [25,35)
    np.testing.assert_allclose(weights, [[0.5, 0.0, 0.0], [0.5, 0.5, 0.0]])


def test_the_map_grid_itself_is_the_identity():
    prob_map = square_blob_map((slice(10, 20), slice(5, 15)))
    stride = prob_map.grid.stride_level0_px
    rows, cols = prob_map.grid.shape_rows_cols
    np.testing.assert_allclose(map_on_pixel_grid(prob_map, (cols, rows), (stride, stride)), prob_map.probabilities, atol=1e-6)


@pytest.mark.parametrize("downsample_xy", [(16.0, 16.0), (4.0, 4.0), (15.97, 15.95), (64.0, 64.0), (100.0, 37.0)])
def test_a_square_blob_lands_on_its_level0_extent(downsample_xy):
    prob_map = square_blob_map((slice(10, 20), slice(5, 15)))
    stride = prob_map.grid.stride_level0_px
    dx, dy = downsample_xy
    size_xy = (int(np.ceil(2220 / dx)), int(np.ceil(2967 / dy)))
    on_grid = map_on_pixel_grid(prob_map, size_xy, downsample_xy)
    assert on_grid.shape == (size_xy[1], size_xy[0]) and on_grid.dtype == np.float32
    # the blob covers level-0 x in [5S, 15S), y in [10S, 20S): pixels wholly inside are 1, wholly outside 0
    x0, x1, y0, y1 = 5 * stride, 15 * stride, 10 * stride, 20 * stride
    left, right = np.arange(size_xy[0]) * dx, (np.arange(size_xy[0]) + 1) * dx
    top, bottom = np.arange(size_xy[1]) * dy, (np.arange(size_xy[1]) + 1) * dy
    inside = np.outer((top >= y0) & (bottom <= y1), (left >= x0) & (right <= x1))
    outside = np.outer((bottom <= y0) | (top >= y1), np.ones(size_xy[0], bool)) | np.outer(
        np.ones(size_xy[1], bool), (right <= x0) | (left >= x1)
    )
    np.testing.assert_allclose(on_grid[inside], 1.0, atol=1e-6)
    np.testing.assert_array_equal(on_grid[outside], 0.0)
    # the probability mass (value x area) is conserved
    assert on_grid.sum() * dx * dy == pytest.approx(100 * stride * stride, rel=1e-5)


def test_a_custom_origin_shifts_the_cells():
    prob_map = square_blob_map((slice(0, 1), slice(0, 1)), origin_model_px=0.0)  # cell (0, 0) centred on the slide's corner
    half = prob_map.grid.stride_level0_px / 2
    on_level0 = map_on_pixel_grid(prob_map, (40, 40), (1.0, 1.0))
    covered = int(np.floor(half))
    assert on_level0[:covered, :covered].min() == pytest.approx(1.0)
    assert on_level0[covered + 1 :, :].max() == 0.0 and on_level0[:, covered + 1 :].max() == 0.0


@pytest.mark.parametrize(("size_xy", "downsample_xy"), [((0, 5), (1.0, 1.0)), ((5, 5), (0.0, 1.0)), ((5, 5), (float("nan"), 1.0))])
def test_bad_grids_are_refused(size_xy, downsample_xy):
    with pytest.raises(ValueError):
        map_on_pixel_grid(square_blob_map((slice(0, 1), slice(0, 1))), size_xy, downsample_xy)


def test_a_map_with_nan_is_refused():
    prob_map = square_blob_map((slice(0, 1), slice(0, 1)), value=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        map_on_pixel_grid(prob_map, (5, 5), (1.0, 1.0))
