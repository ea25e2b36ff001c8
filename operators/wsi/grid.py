"""The grid of classification windows laid over a slide, and how model pixels map to level 0.

A window is ``window_model_px`` model pixels wide (224 for the pathology classifier). The model
was trained at ``model_mpp``; a slide scanned at ``slide_mpp`` has ``model_mpp / slide_mpp``
level-0 pixels per model pixel. Cell (row, col) of a map is the window centred at
(x, y) = (origin + col * stride, origin + row * stride) model pixels. The tissue mask's grid puts
its origin at half its stride, the convention of MONAI's MaskedPatchWSIDataset (a patch centred on
every mask pixel's centre); finer grids keep that origin, so every mask-grid window is also a
window of the finer grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class MapGrid:
    slide_mpp: float
    model_mpp: float
    stride_model_px: int
    window_model_px: int
    shape_rows_cols: tuple[int, int]
    origin_model_px: float

    @property
    def level0_px_per_model_px(self) -> float:
        return self.model_mpp / self.slide_mpp

    @property
    def stride_level0_px(self) -> float:
        return self.stride_model_px * self.level0_px_per_model_px

    @property
    def map_mpp(self) -> float:
        """Micrometres per map cell."""
        return self.stride_model_px * self.model_mpp

    @property
    def origin_xy_level0(self) -> tuple[float, float]:
        """Level-0 (x, y) of the centre of cell (0, 0)."""
        origin = self.origin_model_px * self.level0_px_per_model_px
        return (origin, origin)

    def centres_model_px(self, axis_length: int) -> np.ndarray:
        """Window centres, in model pixels, of the first ``axis_length`` cells along an axis."""
        return self.origin_model_px + self.stride_model_px * np.arange(axis_length)

    def window_origin_xy_level0(self, row: int, col: int) -> tuple[float, float]:
        """Level-0 (x, y) of the top-left corner of the window of cell (row, col)."""
        half_window = 0.5 * self.window_model_px
        x = (self.origin_model_px + col * self.stride_model_px - half_window) * self.level0_px_per_model_px
        y = (self.origin_model_px + row * self.stride_model_px - half_window) * self.level0_px_per_model_px
        return (x, y)


def grid_for_slide(
    slide_size_xy: tuple[int, int],
    slide_mpp: float,
    model_mpp: float,
    stride_model_px: int,
    window_model_px: int,
    origin_model_px: float | None = None,
) -> MapGrid:
    """The grid whose window centres cover the slide; the origin defaults to half the stride."""
    origin = 0.5 * stride_model_px if origin_model_px is None else origin_model_px
    size_model_px = [size * slide_mpp / model_mpp for size in slide_size_xy]
    cols, rows = (max(1, math.ceil((size - origin) / stride_model_px + 0.5)) for size in size_model_px)
    return MapGrid(slide_mpp, model_mpp, stride_model_px, window_model_px, (rows, cols), origin)


def tissue_on_grid(mask: np.ndarray, mask_stride_model_px: float, grid: MapGrid) -> np.ndarray:
    """For every cell of ``grid``: is its window centre in a tissue pixel of ``mask``?

    ``mask`` pixel (i, j) covers model pixels [j * stride, (j + 1) * stride) x [i * stride, ...).
    """
    rows = np.floor(grid.centres_model_px(grid.shape_rows_cols[0]) / mask_stride_model_px).astype(int)
    cols = np.floor(grid.centres_model_px(grid.shape_rows_cols[1]) / mask_stride_model_px).astype(int)
    inside_rows, inside_cols = rows < mask.shape[0], cols < mask.shape[1]
    out = np.zeros(grid.shape_rows_cols, dtype=bool)
    out[np.ix_(inside_rows, inside_cols)] = mask[np.ix_(rows[inside_rows], cols[inside_cols])]
    return out


def read_model_pixels(
    slide, origin_xy_level0: tuple[float, float], level0_px_per_model_px: float, size_model_px: tuple[int, int]
) -> np.ndarray:
    """(h, w, 3) RGB of ``size_model_px`` (width, height) model pixels from a slide at any mpp.

    A slide scanned at the model's resolution or finer (at least one level-0 pixel per model pixel)
    is read at the best pyramid level and box-filtered; a slide scanned coarser is read at level 0
    and enlarged bilinearly.
    """
    factor = level0_px_per_model_px
    if factor >= 1.0:
        return slide.read_at_downsample(origin_xy_level0, factor, size_model_px)
    x, y = math.floor(origin_xy_level0[0]), math.floor(origin_xy_level0[1])
    source_size = (math.ceil(size_model_px[0] * factor) + 1, math.ceil(size_model_px[1] * factor) + 1)
    source = slide.read_region((x, y), 0, source_size)
    box = (
        origin_xy_level0[0] - x,
        origin_xy_level0[1] - y,
        origin_xy_level0[0] - x + size_model_px[0] * factor,
        origin_xy_level0[1] - y + size_model_px[1] * factor,
    )
    return np.asarray(Image.fromarray(source).resize(size_model_px, Image.Resampling.BILINEAR, box=box))


@dataclass(frozen=True)
class ProbabilityMap:
    """Tumor probability per window: ``probabilities[row, col]`` (float32, 0..1, 0 off tissue) is the
    window centred at level-0 ``grid.origin_xy_level0 + (col, row) * grid.stride_level0_px``."""

    probabilities: np.ndarray
    grid: MapGrid

    def cell_centre_xy_level0(self, row: float, col: float) -> tuple[float, float]:
        """Level-0 (x, y) of a (possibly fractional) map position."""
        origin_x, origin_y = self.grid.origin_xy_level0
        return (origin_x + col * self.grid.stride_level0_px, origin_y + row * self.grid.stride_level0_px)
