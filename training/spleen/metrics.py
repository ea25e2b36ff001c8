"""Dice of sliding-window predictions, as the bundle measures it (foreground only, argmax of softmax)."""

from __future__ import annotations

import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot


def dice_of_labels(pred_label: torch.Tensor, true_label: torch.Tensor, num_classes: int = 2) -> float:
    """Foreground Dice of two (B, 1, ...) integer label maps; 1.0 when both are empty."""
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    metric(one_hot(pred_label.long(), num_classes), one_hot(true_label.long(), num_classes))
    return float(metric.aggregate().item())


def dice_from_logits(logits: torch.Tensor, true_label: torch.Tensor) -> float:
    """Dice of ``argmax(softmax(logits))`` (same as argmax of the logits) against the label."""
    pred = torch.argmax(logits, dim=1, keepdim=True)
    return dice_of_labels(pred.cpu(), true_label.cpu(), num_classes=logits.shape[1])
