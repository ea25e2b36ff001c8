"""Small whole-slide TIFFs written with tifffile for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def write_pyramid(
    path: Path,
    level0: np.ndarray,
    levels: int = 3,
    unit: str = "CENTIMETER",
    mpp: float | None = 0.25,
    tile: tuple[int, int] | None = (256, 256),
    **options,
) -> list[np.ndarray]:
    """A pyramidal TIFF (levels as pages, halved by 2x2 block means), resolution tags in ``unit``."""
    arrays = [level0]
    for _ in range(levels - 1):
        a = arrays[-1]
        arrays.append(a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8))
    per_unit = {"CENTIMETER": 1e4, "INCH": 25400.0}[unit]
    resolution = dict(resolution=(per_unit / mpp, per_unit / mpp), resolutionunit=unit) if mpp else {}
    with tifffile.TiffWriter(path) as writer:
        for index, array in enumerate(arrays):
            writer.write(array, photometric="rgb", tile=tile, subfiletype=1 if index else 0, **resolution, **options)
    return arrays
