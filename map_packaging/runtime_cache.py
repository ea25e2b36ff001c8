"""Pre-build a MAP's converted models, so that its first run pays no OpenVINO conversion.

``python -m map_packaging stage --app APP --out STAGED --models MODEL --prebuild-runtime-cache`` converts
the app's model into ``STAGED/runtime_cache/<key>/model.xml`` under the key the app looks up at run time
(operators.models.runtime.cache_key: the model's SHA-256, the OpenVINO version, the precision), for each
precision OpenVINO may run it in. The app reads that folder (read-only) before its own cache.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from operators.models.config import load_model_config
from operators.models.loader import find_model_file, load_model
from operators.models.networks import build_patch_classifier, build_spleen_unet
from operators.models.runtime import PREBUILT_CACHE_DIRNAME, cache_key, convert_to_ir
from operators.wsi.inference import InferenceSettings

from .app_specs import AppSpec

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")  # OpenVINO's CPU precisions; the IR is the same float32 graph for both


@dataclass(frozen=True)
class ConvertibleModel:
    build: Callable[[dict], torch.nn.Module]
    example: Callable[[dict], torch.Tensor]  # one input batch, from the model config


CONVERTIBLE = {
    "spleen_ct_segmentation": ConvertibleModel(
        build_spleen_unet, lambda c: torch.zeros(c["inference"]["sw_batch_size"], 1, *c["inference"]["roi_size"])
    ),
    "pathology_tumor_detection": ConvertibleModel(
        build_patch_classifier,
        lambda c: torch.zeros(
            InferenceSettings.cpu_micro_batch, 3, c["preprocessing"]["patch_size_px"], c["preprocessing"]["patch_size_px"]
        ),
    ),
}


def prebuild_runtime_cache(spec: AppSpec, staged: Path, model_path: Path) -> list[Path]:
    """Convert ``model_path`` (a file, or a folder holding one) for ``spec``'s app into ``staged``'s
    runtime cache; returns the written model folders."""
    model_name = spec.model_names[0]
    config = load_model_config(model_name)
    convertible = CONVERTIBLE[model_name]
    model = load_model(find_model_file(model_path), lambda: convertible.build(config["network"]), torch.device("cpu"))
    cache = staged / PREBUILT_CACHE_DIRNAME
    first = convert_to_ir(model.module, convertible.example(config), cache / cache_key(model.sha256, PRECISIONS[0]))
    written = [first.parent]
    for precision in PRECISIONS[1:]:
        target = cache / cache_key(model.sha256, precision)
        shutil.copytree(first.parent, target)
        written.append(target)
    logger.info("Pre-built OpenVINO models for %s in %s", model.name, cache)
    return written
