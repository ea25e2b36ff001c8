"""The WSI maps compared cell by cell, matched through level 0.

The reference's patch of mask pixel (row, col) has its level-0 top-left corner in the dataset's
own sample metadata; its centre (+112) is looked up on the app's grid from the app's
``probability_map.json`` (cell centre = origin + index x stride). A centre that does not fall on
an app cell centre is counted as misaligned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MISALIGNED_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class AppMap:
    probabilities: np.ndarray
    tissue: np.ndarray  # bool, on the map's grid
    centre0_xy: tuple[float, float]
    stride_px: float


def _model_config() -> dict[str, Any]:
    from operators.models.config import load_model_config

    return load_model_config("pathology_tumor_detection")


def mask_stride_model_px() -> int:
    return int(_model_config()["tissue_mask"]["mask_downsample"])


def patch_px() -> int:
    return int(_model_config()["preprocessing"]["patch_size_px"])


def output_stride_px() -> int:
    return int(_model_config()["network"]["output_stride_px"])


def dense_tile_windows() -> int:
    return int(_model_config()["inference"]["dense_tile_windows"])


def load_app_map(slide_output: Path) -> AppMap:
    """The app's map, its geometry, and its tissue cells (the mask grid's tissue mask brought to
    the map's grid as the app does: a cell is tissue when its centre is in a tissue mask pixel)."""
    from PIL import Image

    probabilities = np.load(slide_output / "probability_map.npy")
    geometry = json.loads((slide_output / "probability_map.json").read_text())
    mask = np.asarray(Image.open(slide_output / "tissue_mask.png")) > 0
    centre0 = (float(geometry["cell_0_centre_xy_level0"][0]), float(geometry["cell_0_centre_xy_level0"][1]))
    stride = float(geometry["stride_px_level0"])
    rows, cols = probabilities.shape
    if mask.shape == probabilities.shape:
        tissue = mask
    else:  # a finer grid (dense): mask pixel (i, j) covers model px [j * s, (j + 1) * s) x [i * s, ...), s = the mask stride
        mask_stride = mask_stride_model_px() * float(geometry["window_px_level0"]) / float(geometry["window_model_px"])
        r = np.floor((centre0[1] + stride * np.arange(rows)) / mask_stride).astype(int)
        c = np.floor((centre0[0] + stride * np.arange(cols)) / mask_stride).astype(int)
        ok_r, ok_c = r < mask.shape[0], c < mask.shape[1]
        tissue = np.zeros((rows, cols), dtype=bool)
        tissue[np.ix_(ok_r, ok_c)] = mask[np.ix_(r[ok_r], c[ok_c])]
    return AppMap(probabilities, tissue, centre0, stride)


def cells_at(app: AppMap, centres_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, aligned) of the app cells centred at level-0 ``centres_xy`` (N, 2)."""
    col_f = (centres_xy[:, 0] - app.centre0_xy[0]) / app.stride_px
    row_f = (centres_xy[:, 1] - app.centre0_xy[1]) / app.stride_px
    rows, cols = np.rint(row_f).astype(int), np.rint(col_f).astype(int)
    aligned = (np.abs(row_f - rows) * app.stride_px < MISALIGNED_TOLERANCE_PX + 1e-9) & (
        np.abs(col_f - cols) * app.stride_px < MISALIGNED_TOLERANCE_PX + 1e-9
    )
    inside = (rows >= 0) & (cols >= 0) & (rows < app.probabilities.shape[0]) & (cols < app.probabilities.shape[1])
    return np.where(inside, rows, 0), np.where(inside, cols, 0), aligned & inside


def diff_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    if a.size == 0:
        return {"cells": 0}
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "cells": int(a.size),
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "p99_abs": float(np.quantile(d, 0.99)),
        "over_1e-3": int((d > 1e-3).sum()),
    }


def compare_with_reference(reference_dir: Path, app_output: Path) -> dict[str, Any]:
    """The app's map against the reference's on the same level-0 patches."""
    ref_map = np.load(reference_dir / "reference_map.npy")
    locations = np.load(reference_dir / "reference_locations.npy")  # mask row, mask col, top-left y, x
    app = load_app_map(app_output)
    reference_stride = float(json.loads((reference_dir / "reference.json").read_text())["mask_downsample"])
    half = patch_px() // 2
    centres = np.stack([locations[:, 3] + half, locations[:, 2] + half], axis=1).astype(np.float64)
    rows, cols, aligned = cells_at(app, centres)
    on_tissue = aligned & app.tissue[rows, cols]
    ref_values = ref_map[locations[:, 0], locations[:, 1]]
    app_values = app.probabilities[rows, cols]
    offset = centres[:, 0] - (app.centre0_xy[0] + cols * app.stride_px), centres[:, 1] - (app.centre0_xy[1] + rows * app.stride_px)
    hit = np.zeros(app.tissue.shape, dtype=bool)
    hit[rows[aligned], cols[aligned]] = True
    app_cells = int(app.tissue.sum())
    return {
        "reference_patches": len(locations),
        "app_tissue_cells": app_cells,
        "misaligned_reference_patches": int((~aligned).sum()),
        "max_centre_offset_px": float(max(np.abs(offset[0]).max(initial=0.0), np.abs(offset[1]).max(initial=0.0))),
        "reference_only_cells": int((aligned & ~app.tissue[rows, cols]).sum()),
        "app_only_cells": int((app.tissue & ~hit).sum())
        if app.stride_px == reference_stride
        else None,  # dense: most cells are between patches
        "diff": diff_stats(ref_values[on_tissue], app_values[on_tissue]),
    }


def compare_app_maps(coarse_output: Path, fine_output: Path) -> dict[str, Any]:
    """Two app maps on the cells of the coarser one that both computed (e.g. patch vs dense)."""
    coarse, fine = load_app_map(coarse_output), load_app_map(fine_output)
    r0, c0 = np.nonzero(coarse.tissue)
    centres = np.stack([coarse.centre0_xy[0] + c0 * coarse.stride_px, coarse.centre0_xy[1] + r0 * coarse.stride_px], axis=1)
    rows, cols, aligned = cells_at(fine, centres)
    both = aligned & fine.tissue[rows, cols]
    return {
        "coarse_cells": len(r0),
        "misaligned": int((~aligned).sum()),
        "diff": diff_stats(coarse.probabilities[r0[both], c0[both]], fine.probabilities[rows[both], cols[both]]),
    }
