"""Stage ``evaluate``: sliding-window Dice per case and mean, as the bundle computes it and as the app sees it.

For each case the image goes through the shared preprocessing (RAS, 1.5x1.5x2 mm, HU window),
the config's sliding window (roi, sw_batch_size, overlap), softmax argmax. ``dice_resampled`` compares
with the label under the same spatial transforms (the bundle's validation metric);
``dice_original`` resamples the prediction back onto the label's own grid (what the app delivers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SpatialResample

from operators.ct_preprocessing import spleen_dict_transforms
from operators.model_config import load_model_config
from training.provenance import write_json
from training.spleen import data
from training.spleen.engine import MODEL_NAME, choose_device, choose_precision, load_model, predict_logits
from training.spleen.metrics import dice_of_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    mean_dice_resampled: float
    mean_dice_original: float
    per_case: dict[str, dict[str, float]]
    metrics_path: Path | None


def evaluate(data_dir: Path, model_path: Path, metrics_path: Path | None = None, *, last_n: int | None = None,
             overlap: float | None = None, amp: str = "auto", device: str = "auto",
             model_name: str = MODEL_NAME) -> EvalResult:
    """Dice of ``model_path`` (``.ts`` TorchScript or ``.pt`` checkpoint) on the cases of an MSD folder.

    ``last_n`` evaluates only the last N cases (the bundle's validation split is the last 9).
    """
    model_config = load_model_config(model_name)
    inference = model_config["inference"]
    overlap = float(inference["overlap"] if overlap is None else overlap)
    items = data.load_datalist(Path(data_dir))
    if last_n is not None:
        items = items[-last_n:]
    torch_device = choose_device(device)
    precision = choose_precision(torch_device, amp)
    net = load_model(Path(model_path), model_config, torch_device)
    load = Compose([LoadImaged(keys=data.KEYS, image_only=True), EnsureChannelFirstd(keys=data.KEYS)])
    preprocess = Compose(spleen_dict_transforms(model_config["preprocessing"]))

    per_case: dict[str, dict[str, float]] = {}
    for item in items:
        started = time.monotonic()
        original = load(item)
        prepared = preprocess(dict(original))
        logits = predict_logits(net, prepared["image"].as_tensor()[None], inference, precision, overlap=overlap)
        pred = torch.argmax(logits, dim=1).cpu()  # (1, X, Y, Z)
        dice_resampled = dice_of_labels(pred[None], prepared["label"].as_tensor()[None])
        pred_original = _resample_to(pred, prepared["image"].affine, original["label"])
        dice_original = dice_of_labels(pred_original[None], original["label"].as_tensor()[None])
        name = Path(item["image"]).name
        per_case[name] = {"dice_resampled": dice_resampled, "dice_original": dice_original,
                          "seconds": round(time.monotonic() - started, 2)}
        logger.info("%s: Dice %.4f (resampled) %.4f (original grid)", name, dice_resampled, dice_original)

    result = EvalResult(
        mean_dice_resampled=sum(c["dice_resampled"] for c in per_case.values()) / len(per_case),
        mean_dice_original=sum(c["dice_original"] for c in per_case.values()) / len(per_case),
        per_case=per_case, metrics_path=Path(metrics_path) if metrics_path else None)
    if metrics_path is not None:
        write_json(Path(metrics_path), _metrics_json(result, data_dir, model_path, inference, overlap, precision.name))
    logger.info("mean Dice %.4f (resampled) %.4f (original grid) over %d cases", result.mean_dice_resampled,
                result.mean_dice_original, len(per_case))
    return result


def _resample_to(pred: torch.Tensor, pred_affine: torch.Tensor, reference: MetaTensor) -> torch.Tensor:
    """Nearest-neighbour resampling of a (1, X, Y, Z) label map onto the grid of ``reference``."""
    moved = SpatialResample(mode="nearest", padding_mode="zeros")(
        MetaTensor(pred.float(), affine=pred_affine), dst_affine=reference.affine,
        spatial_size=reference.shape[1:])
    return torch.as_tensor(moved).round().long()


def _metrics_json(result: EvalResult, data_dir, model_path, inference: dict[str, Any], overlap: float,
                  precision: str) -> dict[str, Any]:
    return {
        "model": str(model_path), "data_dir": str(data_dir), "cases": len(result.per_case),
        "roi_size": inference["roi_size"], "sw_batch_size": inference["sw_batch_size"], "overlap": overlap,
        "precision": precision,
        "mean_dice_resampled": result.mean_dice_resampled, "mean_dice_original": result.mean_dice_original,
        "per_case": result.per_case,
    }
