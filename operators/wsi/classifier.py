"""Load the tumor patch classifier and decide whether it may run densely.

Accepted: the model-zoo bundle's ``model.pt`` (a state dict of
``TorchVisionFCModel("resnet18", num_classes=1, use_conv=True)``, possibly ``{"model": ...}``),
which runs densely; and any TorchScript classifier mapping (N, 3, 224, 224) floats in -1..1 to
(N, 1) logits, which runs in patch mode unless its card declares
``"fully_convolutional": {"output_stride_px": 32}`` (it then maps larger inputs to logit maps).
On the CPU in float32 the network is frozen to TorchScript with convolution and batch-norm folded
(about 1.9x faster here, outputs equal within 1e-6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from operators.core.errors import ModelLoadError
from operators.models.loader import LoadedModel

logger = logging.getLogger(__name__)

PATCH_PX = 224


@dataclass(frozen=True)
class PatchClassifier:
    model: LoadedModel
    network: torch.nn.Module  # what inference calls (possibly frozen)
    output_stride_px: int | None  # None: patch mode only


def _check_patch_contract(model: LoadedModel, device: torch.device) -> None:
    try:
        with torch.inference_mode():
            output = model.module(torch.zeros(2, 3, PATCH_PX, PATCH_PX, device=device))
    except Exception as error:
        raise ModelLoadError(
            f"model {model.path} fails on a (2, 3, 224, 224) input ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if not isinstance(output, torch.Tensor) or output.shape[0] != 2 or output[0].numel() != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelLoadError(f"model {model.path} returns {shape} for two 224x224 patches; expected one tumor logit per patch")


def _dense_stride(model: LoadedModel, device: torch.device) -> int | None:
    declared = (model.metadata.get("fully_convolutional") or {}).get("output_stride_px")
    stride = 32 if model.kind == "state_dict" else declared
    if stride is None:
        return None
    side = PATCH_PX + 2 * int(stride)
    with torch.inference_mode():
        output = model.module(torch.zeros(1, 3, side, side, device=device))
    if tuple(output.shape) != (1, 1, 3, 3):
        raise ModelLoadError(
            f"model {model.path} claims to be fully convolutional with stride {stride} but maps a {side}x{side} input to {tuple(output.shape)}"
        )
    return int(stride)


def frozen_for_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """TorchScript-frozen copy with conv/BN folding for float32 CPU inference (the module if that fails)."""
    try:
        scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        return torch.jit.optimize_for_inference(torch.jit.freeze(scripted.eval()))
    except Exception as error:  # an exotic TorchScript module: run it as it is
        logger.warning("Could not freeze the model for CPU inference (%s); running it unfrozen", error)
        return module


def prepare_classifier(
    model: LoadedModel, device: torch.device, amp: bool, freeze: Callable[[torch.nn.Module], torch.nn.Module] = frozen_for_cpu
) -> PatchClassifier:
    """Check the patch contract, find whether dense inference is allowed, and freeze for fp32 CPU use."""
    _check_patch_contract(model, device)
    stride = _dense_stride(model, device)
    network = freeze(model.module) if device.type == "cpu" and not amp else model.module
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    logger.info("Classifier '%s' %s: %s", model.name, model.version, f"dense, output stride {stride} px" if stride else "patch mode only")
    return PatchClassifier(model, network, stride)
