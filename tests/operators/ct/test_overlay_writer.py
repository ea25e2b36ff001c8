from __future__ import annotations

import numpy as np
import pytest

from operators.ct.overlay_writer import MASK_RGB, montage_slices, overlay_tile, render_montage


@pytest.mark.parametrize(
    ("occupied", "n_tiles", "expected"),
    [((10, 19), 4, [10, 13, 16, 19]), (None, 3, [0, 14, 29]), ((5, 5), 9, [5])],
    ids=["spread-over-the-mask", "empty-mask-spreads-over-volume", "single-slice"],
)
def test_montage_slices(occupied, n_tiles, expected):
    mask = np.zeros((30, 4, 4), np.uint8)
    if occupied:
        mask[occupied[0] : occupied[1] + 1, 1, 1] = 1
    assert montage_slices(mask, n_tiles) == expected


def test_overlay_tile_outlines_the_mask_in_red_and_keeps_gray_elsewhere():
    hu = np.full((20, 20), 40.0)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    tile = overlay_tile(hu, mask)
    np.testing.assert_array_equal(tile[5, 5], MASK_RGB.astype(np.uint8))
    assert tile[0, 0, 0] == tile[0, 0, 1] == tile[0, 0, 2]
    assert tile[10, 10, 0] > tile[10, 10, 1]


def test_render_montage_is_a_grid_of_tiles():
    image = render_montage(np.zeros((12, 64, 64)), np.ones((12, 64, 64), np.uint8), n_tiles=9, tile_px=64)
    assert image.size == (3 * 64, 3 * 64) and image.mode == "RGB"
