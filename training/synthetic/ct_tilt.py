"""Gantry-tilted CT: the slices a scanner with a tilted gantry reconstructs, sampled from a phantom.

With a tilted gantry the image planes tilt (ImageOrientationPatient) but the table, and so
ImagePositionPatient, still steps along the patient's z axis: slice k sits at
``origin + k * (0, 0, step)``, which is not along the slice normal. The stack is a sheared grid;
its slices lie ``step * cos(tilt)`` apart along their normal.

Frames: LPS millimetres. A tilt about x turns the column direction (rows of the image) from +y
towards +z; a tilt about y turns the row direction from +x towards -z. The grid is centred on
``centre_lps_mm``; :mod:`training.synthetic.ct_phantom` volumes are centred on the LPS origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.ndimage import map_coordinates

from .ct_phantom import CTPhantom
from .dicom_series import centred_origin_lps_mm, write_ct_series

TiltAxis = Literal["x", "y"]
AIR_HU = -1024


@dataclass(frozen=True)
class TiltedGrid:
    """Where every pixel of a (possibly tilted) stack of ``shape_zyx`` slices lies, in LPS mm."""

    shape_zyx: tuple[int, int, int]
    row_direction: np.ndarray  # direction of increasing column index
    column_direction: np.ndarray  # direction of increasing row index
    row_spacing_mm: float  # between rows (PixelSpacing[0])
    column_spacing_mm: float  # between columns (PixelSpacing[1])
    slice_step_lps_mm: np.ndarray  # from one slice's ImagePositionPatient to the next
    origin_lps_mm: np.ndarray  # ImagePositionPatient of slice 0

    @property
    def image_orientation(self) -> tuple[float, ...]:
        return (*self.row_direction.tolist(), *self.column_direction.tolist())

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def slice_points_lps_mm(self, index: int) -> np.ndarray:
        """(rows, columns, 3) LPS positions of the pixel centres of slice ``index``."""
        _, rows, columns = self.shape_zyx
        r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
        return (
            self.origin_lps_mm
            + index * self.slice_step_lps_mm
            + c[..., None] * self.column_spacing_mm * self.row_direction
            + r[..., None] * self.row_spacing_mm * self.column_direction
        )

    def write(self, hu_zyx: np.ndarray, out_dir: Path, tilt_deg: float | None = None, **series_kwargs) -> list[Path]:
        """The stack as a CT series (training.synthetic.dicom_series), GantryDetectorTilt set when given."""
        thickness = float(np.linalg.norm(self.slice_step_lps_mm))
        return write_ct_series(
            hu_zyx,
            (thickness, self.row_spacing_mm, self.column_spacing_mm),
            out_dir,
            origin_lps_mm=self.origin_lps_mm.tolist(),
            image_orientation=self.image_orientation,
            slice_step_lps_mm=self.slice_step_lps_mm.tolist(),
            gantry_detector_tilt_deg=tilt_deg,
            **series_kwargs,
        )


def tilted_grid(
    shape_zyx: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    tilt_deg: float,
    axis: TiltAxis = "x",
    centre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> TiltedGrid:
    """A gantry-tilted grid: ``spacing_zyx_mm`` is (table step along z, row spacing, column spacing)."""
    t = np.radians(tilt_deg)
    if axis == "x":
        row, column = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), np.sin(t)])
    elif axis == "y":
        row, column = np.array([np.cos(t), 0.0, -np.sin(t)]), np.array([0.0, 1.0, 0.0])
    else:
        raise ValueError(f"tilt axis must be 'x' or 'y', got {axis!r}")
    n, rows, columns = (int(v) for v in shape_zyx)
    step_z, row_spacing, column_spacing = (float(v) for v in spacing_zyx_mm)
    step = np.array([0.0, 0.0, step_z])
    half_extent = (columns - 1) / 2 * column_spacing * row + (rows - 1) / 2 * row_spacing * column + (n - 1) / 2 * step
    origin = np.asarray(centre_lps_mm, dtype=np.float64) - half_extent
    return TiltedGrid((n, rows, columns), row, column, row_spacing, column_spacing, step, origin)


def resample_phantom(phantom: CTPhantom, grid: TiltedGrid) -> tuple[np.ndarray, np.ndarray]:
    """The phantom's HU (int16, linear) and spleen mask (uint8, nearest) on ``grid``; air outside it."""
    spacing = np.asarray(phantom.spacing_zyx_mm, dtype=np.float64)[::-1]  # (x, y, z)
    phantom_origin = np.asarray(centred_origin_lps_mm(phantom.hu_zyx.shape, phantom.spacing_zyx_mm))
    source_hu = phantom.hu_zyx.astype(np.float32)
    hu = np.empty(grid.shape_zyx, np.int16)
    mask = np.empty(grid.shape_zyx, np.uint8)
    for k in range(grid.shape_zyx[0]):
        index_xyz = (grid.slice_points_lps_mm(k) - phantom_origin) / spacing
        coordinates = np.moveaxis(index_xyz[..., ::-1], -1, 0)  # (z, y, x) index planes
        hu[k] = np.rint(map_coordinates(source_hu, coordinates, order=1, cval=AIR_HU))
        mask[k] = map_coordinates(phantom.spleen_mask_zyx, coordinates, order=0, cval=0)
    return hu, mask
