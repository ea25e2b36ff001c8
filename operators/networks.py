"""Network builders from the shared model configs (MONAI networks only: torchvision is unusable here)."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNet


def build_spleen_unet(network_config: dict[str, Any]) -> torch.nn.Module:
    """The model-zoo spleen_ct_segmentation 3D UNet, from the ``network`` section of its config."""
    return UNet(
        spatial_dims=network_config["spatial_dims"],
        in_channels=network_config["in_channels"],
        out_channels=network_config["out_channels"],
        channels=tuple(network_config["channels"]),
        strides=tuple(network_config["strides"]),
        num_res_units=network_config["num_res_units"],
        norm=network_config["norm"],
    )
