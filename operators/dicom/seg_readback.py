"""Read a binary DICOM SEG back onto its source slices (highdicom), and compare masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np


def read_seg_on_source(seg_path: Path, source_sop_instance_uids: Sequence[str], segment_number: int = 1) -> np.ndarray:
    """The segment as uint8 (slice, row, column), slices in the order of ``source_sop_instance_uids``."""
    seg = hd.seg.segread(seg_path)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(source_sop_instance_uids), segment_numbers=[segment_number])
    return (pixels[..., 0] > 0).astype(np.uint8)


def dice_score(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total
