"""Network builders from the shared model configs (MONAI networks only: torchvision is unusable here)."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNet, resnet18


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


class ResNet18ConvHead(torch.nn.Module):
    """ResNet18 whose fully connected layer is a 1x1 convolution, as MONAI's
    ``TorchVisionFCModel("resnet18", num_classes=1, use_conv=True)``, without torchvision.

    The module names match that model's state dict: ``features.0`` conv1, ``features.1`` bn1,
    ``features.4`` to ``features.7`` layer1 to layer4 (torchvision's names inside, e.g.
    ``features.5.0.downsample.0.weight``), ``fc`` a Conv2d(512, num_classes, 1). MONAI's ResNet
    with ``bias_downsample=False`` has exactly torchvision's parameters.

    Input (N, 3, H, W) RGB scaled to -1..1. Output (N, num_classes, (H - 224) / 32 + 1,
    (W - 224) / 32 + 1) logits: one per 224-pixel window at a stride of 32 pixels, so a 224 patch
    gives (N, num_classes, 1, 1) and a larger tile gives the dense map of its windows.
    """

    def __init__(self, num_classes: int = 1, pool_size: int = 7, pool_stride: int = 1) -> None:
        super().__init__()
        backbone = resnet18(
            spatial_dims=2, n_input_channels=3, num_classes=num_classes, conv1_t_size=7, conv1_t_stride=2, bias_downsample=False
        )
        self.features = torch.nn.Sequential(*list(backbone.children())[:-2])
        self.pool = torch.nn.AvgPool2d(kernel_size=pool_size, stride=pool_stride)
        self.fc = torch.nn.Conv2d(512, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)))


def build_patch_classifier(network_config: dict[str, Any]) -> ResNet18ConvHead:
    """The model-zoo pathology_tumor_detection classifier, from the ``network`` section of its config."""
    if network_config["backbone"] != "resnet18":
        raise ValueError(f"unsupported backbone {network_config['backbone']!r}")
    return ResNet18ConvHead(network_config["num_classes"], network_config["pool_size"], network_config["pool_stride"])
