"""Where a SEG's voxels are, read with pydicom alone (no project code): the independent geometry check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom


def seg_voxel_points_lps_mm(seg_path: Path) -> np.ndarray:
    """(n, 3) LPS centres (mm) of the SEG's foreground pixels, each placed through its own frame's plane position."""
    seg = pydicom.dcmread(seg_path)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float).reshape(2, 3)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    points = [np.zeros((0, 3))]
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        rows, columns = np.nonzero(frame)
        points.append(position + np.outer(columns * column_spacing, orientation[0]) + np.outer(rows * row_spacing, orientation[1]))
    return np.concatenate(points)
