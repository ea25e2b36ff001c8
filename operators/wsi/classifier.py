"""Load the tumor patch classifier and decide whether it may run densely.

Accepted: the model-zoo bundle's ``model.pt`` (a state dict of
``TorchVisionFCModel("resnet18", num_classes=1, use_conv=True)``, possibly ``{"model": ...}``),
which runs densely at its network's output stride; and any TorchScript classifier mapping
(N, 3, P, P) floats in -1..1 to (N, 1) logits, which runs in patch mode unless its card declares
``"fully_convolutional": {"output_stride_px": S}`` (it then maps larger inputs to logit maps).
P (224) and the state dict's S (32) are the model config's ``preprocessing.patch_size_px`` and
``network.output_stride_px`` (:class:`PatchContract`).
The network then runs in the chosen runtime (operators.models.runtime): OpenVINO, or torch, where
on the CPU in float32 it is frozen to TorchScript with convolution and batch-norm folded (about 1.9x
faster than eager, outputs equal within 1e-6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from operators.core.errors import ModelLoadError
from operators.models.config import load_model_config
from operators.models.loader import LoadedModel
from operators.models.runtime import Network, RuntimeChoice, prepare_network

logger = logging.getLogger(__name__)

PATHOLOGY_MODEL = "pathology_tumor_detection"
# What a model raising on a probe input raises: torch's errors (shapes, dtypes, TorchScript's
# torch.jit.Error) are RuntimeErrors; a Python module given the wrong input may raise the others.
_FORWARD_ERRORS = (RuntimeError, TypeError, ValueError, IndexError)


@dataclass(frozen=True)
class PatchContract:
    """The square patch the classifier takes (model pixels), and the output stride of the config's
    fully convolutional network (model pixels), which a state-dict model has."""

    patch_px: int
    state_dict_output_stride_px: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PatchContract:
        """From a model config (``model_zoo/<model>/config.json``)."""
        return cls(int(config["preprocessing"]["patch_size_px"]), int(config["network"]["output_stride_px"]))


@dataclass(frozen=True)
class PatchClassifier:
    model: LoadedModel
    network: Network  # what inference calls: (N, 3, H, W) floats in -1..1 -> logits, in the chosen runtime
    output_stride_px: int | None  # None: patch mode only
    runtime: RuntimeChoice  # as it runs (torch after an OpenVINO fallback)


def _check_patch_contract(model: LoadedModel, device: torch.device, patch_px: int) -> None:
    try:
        with torch.inference_mode():
            output = model.module(torch.zeros(2, 3, patch_px, patch_px, device=device))
    except _FORWARD_ERRORS as error:
        raise ModelLoadError(
            f"model {model.path} fails on a (2, 3, {patch_px}, {patch_px}) input "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if not isinstance(output, torch.Tensor) or output.shape[0] != 2 or output[0].numel() != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelLoadError(
            f"model {model.path} returns {shape} for two {patch_px}x{patch_px} patches; expected one tumor logit per patch"
        )


def _dense_stride(model: LoadedModel, device: torch.device, contract: PatchContract) -> int | None:
    declared = (model.metadata.get("fully_convolutional") or {}).get("output_stride_px")
    stride = contract.state_dict_output_stride_px if model.kind == "state_dict" else declared
    if stride is None:
        return None
    side = contract.patch_px + 2 * int(stride)
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
    except (RuntimeError, TypeError, AttributeError, torch.jit.frontend.FrontendError) as error:  # an exotic module: run it as it is
        logger.warning("Could not freeze the model for CPU inference (%s); running it unfrozen", error)
        return module


def prepare_classifier(
    model: LoadedModel,
    runtime: RuntimeChoice,
    contract: PatchContract | None = None,
    batch_size: int = 16,
    cache_dirs: Sequence[Path] = (),
    freeze: Callable[[torch.nn.Module], torch.nn.Module] = frozen_for_cpu,
) -> PatchClassifier:
    """Check the patch contract, find whether dense inference is allowed, and prepare the network in
    ``runtime``: OpenVINO (compiled for ``batch_size`` patches; other shapes as they come), or torch,
    frozen for fp32 on the CPU.

    ``contract`` defaults to the one of the project's pathology model config.
    """
    contract = contract or PatchContract.from_config(load_model_config(PATHOLOGY_MODEL))
    device = runtime.compute.device
    _check_patch_contract(model, device, contract.patch_px)
    stride = _dense_stride(model, device, contract)
    module = model.module
    if runtime.backend == "torch" and device.type == "cpu" and runtime.compute.precision == "fp32":
        module = freeze(module)
    example = torch.zeros(batch_size, 3, contract.patch_px, contract.patch_px)
    network = prepare_network(module, runtime, example, model.sha256, batch_size=batch_size, cache_dirs=cache_dirs)
    logger.info("Classifier '%s' %s: %s", model.name, model.version, f"dense, output stride {stride} px" if stride else "patch mode only")
    return PatchClassifier(model, network, stride, runtime.ran(network))
