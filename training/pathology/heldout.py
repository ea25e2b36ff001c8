"""Patch-level accuracy on the held-out patches of the validation slides (no augmentation, no jitter),
and the tumor probabilities of any set of patches (:func:`patch_probabilities`, also hard-negative mining's).

The patches are read and scaled exactly as the app does (:func:`operators.wsi.inference.to_network_input`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from operators.core.device import ComputeDevice
from operators.wsi.inference import to_network_input
from training.pathology.candidates import load_heldout
from training.pathology.dataset import PatchDataset, SlidePatches
from training.pathology.sampling import PatchDraws


def patch_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, tumor sensitivity and normal specificity of patch probabilities at ``threshold``, and the mean BCE loss."""
    probabilities = np.asarray(probabilities, np.float64)
    predicted = probabilities >= threshold
    truth = np.asarray(labels).astype(bool)
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(np.where(truth, np.log(clipped), np.log1p(-clipped)))) if truth.size else None

    def rate(selected: np.ndarray) -> float | None:
        return float((predicted[selected] == truth[selected]).mean()) if selected.any() else None

    return {
        "patches": int(truth.size),
        "tumor_patches": int(truth.sum()),
        "threshold": threshold,
        "accuracy": rate(np.ones_like(truth)),
        "tumor_sensitivity": rate(truth),
        "normal_specificity": rate(~truth),
        "loss": loss,
    }


def heldout_probabilities(
    network: torch.nn.Module, patches: SlidePatches, dataset: PatchDataset, compute: ComputeDevice, batch_size: int = 64, workers: int = 0
) -> np.ndarray:
    """Tumor probability of every patch of ``dataset`` (network in eval mode, restored afterwards)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = network.training
    network.eval()
    out = []
    with torch.inference_mode(), compute.autocast():
        for images, _ in loader:
            out.append(torch.sigmoid(network(to_network_input(images, compute)).float()).reshape(-1).cpu().numpy())
    network.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def patch_probabilities(
    network: torch.nn.Module,
    slide_paths: Sequence[Path],
    draws: PatchDraws,
    model_mpp: float,
    patch_px: int,
    compute: ComputeDevice,
    batch_size: int = 64,
    workers: int = 0,
) -> np.ndarray:
    """Tumor probability of the patch of every draw (``draws.slide_index`` into ``slide_paths``), read
    at the model's resolution without jitter or augmentation; the slides are closed afterwards."""
    patches = SlidePatches(slide_paths, model_mpp, patch_px)
    try:
        return heldout_probabilities(network, patches, PatchDataset(patches, draws, [0], augment=False), compute, batch_size, workers)
    finally:
        patches.close()


def heldout_accuracy(
    network: torch.nn.Module,
    prep_dir: Path,
    model_mpp: float,
    patch_px: int,
    compute: ComputeDevice,
    limit: int | None = None,
    batch_size: int = 64,
    workers: int = 0,
) -> dict[str, Any]:
    """:func:`patch_metrics` of ``network`` on the prep folder's held-out patches (the first ``limit``)."""
    slide_paths, draws = load_heldout(prep_dir, limit)
    if not len(draws):
        return patch_metrics(np.zeros(0), np.zeros(0))
    probabilities = patch_probabilities(network, slide_paths, draws, model_mpp, patch_px, compute, batch_size, workers)
    return patch_metrics(probabilities, draws.labels)
