"""Stage ``evaluate``: Dice per case and mean, computed by the app's own inference functions.

For each case the image goes through exactly what the spleen app runs
(:mod:`operators.ct.inference`: the shared preprocessing, the config's sliding window,
softmax, back to the source grid). ``dice_resampled`` compares the probability > 0.5 with the label
under the same spatial transforms (the bundle's validation metric); ``dice_original`` compares the
mask the app would deliver, on the image's own grid, with the label as stored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from operators.core.device import ComputeDevice, Precision, choose_compute_device
from operators.core.metrics import dice_score
from operators.ct.inference import (
    SlidingWindowSettings,
    foreground_probability,
    preprocess_ct,
    probability_to_source_mask,
)
from operators.ct.preprocessing import LPS_TO_RAS, metatensor_to_volume, spleen_dict_transforms
from operators.models.config import load_model_config
from operators.models.loader import load_model
from training.provenance import write_json
from training.spleen import data
from training.spleen.network import MODEL_NAME, build_network

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    mean_dice_resampled: float
    mean_dice_original: float
    per_case: dict[str, dict[str, float]]
    metrics_path: Path | None


def evaluate(
    data_dir: Path,
    model_path: Path,
    metrics_path: Path | None = None,
    *,
    last_n: int | None = None,
    overlap: float | None = None,
    precision: Precision = "auto",
    device: str = "auto",
    model_name: str = MODEL_NAME,
) -> EvalResult:
    """Dice of ``model_path`` (``.ts`` TorchScript or ``.pt`` checkpoint) on the cases of an MSD folder.

    ``last_n`` evaluates only the last N cases (the bundle's validation split is the last 9).
    """
    model_config = load_model_config(model_name)
    inference = model_config["inference"]
    overlap = float(inference["overlap"] if overlap is None else overlap)
    items = data.load_datalist(Path(data_dir))
    if last_n is not None:
        items = items[-last_n:]
    compute = choose_compute_device(device, precision)
    model = load_model(Path(model_path), lambda: build_network(model_config), compute.device)
    settings = SlidingWindowSettings.from_config(inference, overlap=overlap)
    load = Compose([LoadImaged(keys=data.KEYS, image_only=True), EnsureChannelFirstd(keys=data.KEYS)])
    label_on_model_grid = Compose(spleen_dict_transforms(model_config["preprocessing"]))

    per_case: dict[str, dict[str, float]] = {}
    for item in items:
        started = time.monotonic()
        original = load(item)
        hu_zyx = metatensor_to_volume(original["image"]).astype("float32")
        affine_lps = LPS_TO_RAS @ original["image"].affine.numpy()  # the flip is its own inverse
        image, transforms = preprocess_ct(hu_zyx, affine_lps, model_config["preprocessing"])
        probability = foreground_probability(image, model.module, settings, compute)
        label = label_on_model_grid(dict(original))["label"].as_tensor()
        dice_resampled = dice_score((probability > 0.5).numpy(), label.numpy())
        mask_zyx = probability_to_source_mask(probability, image, transforms)
        label_zyx = metatensor_to_volume(original["label"]) > 0
        dice_original = dice_score(mask_zyx, label_zyx)
        name = Path(item["image"]).name
        per_case[name] = {"dice_resampled": dice_resampled, "dice_original": dice_original, "seconds": round(time.monotonic() - started, 2)}
        logger.info("%s: Dice %.4f (resampled) %.4f (original grid)", name, dice_resampled, dice_original)

    result = EvalResult(
        mean_dice_resampled=sum(c["dice_resampled"] for c in per_case.values()) / len(per_case),
        mean_dice_original=sum(c["dice_original"] for c in per_case.values()) / len(per_case),
        per_case=per_case,
        metrics_path=Path(metrics_path) if metrics_path else None,
    )
    if metrics_path is not None:
        write_json(Path(metrics_path), _metrics_json(result, data_dir, model, settings, compute))
    logger.info(
        "mean Dice %.4f (resampled) %.4f (original grid) over %d cases",
        result.mean_dice_resampled,
        result.mean_dice_original,
        len(per_case),
    )
    return result


def _metrics_json(result: EvalResult, data_dir, model, settings: SlidingWindowSettings, compute: ComputeDevice) -> dict[str, Any]:
    return {
        "model": model.identity(),
        "data_dir": str(data_dir),
        "cases": len(result.per_case),
        "roi_size": list(settings.roi_size),
        "sw_batch_size": settings.sw_batch_size,
        "overlap": settings.overlap,
        "crop_to_body": settings.crop_to_body,
        **compute.as_json(),
        "mean_dice_resampled": result.mean_dice_resampled,
        "mean_dice_original": result.mean_dice_original,
        "per_case": result.per_case,
    }
