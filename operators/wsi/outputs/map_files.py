"""The WSI app's plain outputs: lesion detections as a Camelyon16 submission CSV, and the probability
map as .npy (raw float32), a pyramidal tiled TIFF that slide viewers open, and a JSON sidecar.

Detections CSV: the format the official Camelyon16 evaluation reads (``readCSVContent`` in
computationalpathologygroup/Camelyon16 ``Python/Evaluation_FROC.py``): one detection per line,
``probability,x,y``, no header, x and y integer level-0 pixels (the evaluation parses them with
``int()``, so ``12.0`` would fail), nothing else on the line. An empty file means no detections.

Probability map files (see :func:`probability_map_sidecar` for the sidecar's keys):

* ``.npy``: ``probabilities[row, col]``, float32, exactly as computed;
* ``.tif``: the same grid as 8-bit grayscale (``round(255 * p)``), 256-px tiles, deflate, one page
  per pyramid level (each half the one before, down to one tile), resolution tags in pixels per
  centimetre at the map's resolution (``grid.map_mpp`` micrometres per cell, times 2^k at level k),
  so OpenSlide reports ``openslide.mpp-x`` = map_mpp;
* sidecar ``.json``: how cells relate to level 0. Cell (row, col) is the classification window
  centred at level-0 ``(x, y) = cell_0_centre_xy_level0 + (col, row) * stride_px_level0``; as an
  image, TIFF pixel (row, col) covers level-0 ``[x0 + col*S, x0 + (col+1)*S) x [y0 + row*S, ...)``
  with ``(x0, y0) = cell_0_corner_xy_level0`` (0, 0 on the default grid) and ``S = stride_px_level0``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from operators.core.atomic_io import write_atomically, write_json_atomically
from operators.wsi.grid import ProbabilityMap
from operators.wsi.nms import Detection

logger = logging.getLogger(__name__)

TIFF_TILE_PX = 256
TIFF_VALUE_SCALE = 255
MICROMETRES_PER_CENTIMETRE = 1e4


# ---------------------------------------------------------------------------------------------
# Detections CSV


def detections_csv_text(detections: Sequence[Detection]) -> str:
    """The CSV content: ``probability,x,y`` per line (shortest exact float, integer level-0 pixels)."""
    lines = []
    for detection in detections:
        probability = float(detection.probability)
        if not math.isfinite(probability):
            raise ValueError(f"detection probability must be finite, got {detection.probability}")
        x, y = detection.x, detection.y
        if int(x) != x or int(y) != y:
            raise ValueError(f"detection coordinates must be integer level-0 pixels, got ({x}, {y})")
        lines.append(f"{probability!r},{int(x)},{int(y)}\n")
    return "".join(lines)


def write_detections_csv(detections: Sequence[Detection], path: Path) -> Path:
    """Write the detections in the Camelyon16 submission format (see the module docstring)."""
    text = detections_csv_text(detections)
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="ascii"))


def read_detections_csv(path: Path) -> list[Detection]:
    """Read a detections CSV the way the official evaluation does: ``float, int, int`` per line."""
    detections = []
    with open(path, newline="", encoding="ascii") as stream:
        for fields in csv.reader(stream):
            if len(fields) != 3:
                raise ValueError(f"{path}: expected 'probability,x,y', got {','.join(fields)!r}")
            detections.append(Detection(float(fields[0]), int(fields[1]), int(fields[2])))
    return detections


# ---------------------------------------------------------------------------------------------
# Probability map: .npy, pyramidal TIFF, sidecar


@dataclass(frozen=True)
class ProbabilityMapFiles:
    npy: Path
    tiff: Path
    sidecar: Path


def tiff_pyramid(probabilities: np.ndarray, tile_px: int = TIFF_TILE_PX) -> list[np.ndarray]:
    """uint8 levels (0..255): the map, then 2x2 means (of the float map) until it fits in one tile."""
    level = np.asarray(probabilities, dtype=np.float32)
    levels = [level]
    while max(level.shape) > tile_px:
        rows, cols = level.shape
        padded = np.pad(level, ((0, rows % 2), (0, cols % 2)), mode="edge")
        level = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean(axis=(1, 3))
        levels.append(level)
    return [np.round(np.clip(lv, 0.0, 1.0) * TIFF_VALUE_SCALE).astype(np.uint8) for lv in levels]


def write_probability_tiff(prob_map: ProbabilityMap, path: Path, tile_px: int = TIFF_TILE_PX) -> list[tuple[int, int]]:
    """The pyramidal grayscale TIFF; returns its levels' (width, height)."""
    if tile_px % 16:
        raise ValueError(f"TIFF tiles must be a multiple of 16 pixels, got {tile_px}")
    levels = tiff_pyramid(prob_map.probabilities, tile_px)
    map_mpp = prob_map.grid.map_mpp

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp) as writer:
            for index, level in enumerate(levels):
                pixels_per_cm = MICROMETRES_PER_CENTIMETRE / (map_mpp * 2**index)
                writer.write(
                    level,
                    photometric="minisblack",
                    tile=(tile_px, tile_px),
                    compression="zlib",
                    resolution=(pixels_per_cm, pixels_per_cm),
                    resolutionunit="CENTIMETER",
                    subfiletype=1 if index else 0,
                    description=None if index else f"Tumor probability map, value = round({TIFF_VALUE_SCALE} * p), {map_mpp:.6g} um/pixel",
                    metadata=None,
                )

    write_atomically(path, write)
    return [(level.shape[1], level.shape[0]) for level in levels]


