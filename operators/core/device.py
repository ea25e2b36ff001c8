"""Where the apps and the training pipelines compute, and in which precision.

One device resolver, one precision resolver, one native-bf16 detector and one autocast context, for
both apps, both training pipelines and both evaluate stages.

Devices (``--device``): ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
Under torchrun (a local rank given) ``auto`` and ``cuda`` take GPU LOCAL_RANK, and ``cuda:N`` is
refused: it would put every rank on the same GPU.

Precisions (``--precision``):

- ``auto``: float16 autocast on CUDA; bfloat16 autocast on CPUs that compute bf16 natively
  (``avx512_bf16`` or ``amx_bf16`` among the /proc/cpuinfo flags), where it is several times faster
  than float32; float32 elsewhere;
- ``fp32``: no autocast; ``bf16``, ``fp16``: autocast to that type, on whatever device, as asked.

Training with fp16 scales its loss (:meth:`ComputeDevice.grad_scaler`); bf16 and fp32 need no scaling.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch

from operators.core.errors import AppInputError

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
CPUINFO = Path("/proc/cpuinfo")


class ComputeChoiceError(AppInputError, ValueError):
    """A device or precision that is not one of the choices, or that this machine cannot give."""


@dataclass(frozen=True)
class ComputeDevice:
    """A resolved device and precision: what inference and training run with."""

    device: torch.device
    precision: ResolvedPrecision = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in AUTOCAST_DTYPES:
            raise ComputeChoiceError(f"resolved precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {self.precision!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast type, or None for plain float32."""
        return AUTOCAST_DTYPES[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The one autocast context: a no-op in fp32, else ``torch.autocast`` on the device with the precision's type."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler for training: active in fp16 only (bf16 has float32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def describe(self) -> str:
        return f"{self.device}, {self.precision}"

    def as_json(self) -> dict[str, str]:
        """What summaries and run folders record: ``{"device": "cuda:0", "precision": "fp16"}``."""
        return {"device": str(self.device), "precision": self.precision}


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags listed in ``cpuinfo`` (its ``flags`` lines); empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def has_native_bf16(flags: Iterable[str]) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16), where bf16 autocast pays off."""
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def check_precision(requested: str) -> Precision:
    """``requested`` when it is one of :data:`PRECISIONS`; else a :class:`ComputeChoiceError` that lists them."""
    if requested not in PRECISIONS:
        raise ComputeChoiceError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    return cast(Precision, requested)


def resolve_precision(requested: str, device_type: str, native_bf16: bool) -> ResolvedPrecision:
    """The precision to run: ``auto`` becomes fp16 on CUDA, bf16 on a CPU with native bf16, else fp32;
    any other choice is kept as it is."""
    if check_precision(requested) != "auto":
        return cast(ResolvedPrecision, requested)
    if device_type == "cuda":
        return "fp16"
    if device_type == "cpu" and native_bf16:
        return "bf16"
    return "fp32"


def resolve_device(requested: str, cuda_available: bool, local_rank: int | None = None) -> torch.device:
    """The device to run on (module docstring); ``local_rank``: this process's LOCAL_RANK under torchrun, else None."""
    if not _DEVICE.fullmatch(requested):
        raise ComputeChoiceError(f"device must be {DEVICE_CHOICES}, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not cuda_available):
        return torch.device("cpu")
    if not cuda_available:
        raise ComputeChoiceError(f"device {requested!r} asked for, but no CUDA device is available")
    if local_rank is None:
        return torch.device("cuda" if requested == "auto" else requested)
    if requested.startswith("cuda:"):
        raise ComputeChoiceError(f"device {requested!r} names one GPU for every rank; under torchrun use auto or cuda")
    return torch.device("cuda", local_rank)


def compute_on(device: torch.device, precision: str = "auto", cpuinfo: Path = CPUINFO) -> ComputeDevice:
    """``device`` with ``precision`` resolved for it (this CPU's flags decide ``auto`` on the CPU)."""
    native_bf16 = device.type == "cpu" and has_native_bf16(cpu_flags(cpuinfo))
    return ComputeDevice(device, resolve_precision(precision, device.type, native_bf16))


def choose_compute_device(device: str = "auto", precision: str = "auto", local_rank: int | None = None) -> ComputeDevice:
    """Resolve ``--device`` and ``--precision`` on this machine."""
    check_precision(precision)
    compute = compute_on(resolve_device(device, torch.cuda.is_available(), local_rank), precision)
    logger.info("Computing on %s", compute.describe())
    return compute


class _DeprecatedNoAmp(argparse.Action):
    """``--no-amp``: the apps' old spelling of ``--precision fp32``, kept because users script it."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        logger.warning("--no-amp is deprecated; it means --precision fp32")
        setattr(namespace, self.dest, "fp32")


def add_compute_options(parser: argparse.ArgumentParser, *, deprecated_no_amp: bool = False) -> None:
    """``--device`` and ``--precision`` (into ``device`` and ``precision``), spelled alike on every command;
    ``deprecated_no_amp`` adds the apps' ``--no-amp`` as an alias of ``--precision fp32``."""
    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default auto: CUDA when present)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast type; auto: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16, AMX), else fp32",
    )
    if deprecated_no_amp:
        parser.add_argument("--no-amp", dest="precision", action=_DeprecatedNoAmp, help="deprecated: --precision fp32")
