"""Geometry of a stack of single-frame DICOM slices, in patient LPS millimetres.

Conventions (DICOM PS3.3 C.7.6.2): ImageOrientationPatient holds the row direction (the direction
of increasing column index) then the column direction (increasing row index); PixelSpacing holds
the spacing between rows then between columns. The slice normal is row x column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class StackGeometry:
    """Slices ordered along their normal, with the spacing between them."""

    order: tuple[int, ...]  # indices into the input sequence, sorted by position along the normal
    positions_mm: np.ndarray  # position of each sorted slice along the normal
    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray

    @property
    def gaps_mm(self) -> np.ndarray:
        return np.diff(self.positions_mm)


def orientation_of(header: Dataset) -> np.ndarray:
    """ImageOrientationPatient as a (2, 3) array: row direction, column direction."""
    return np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=np.float64).reshape(2, 3)


def stack_geometry(headers: Sequence[Dataset]) -> StackGeometry:
    """Order slices by position along the normal of the first slice (never by InstanceNumber)."""
    orientation = orientation_of(headers[0])
    normal = np.cross(orientation[0], orientation[1])
    positions = np.asarray([np.dot(normal, [float(v) for v in h.ImagePositionPatient]) for h in headers], dtype=np.float64)
    order = np.argsort(positions, kind="stable")
    return StackGeometry(
        order=tuple(int(i) for i in order),
        positions_mm=positions[order],
        row_direction=orientation[0],
        column_direction=orientation[1],
        normal=normal,
    )


def uneven_spacing_reason(gaps_mm: np.ndarray, relative_tolerance: float = 0.01, absolute_tolerance_mm: float = 0.01) -> str | None:
    """Why the slice spacing is not usable (duplicates, gaps, uneven steps), or None when it is even."""
    if gaps_mm.size == 0:
        return None
    if np.any(gaps_mm <= absolute_tolerance_mm):
        index = int(np.argmax(gaps_mm <= absolute_tolerance_mm))
        return f"two slices at the same position (sorted slices {index} and {index + 1})"
    median = float(np.median(gaps_mm))
    deviation = np.abs(gaps_mm - median)
    worst = int(np.argmax(deviation))
    if deviation[worst] > max(absolute_tolerance_mm, relative_tolerance * median):
        return (
            f"uneven slice spacing: {gaps_mm[worst]:.3g} mm between sorted slices {worst} and {worst + 1} "
            f"where the median is {median:.3g} mm (a missing slice?)"
        )
    return None


def index_to_lps_affine(first_sorted_header: Dataset, geometry: StackGeometry, n_slices: int) -> np.ndarray:
    """4x4 affine mapping (column, row, slice) indices to LPS mm for the sorted stack."""
    row_spacing, column_spacing = (float(v) for v in first_sorted_header.PixelSpacing)
    origin = np.asarray([float(v) for v in first_sorted_header.ImagePositionPatient], dtype=np.float64)
    slice_step = (geometry.positions_mm[-1] - geometry.positions_mm[0]) / (n_slices - 1) if n_slices > 1 else 1.0
    slice_thickness = float(first_sorted_header.get("SliceThickness") or 0) or 1.0
    affine = np.eye(4)
    affine[:3, 0] = geometry.row_direction * column_spacing
    affine[:3, 1] = geometry.column_direction * row_spacing
    affine[:3, 2] = geometry.normal * (slice_step if n_slices > 1 else slice_thickness)
    affine[:3, 3] = origin
    return affine
