"""Geometry of a stack of single-frame DICOM slices, in patient LPS millimetres.

Conventions (DICOM PS3.3 C.7.6.2): ImageOrientationPatient holds the row direction (the direction
of increasing column index) then the column direction (increasing row index); PixelSpacing holds
the spacing between rows then between columns. The slice normal is row x column.

Gantry tilt: with a tilted gantry the slices are tilted but the table, and so ImagePositionPatient,
steps along the patient's axis, not along the slice normal. The stack is then a sheared (not
orthogonal) grid. The affine here always uses the real step between slice positions, so every
geometric output (STL, centroids, bounding boxes) lands where the voxels are; the tilt angle is the
angle between that step and the normal (:func:`gantry_tilt_deg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

ORIENTATION_TOLERANCE = 1e-4
GANTRY_TILT_TOLERANCE_DEG = 0.5  # below this, a step off the normal is position rounding, not a tilt
COLLINEAR_TOLERANCE_MM = 0.1  # how far a slice position may lie off the line through the others, plus 1 % of a step


@dataclass(frozen=True)
class StackGeometry:
    """Slices ordered along their normal, with the spacing between them."""

    order: tuple[int, ...]  # indices into the input sequence, sorted by position along the normal
    positions_mm: np.ndarray  # position of each sorted slice along the normal
    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray
    positions_lps_mm: np.ndarray  # (n, 3) ImagePositionPatient of each sorted slice

    @property
    def gaps_mm(self) -> np.ndarray:
        return np.diff(self.positions_mm)

    @property
    def slice_step_lps_mm(self) -> np.ndarray:
        """The mean step between consecutive slice positions (LPS mm); along the normal unless the gantry is tilted."""
        if len(self.order) < 2:
            return np.zeros(3)
        return (self.positions_lps_mm[-1] - self.positions_lps_mm[0]) / (len(self.order) - 1)


GEOMETRY_VALUE_COUNTS = {"ImageOrientationPatient": 6, "ImagePositionPatient": 3, "PixelSpacing": 2}
UNIT_VECTOR_TOLERANCE = 1e-3  # how far a direction cosine vector's length may be from 1, and their dot product from 0


def geometry_value_problem(header: Dataset) -> str | None:
    """Why a slice's geometry values cannot be used (wrong count, not numbers, non-positive spacing or matrix,
    direction cosines that are not two orthogonal unit vectors), or None when they can. The attributes must be present."""
    for keyword, count in GEOMETRY_VALUE_COUNTS.items():
        raw = header[keyword].value
        values = [raw] if raw is None or isinstance(raw, (str, bytes, int, float)) else list(raw)
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            return f"{keyword} {raw!r} is not numbers"
        if len(numbers) != count or not np.all(np.isfinite(numbers)):
            return f"{keyword} {numbers} is not {count} finite numbers"
        if keyword == "PixelSpacing" and min(numbers) <= 0:
            return f"PixelSpacing {numbers} is not positive"
    for keyword in ("Rows", "Columns"):
        if not isinstance(header.get(keyword), int) or header.get(keyword) <= 0:
            return f"{keyword} {header.get(keyword)!r} is not a positive number of pixels"
    row, column = orientation_of(header)
    if max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(float(row @ column))) > UNIT_VECTOR_TOLERANCE:
        return f"ImageOrientationPatient {orientation_of(header).ravel().tolist()} is not two orthogonal unit vectors"
    return None


def orientation_of(header: Dataset) -> np.ndarray:
    """ImageOrientationPatient as a (2, 3) array: row direction, column direction."""
    return np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=np.float64).reshape(2, 3)


def stack_geometry(headers: Sequence[Dataset]) -> StackGeometry:
    """Order slices by position along the normal of the first slice (never by InstanceNumber)."""
    orientation = orientation_of(headers[0])
    normal = np.cross(orientation[0], orientation[1])
    positions_lps = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers], dtype=np.float64).reshape(-1, 3)
    positions = positions_lps @ normal
    order = np.argsort(positions, kind="stable")
    return StackGeometry(
        order=tuple(int(i) for i in order),
        positions_mm=positions[order],
        row_direction=orientation[0],
        column_direction=orientation[1],
        normal=normal,
        positions_lps_mm=positions_lps[order],
    )


def gantry_tilt_deg(geometry: StackGeometry) -> float:
    """Angle (degrees, 0..90) between the step of the slice positions and the slice normal; 0 for one slice."""
    step = geometry.slice_step_lps_mm
    length = float(np.linalg.norm(step))
    if length == 0:
        return 0.0
    cosine = abs(float(np.dot(step, geometry.normal))) / length
    return float(np.degrees(np.arccos(min(cosine, 1.0))))


def off_line_reason(geometry: StackGeometry) -> str | None:
    """Why the slice positions do not lie on one straight line of even steps (None when they do).

    Sheared stacks (gantry tilt) are fine; a stack whose in-plane offset changes from slice to slice
    (two tilts in one series, or a moved table) has no single affine and is refused.
    """
    n = len(geometry.order)
    if n < 3:
        return None
    expected = geometry.positions_lps_mm[0] + np.arange(n)[:, None] * geometry.slice_step_lps_mm
    distance = np.linalg.norm(geometry.positions_lps_mm - expected, axis=1)
    worst = int(np.argmax(distance))
    if distance[worst] > COLLINEAR_TOLERANCE_MM + 0.01 * float(np.linalg.norm(geometry.slice_step_lps_mm)):
        return (
            f"slice positions do not lie on one line: sorted slice {worst} is {distance[worst]:.3g} mm "
            "off the line through the others (a change of gantry tilt or table offset within the series?)"
        )
    return None


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
    """4x4 affine mapping (column, row, slice) indices to LPS mm for the sorted stack.

    Columns: row direction x column spacing, column direction x row spacing, and the real step
    between slice positions (sheared when the gantry is tilted); one slice steps its thickness along
    the normal.
    """
    row_spacing, column_spacing = (float(v) for v in first_sorted_header.PixelSpacing)
    origin = np.asarray([float(v) for v in first_sorted_header.ImagePositionPatient], dtype=np.float64)
    slice_thickness = float(first_sorted_header.get("SliceThickness") or 0) or 1.0
    affine = np.eye(4)
    affine[:3, 0] = geometry.row_direction * column_spacing
    affine[:3, 1] = geometry.column_direction * row_spacing
    affine[:3, 2] = geometry.slice_step_lps_mm if n_slices > 1 else geometry.normal * slice_thickness
    affine[:3, 3] = origin
    return affine
