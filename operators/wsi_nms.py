"""Lesion detections from a probability map by the non-maximum suppression of Liu et al. (2017):
repeatedly report the maximum and its position, then zero every cell within radius r of it; stop
when the maximum falls below threshold t."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """A lesion: its probability and its position (x, y) in level-0 pixels."""

    probability: float
    x: int
    y: int


def non_maximum_suppression(
    probability_map: np.ndarray,
    map_origin_xy_level0: tuple[float, float],
    map_stride_px_level0: float,
    radius_px_level0: float,
    threshold: float = 0.5,
) -> list[Detection]:
    """Detections in decreasing probability.

    ``probability_map[row, col]`` is the probability of the window centred at level-0
    (x, y) = origin + (col, row) * stride. The radius is in level-0 pixels and is applied on the
    map's grid (Euclidean distance between cell centres).
    """
    remaining = np.array(probability_map, dtype=np.float32, copy=True)
    radius_cells = radius_px_level0 / map_stride_px_level0
    rows, cols = np.ogrid[: remaining.shape[0], : remaining.shape[1]]
    detections: list[Detection] = []
    while remaining.size:
        flat = int(np.argmax(remaining))
        row, col = divmod(flat, remaining.shape[1])
        probability = float(remaining[row, col])
        if probability < threshold:
            break
        x = map_origin_xy_level0[0] + col * map_stride_px_level0
        y = map_origin_xy_level0[1] + row * map_stride_px_level0
        detections.append(Detection(probability, int(round(x)), int(round(y))))
        remaining[(rows - row) ** 2 + (cols - col) ** 2 <= radius_cells**2] = 0.0
    return detections
