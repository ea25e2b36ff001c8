"""Resample a probability map onto another pixel grid of the same slide (a pyramid level, a thumbnail).

The geometry is that of level 0 only:

* map cell (row, col) is a square of constant probability, ``S = grid.stride_level0_px`` level-0
  pixels wide, centred on its window centre: it covers level-0
  ``x in [ox - S/2 + col*S, ox + S/2 + col*S)`` and ``y in [oy - S/2 + row*S, oy + S/2 + row*S)``
  with ``(ox, oy) = grid.origin_xy_level0``. On the default grid (origin at half the stride) cell
  (row, col) covers ``[col*S, (col+1)*S) x [row*S, (row+1)*S)``: the map is a downsampled image of
  the slide with no offset, which is also how the map's TIFF is georeferenced;
* target pixel (i, j) of a grid with downsample (dx, dy) covers level-0
  ``[j*dx, (j+1)*dx) x [i*dy, (i+1)*dy)``.

A target pixel gets the area-weighted mean of the cells it overlaps (area outside the map counts as
probability 0), so the result is exact whether the target grid is finer or coarser than the map
and no one-cell lesion disappears between samples. The weights are separable, so the work is two
sparse matrix products and never a dense (pixels x cells) array.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse

from operators.wsi.grid import ProbabilityMap


def overlap_weights(
    target_count: int, target_step_px_level0: float, cell_count: int, cell_start_px_level0: float, cell_step_px_level0: float
) -> sparse.csr_matrix:
    """(target_count, cell_count) float32 weights along one axis: the fraction of target interval k
    ``[k*t, (k+1)*t)`` covered by cell interval c ``[start + c*s, start + (c+1)*s)``."""
    if target_step_px_level0 <= 0 or cell_step_px_level0 <= 0:
        raise ValueError("steps must be positive")
    t0 = np.arange(target_count, dtype=np.float64) * target_step_px_level0
    t1 = t0 + target_step_px_level0
    first = np.clip(np.floor((t0 - cell_start_px_level0) / cell_step_px_level0).astype(np.int64), 0, cell_count)
    stop = np.clip(np.ceil((t1 - cell_start_px_level0) / cell_step_px_level0).astype(np.int64), 0, cell_count)
    rows, cols, values = [], [], []
    span = int((stop - first).max(initial=0))
    for k in range(span):
        cell = first + k
        valid = cell < stop
        c0 = cell_start_px_level0 + cell * cell_step_px_level0
        overlap = np.minimum(t1, c0 + cell_step_px_level0) - np.maximum(t0, c0)
        keep = valid & (overlap > 0)
        rows.append(np.nonzero(keep)[0])
        cols.append(cell[keep])
        values.append(overlap[keep] / target_step_px_level0)
    if not rows:
        return sparse.csr_matrix((target_count, cell_count), dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(values).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=(target_count, cell_count)
    )


def map_on_pixel_grid(prob_map: ProbabilityMap, size_xy: tuple[int, int], downsample_xy: tuple[float, float]) -> np.ndarray:
    """(height, width) float32: the map resampled onto a grid of ``size_xy`` (width, height) pixels
    whose pixel (i, j) covers level-0 ``[j*dx, (j+1)*dx) x [i*dy, (i+1)*dy)``."""
    width, height = int(size_xy[0]), int(size_xy[1])
    dx, dy = float(downsample_xy[0]), float(downsample_xy[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"size_xy must be positive (width, height), got {tuple(size_xy)}")
    if not (math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0):
        raise ValueError(f"downsample_xy must be positive, got {tuple(downsample_xy)}")
    probabilities = np.asarray(prob_map.probabilities, dtype=np.float32)
    if not np.isfinite(probabilities).all():
        raise ValueError("the probability map holds NaN or infinite values")
    rows, cols = probabilities.shape
    stride = prob_map.grid.stride_level0_px
    origin_x, origin_y = prob_map.grid.origin_xy_level0
    weights_y = overlap_weights(height, dy, rows, origin_y - 0.5 * stride, stride)
    weights_x = overlap_weights(width, dx, cols, origin_x - 0.5 * stride, stride)
    along_y = weights_y @ probabilities  # (height, cols), float32 like the result: memory ~ 4 bytes per target pixel
    return np.ascontiguousarray((weights_x @ along_y.T).T, dtype=np.float32)
