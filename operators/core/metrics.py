"""Dice of two segmentation masks: the one measure the spleen app's report, training and the benchmarks share."""

from __future__ import annotations

import numpy as np


def dice_score(pred: np.ndarray, truth: np.ndarray, label: int | None = None) -> float:
    """Dice of the voxels of ``label`` (any value > 0 when None) in two masks of one shape; 1.0 when both are empty.

    Plain numpy on one process: nothing is gathered across torch.distributed ranks (MONAI's
    ``DiceMetric.aggregate`` does, and rank 0 validating alone waited for the others forever).
    """
    if pred.shape != truth.shape:
        raise ValueError(f"masks of different shapes: {pred.shape} and {truth.shape}")
    a, b = (pred > 0, truth > 0) if label is None else (pred == label, truth == label)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
