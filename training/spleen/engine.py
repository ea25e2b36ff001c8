"""Device, mixed precision and network shared by the training stages."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

from operators.core.device import ComputeDevice
from operators.models.networks import build_spleen_unet

logger = logging.getLogger(__name__)

MODEL_NAME = "spleen_ct_segmentation"
AMP_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Precision:
    """Autocast settings: bf16 on CPUs that support it, fp16 (with a grad scaler) on CUDA, else fp32."""

    device: torch.device
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def compute_device(self) -> ComputeDevice:
        """The same device and autocast type, as the app's inference functions take them."""
        return ComputeDevice(self.device, self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def cpu_supports_bf16() -> bool:
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check is not None and check()) or (amx is not None and amx()))


def choose_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def choose_precision(device: torch.device, amp: str = "auto") -> Precision:
    """``auto``: mixed precision where it is fast (CUDA; CPUs with AVX512-BF16 or AMX); ``on``; ``off``."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "off":
        return Precision(device, None)
    if device.type == "cuda":
        return Precision(device, torch.float16)
    if amp == "on" or cpu_supports_bf16():
        return Precision(device, torch.bfloat16)
    return Precision(device, None)


def build_network(model_config: dict[str, Any]) -> torch.nn.Module:
    return build_spleen_unet(model_config["network"])
