"""Dice as the bundle measures it: foreground only, on integer label maps."""

from __future__ import annotations

import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot


def dice_of_labels(pred_label: torch.Tensor, true_label: torch.Tensor, num_classes: int = 2) -> float:
    """Foreground Dice of two (B, 1, ...) integer label maps; 1.0 when both are empty."""
    # the functional form: DiceMetric.aggregate() gathers over torch.distributed ranks when a process
    # group exists, and rank 0 validating alone would wait for the others forever
    dice = compute_dice(
        one_hot(pred_label.long(), num_classes), one_hot(true_label.long(), num_classes), include_background=False, ignore_empty=False
    )
    return float(dice.mean().item())
