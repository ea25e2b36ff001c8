"""The network the spleen training stages share: the bundle's UNet, built from the model config."""

from __future__ import annotations

from typing import Any

import torch

from operators.models.networks import build_spleen_unet

MODEL_NAME = "spleen_ct_segmentation"


def build_network(model_config: dict[str, Any]) -> torch.nn.Module:
    return build_spleen_unet(model_config["network"])
