"""Read a binary DICOM SEG back onto its source slices (highdicom) and check its frames' geometry.

The one read-back the spleen app's report, its tests and the spleen benchmark use: frames are
placed on the source slices by ReferencedSOPInstanceUID, a source slice without a frame is empty
(writers may omit empty frames), and :func:`frame_geometry_problems` checks that each frame lies
where its source slice lies (plane position, orientation, pixel spacing, rows and columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

POSITION_TOLERANCE_MM = 1e-3
IN_PLANE_TOLERANCE = 1e-4  # ImageOrientationPatient cosines, PixelSpacing mm


@dataclass(frozen=True)
class SourceGeometry:
    """Where the source slices lie: what a SEG's frames must repeat."""

    rows: int
    columns: int
    orientation: tuple[float, ...]  # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing_mm: tuple[float, float]  # PixelSpacing (between rows, between columns)
    positions_mm: dict[str, tuple[float, float, float]]  # ImagePositionPatient per SOP Instance UID

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> SourceGeometry:
        """The geometry of one series' slices (headers are enough; the first gives the in-plane values)."""
        first = datasets[0]
        return cls(
            rows=int(first.Rows),
            columns=int(first.Columns),
            orientation=tuple(float(v) for v in first.ImageOrientationPatient),
            pixel_spacing_mm=(float(first.PixelSpacing[0]), float(first.PixelSpacing[1])),
            positions_mm={str(ds.SOPInstanceUID): tuple(float(v) for v in ds.ImagePositionPatient) for ds in datasets},
        )


def mask_on_source(
    seg: hd.seg.Segmentation,
    source_sop_instance_uids: Sequence[str],
    segment_number: int = 1,
    source_frame_numbers: Sequence[int] | None = None,
) -> np.ndarray:
    """The segment as uint8 0/1 (slice, row, column), slices in the order of ``source_sop_instance_uids``.

    For a multi-frame source (Enhanced CT) pass its one SOP Instance UID and ``source_frame_numbers``
    (1-based, in the order the slices are wanted).
    """
    common = {"segment_numbers": [segment_number], "combine_segments": True, "assert_missing_frames_are_empty": True}
    if source_frame_numbers is not None:
        (uid,) = source_sop_instance_uids
        pixels = seg.get_pixels_by_source_frame(uid, list(source_frame_numbers), dtype=np.uint8, **common)
    else:
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(source_sop_instance_uids), dtype=np.uint8, **common)
    return (np.asarray(pixels) > 0).astype(np.uint8)


def read_seg_on_source(
    seg_path: Path, source_sop_instance_uids: Sequence[str], segment_number: int = 1, source_frame_numbers: Sequence[int] | None = None
) -> np.ndarray:
    """The segment of the SEG file at ``seg_path`` on the source slices (see :func:`mask_on_source`)."""
    return mask_on_source(hd.seg.segread(seg_path), source_sop_instance_uids, segment_number, source_frame_numbers)


def frame_geometry_problems(seg: Dataset, source: SourceGeometry, tolerance_mm: float = POSITION_TOLERANCE_MM) -> list[str]:
    """What in the SEG does not lie on its source slices; empty when every frame does."""
    problems = _in_plane_problems(seg, source)
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if uid not in source.positions_mm:
            problems.append(f"frame {index + 1} references unknown instance {uid}")
            continue
        if "PlanePositionSequence" not in frame:
            continue
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        offset = float(np.abs(position - np.asarray(source.positions_mm[uid])).max())
        if offset > tolerance_mm:
            problems.append(f"frame {index + 1} plane position {position.tolist()} is {offset:.3f} mm off its source slice")
    return problems


def _in_plane_problems(seg: Dataset, source: SourceGeometry) -> list[str]:
    problems = []
    if (int(seg.Rows), int(seg.Columns)) != (source.rows, source.columns):
        problems.append(f"SEG is {seg.Rows}x{seg.Columns}, source {source.rows}x{source.columns}")
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" in shared:
        orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
        if not np.allclose(orientation, source.orientation, atol=IN_PLANE_TOLERANCE):
            problems.append(f"SEG orientation {orientation.tolist()} != source {list(source.orientation)}")
    if "PixelMeasuresSequence" in shared:
        spacing = np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)
        if not np.allclose(spacing, source.pixel_spacing_mm, atol=IN_PLANE_TOLERANCE):
            problems.append(f"SEG pixel spacing {spacing.tolist()} != source {list(source.pixel_spacing_mm)}")
    return problems