def probability_map_sidecar(
    prob_map: ProbabilityMap, npy_name: str, tiff_name: str, tiff_levels_xy: list[tuple[int, int]]
) -> dict[str, Any]:
    """How the map's cells relate to the slide's level 0 (JSON-serialisable)."""
    grid = prob_map.grid
    stride = grid.stride_level0_px
    origin_x, origin_y = grid.origin_xy_level0
    rows, cols = prob_map.probabilities.shape
    return {
        "description": "Tumor probability per classification window; see cell_convention",
        "cell_convention": (
            "cell (row, col) is the window centred at level-0 (x, y) = cell_0_centre_xy_level0 + (col, row) * stride_px_level0; "
            "as an image, it covers level-0 [x0 + col*S, x0 + (col+1)*S) x [y0 + row*S, y0 + (row+1)*S) "
            "with (x0, y0) = cell_0_corner_xy_level0 and S = stride_px_level0"
        ),
        "npy": npy_name,
        "tiff": tiff_name,
        "shape_rows_cols": [rows, cols],
        "dtype": "float32",
        "cell_0_centre_xy_level0": [origin_x, origin_y],
        "cell_0_corner_xy_level0": [origin_x - 0.5 * stride, origin_y - 0.5 * stride],
        "stride_px_level0": stride,
        "window_px_level0": grid.window_model_px * grid.level0_px_per_model_px,
        "slide_mpp": grid.slide_mpp,
        "model_mpp": grid.model_mpp,
        "map_mpp": grid.map_mpp,
        "stride_model_px": grid.stride_model_px,
        "window_model_px": grid.window_model_px,
        "tiff_value_scale": TIFF_VALUE_SCALE,
        "tiff_levels_xy": [list(size) for size in tiff_levels_xy],
        "tiff_resolution_unit": "CENTIMETER",
    }


def write_probability_map(
    prob_map: ProbabilityMap, npy_path: Path, tiff_path: Path, sidecar_path: Path | None = None
) -> ProbabilityMapFiles:
    """Write the map as .npy, pyramidal TIFF and JSON sidecar (default: ``npy_path`` with suffix .json)."""
    npy_path, tiff_path = Path(npy_path), Path(tiff_path)
    sidecar_path = npy_path.with_suffix(".json") if sidecar_path is None else Path(sidecar_path)
    probabilities = np.asarray(prob_map.probabilities, dtype=np.float32)
    if probabilities.ndim != 2 or probabilities.shape != tuple(prob_map.grid.shape_rows_cols):
        raise ValueError(f"map of shape {probabilities.shape} does not match its grid {prob_map.grid.shape_rows_cols}")
    if not np.isfinite(probabilities).all():
        raise ValueError("the probability map holds NaN or infinite values")

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as stream:  # np.save on a path would append .npy to the temporary name
            np.save(stream, probabilities, allow_pickle=False)

    write_atomically(npy_path, save_npy)
    levels = write_probability_tiff(prob_map, tiff_path)
    write_json_atomically(sidecar_path, probability_map_sidecar(prob_map, npy_path.name, tiff_path.name, levels))
    logger.info(
        "Wrote the probability map %s (%d x %d cells, %.4g um/cell; TIFF levels %s)",
        npy_path,
        probabilities.shape[1],
        probabilities.shape[0],
        prob_map.grid.map_mpp,
        levels,
    )
    return ProbabilityMapFiles(npy_path, tiff_path, sidecar_path)
