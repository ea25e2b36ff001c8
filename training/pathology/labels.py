"""Tumor masks from ASAP XML polygons, and patch labels from the centre region (Liu et al. 2017).

A patch centred at level-0 (x, y) is tumor when any pixel of its centre ``centre_px`` x ``centre_px``
region, level-0 [x - c/2, x + c/2) x [y - c/2, y + c/2), is tumor. The tumor mask is sampled at a
stated ``level`` (downsample 2**level, a mask pixel is tumor when its centre is inside a polygon, as
:func:`training.pathology.annotations.rasterize_polygons` defines), so the label is exact up to
one mask pixel. Memory is bounded: masks are rasterised in strips of at most ``max_strip_pixels``
pixels, and labels only ever rasterise the bounding box of the annotations, strip by strip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.pathology.annotations import EXCLUSION_GROUPS, rasterize_polygons, read_asap_xml

MAX_STRIP_PIXELS = 1 << 22  # 4 M mask pixels per strip (the scanline fill needs 9 bytes per pixel)


def read_annotations(xml_path: Path | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(tumor polygons, exclusion polygons) of an ASAP XML file, level-0 (x, y); none for no file."""
    if xml_path is None or not Path(xml_path).is_file():
        return [], []
    return read_asap_xml(xml_path), read_asap_xml(xml_path, groups=EXCLUSION_GROUPS)


def tumor_mask(
    polygons: Sequence[np.ndarray],
    size_xy_level0: tuple[int, int],
    level: int,
    exclusions: Sequence[np.ndarray] = (),
    max_strip_pixels: int = MAX_STRIP_PIXELS,
) -> np.ndarray:
    """uint8 (ceil(h / 2**level), ceil(w / 2**level)) mask, 1 = tumor, rasterised strip by strip."""
    downsample = 2**level
    width, height = (math.ceil(size / downsample) for size in size_xy_level0)
    out = np.zeros((height, width), np.uint8)
    if not len(polygons):
        return out
    rows_per_strip = max(1, max_strip_pixels // max(width, 1))
    for row in range(0, height, rows_per_strip):
        rows = min(rows_per_strip, height - row)
        out[row : row + rows] = rasterize_polygons(polygons, (0.0, row * downsample), (width, rows), downsample, exclusions)
    return out


def centre_region_labels(
    polygons: Sequence[np.ndarray],
    centres_xy_level0: np.ndarray,
    level: int,
    centre_px: int = 128,
    exclusions: Sequence[np.ndarray] = (),
    max_strip_pixels: int = MAX_STRIP_PIXELS,
) -> np.ndarray:
    """Boolean label per (x, y) level-0 centre: any tumor pixel (at ``level``) in its centre region."""
    centres = np.asarray(centres_xy_level0, np.float64).reshape(-1, 2)
    labels = np.zeros(len(centres), bool)
    if not len(polygons) or not len(centres):
        return labels
    downsample = float(2**level)
    vertices = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polygons])
    # mask pixels that can hold tumor: the annotations' bounding box, one pixel of margin
    col_lo, row_lo = (max(0, math.floor(v / downsample) - 1) for v in vertices.min(0))
    col_hi, row_hi = (math.ceil(v / downsample) + 2 for v in vertices.max(0))
    # mask pixel j lies in [a, b) when its centre (j + 0.5) * d does: j in [ceil(a/d - 0.5), ceil(b/d - 0.5))
    half = centre_px / 2.0
    first = np.ceil((centres - half) / downsample - 0.5).astype(np.int64)
    stop = np.ceil((centres + half) / downsample - 0.5).astype(np.int64)
    j0, j1 = np.clip(first[:, 0], col_lo, col_hi), np.clip(stop[:, 0], col_lo, col_hi)
    i0, i1 = np.clip(first[:, 1], row_lo, row_hi), np.clip(stop[:, 1], row_lo, row_hi)
    candidate = (j1 > j0) & (i1 > i0)
    width = col_hi - col_lo
    rows_per_strip = max(1, max_strip_pixels // width)
    for strip in range(row_lo, row_hi, rows_per_strip):
        chosen = np.flatnonzero(candidate & (i0 >= strip) & (i0 < strip + rows_per_strip))
        if not len(chosen):
            continue
        rows = int(i1[chosen].max()) - strip
        mask = rasterize_polygons(polygons, (col_lo * downsample, strip * downsample), (width, rows), downsample, exclusions)
        table = np.zeros((rows + 1, width + 1), np.int64)  # summed-area table: table[i, j] = mask[:i, :j].sum()
        table[1:, 1:] = mask.cumsum(0).cumsum(1)
        a, b = i0[chosen] - strip, i1[chosen] - strip
        c, d = j0[chosen] - col_lo, j1[chosen] - col_lo
        labels[chosen] = (table[b, d] - table[a, d] - table[b, c] + table[a, c]) > 0
    return labels
