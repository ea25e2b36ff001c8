"""Where inference runs, and with which reduced precision (AMP)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeDevice:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full float32

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        return f"{self.device.type}, {'AMP ' + str(self.amp_dtype).removeprefix('torch.') if self.amp_dtype else 'float32'}"


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_compute_device(amp: bool = True, device: str | None = None) -> ComputeDevice:
    """CUDA with float16 AMP when present; else the CPU, with bfloat16 autocast where it is native."""
    chosen = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = None
    if amp and chosen.type == "cuda":
        amp_dtype = torch.float16
    elif amp and chosen.type == "cpu" and cpu_has_native_bf16():
        amp_dtype = torch.bfloat16
    compute = ComputeDevice(chosen, amp_dtype)
    logger.info("Inference on %s", compute.describe())
    return compute
