"""Dice as the bundle measures it: foreground only, on integer label maps."""

from __future__ import annotations

import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot


def dice_of_labels(pred_label: torch.Tensor, true_label: torch.Tensor, num_classes: int = 2) -> float:
    """Foreground Dice of two (B, 1, ...) integer label maps; 1.0 when both are empty."""
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    metric(one_hot(pred_label.long(), num_classes), one_hot(true_label.long(), num_classes))
    return float(metric.aggregate().item())
