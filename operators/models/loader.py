"""Load a segmentation model: a TorchScript archive (as MONAI's ``save_net_with_metadata`` writes it)
or a plain state-dict checkpoint of the configured network, and check its contract before use.

The algorithm name and version come from the model's own metadata: ``extra/metadata.json`` inside a
TorchScript archive, else a ``metadata.json`` beside the weights file. A model with neither is named
after its file and versioned by its SHA-256, with a warning; names are never typed in by hand.

Integrity: the card beside the weights (``metadata.json``; training's export writes it) carries the
weights' SHA-256 as ``{"weights": {"file": ..., "sha256": ...}}``. It is checked before the file is
read as a model: a mismatch is a :class:`ModelIntegrityError` unless unverified models are allowed.
A model without such a card (e.g. a bundle's ``model.ts`` given alone with ``-m``) runs, with a
warning, as "unverified": there is nothing to check it against. Whatever a loader raises on a damaged
file becomes a :class:`ModelLoadError` naming the file, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from monai.data.torchscript_utils import METADATA_FILENAME

from operators.core.errors import ModelIntegrityError, ModelLoadError

logger = logging.getLogger(__name__)

MODEL_SUFFIXES = (".ts", ".pt", ".pth", ".zip")
CARD_FILE = "metadata.json"
UNVERIFIED_MODEL_FLAG = "UNVERIFIED MODEL"  # what every result of an unverified model says (SEG SeriesDescription, summary)
IntegrityStatus = Literal["verified", "unverified"]


@dataclass(frozen=True)
class ModelIntegrity:
    """Whether the weights are the ones their card vouches for; ``reason`` says why not."""

    status: IntegrityStatus
    expected_sha256: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"status": self.status, "expected_sha256": self.expected_sha256, "reason": self.reason}


def card_weights_sha256(card: dict[str, Any]) -> tuple[str | None, str | None]:
    """The (file name, SHA-256) a model card records for its weights, (None, None) when it records none."""
    weights = card.get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        return None, None
    return weights.get("file"), weights["sha256"].lower()


def card_for_weights(card: dict[str, Any], weights_file: Path) -> dict[str, Any]:
    """``card`` recording ``weights_file``'s name and SHA-256: the card training's export writes beside the weights."""
    return {**card, "weights": {"file": Path(weights_file).name, "sha256": sha256_of(Path(weights_file))}}


def check_integrity(model_file: Path, sha256: str, card: dict[str, Any], allow_unverified: bool = False) -> ModelIntegrity:
    """Compare the weights' SHA-256 with the card's. A mismatch raises :class:`ModelIntegrityError`
    unless ``allow_unverified`` (then a warning); a card without a SHA-256 for this file gives an
    unverified model, with a warning."""
    card_file, expected = card_weights_sha256(card)
    if expected is None or (card_file is not None and card_file != model_file.name):
        reason = f"no model card beside it records the SHA-256 of {model_file.name}"
        logger.warning("Model %s is unverified: %s", model_file, reason)
        return ModelIntegrity("unverified", None, reason)
    if expected == sha256:
        return ModelIntegrity("verified", expected)
    reason = f"SHA-256 {sha256[:16]}... of the weights differs from {expected[:16]}... in its model card"
    if not allow_unverified:
        raise ModelIntegrityError(f"model {model_file} fails its integrity check: {reason} (--allow-unverified-model runs it anyway)")
    logger.warning(
        "Model %s fails its integrity check (%s); running it as unverified, as --allow-unverified-model asks", model_file, reason
    )
    return ModelIntegrity("unverified", expected, reason)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, and what identifies it in outputs."""

    module: torch.nn.Module
    path: Path
    kind: str  # "torchscript" or "state_dict"
    name: str
    version: str
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    integrity: ModelIntegrity = ModelIntegrity("unverified", None, "not checked")

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "sha256": self.sha256,
            "path": str(self.path),
            "integrity": self.integrity.as_json(),
        }


def find_model_file(path: Path) -> Path:
    """The model file at ``path``: the file itself, or the single model file in a folder (any depth,
    as in a MAP's /opt/holoscan/models/<name>/), preferring ``model.ts``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"model path does not exist: {path}")
    candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES)
    preferred = [p for p in candidates if p.name == "model.ts"]
    if len(preferred) == 1:
        return preferred[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelLoadError(f"no model file ({', '.join(MODEL_SUFFIXES)}) in {path}")
    raise ModelLoadError(f"several model files in {path}, pass one with -m: {[str(p) for p in candidates]}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_torchscript_archive(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception as error:  # noqa: BLE001 -- a damaged zip fails in zipfile with BadZipFile, UnicodeDecodeError, ValueError...
        raise ModelLoadError(f"{path} is a damaged zip archive ({type(error).__name__}: {error})") from None
    return any(name.endswith("/code/__torch__.py") or name.split("/", 1)[-1].startswith("code/") for name in names)


def _unwrap_state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint, possibly wrapped as {"model": ...} or {"state_dict": ...}."""
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict", "network"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ModelLoadError(f"{path} holds a {type(checkpoint).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The network weights of a PyTorch checkpoint (plain, wrapped or DDP-prefixed), on the CPU."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- unpickling a damaged file raises any of a dozen types
        raise ModelLoadError(f"{path} is neither a TorchScript model nor a PyTorch checkpoint ({type(error).__name__}: {error})") from None
    return _unwrap_state_dict(checkpoint, path)


def _load_state_dict_model(path: Path, build_network: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    network = build_network()
    state_dict = load_state_dict(path)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong_shape:
        raise ModelLoadError(
            f"weights in {path} do not fit the network: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(wrong_shape)} wrong shapes "
            + ", ".join(f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}" for k in wrong_shape[:3])
        )
    network.load_state_dict(state_dict)
    return network


def _load_torchscript(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A TorchScript module and the card MONAI's ``save_net_with_metadata`` embeds (empty if none).

    MONAI's own ``load_net_with_metadata`` fails on archives without a card, which any TorchScript
    module may be, so the extra file is read here directly.
    """
    extra_files = {METADATA_FILENAME: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    except Exception as error:  # noqa: BLE001 -- a damaged archive fails in zip, pickle or TorchScript code
        raise ModelLoadError(f"{path} is a damaged TorchScript archive ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    try:
        metadata = json.loads(extra_files[METADATA_FILENAME]) if extra_files[METADATA_FILENAME] else {}
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path} carries a malformed {METADATA_FILENAME} ({error})") from None
    return module, metadata


def _metadata_beside(path: Path) -> dict[str, Any]:
    card = path.with_name(CARD_FILE)
    if not card.is_file():
        return {}
    try:
        content = json.loads(card.read_text())
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise ModelLoadError(f"model card {card} cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise ModelLoadError(f"model card {card} holds a {type(content).__name__}, not a JSON object")
    return content


def load_model(
    path: Path, build_network: Callable[[], torch.nn.Module], device: torch.device, *, allow_unverified: bool = False
) -> LoadedModel:
    """Check the integrity of the model at ``path`` (file or folder), then load it in eval mode on ``device``."""
    model_file = find_model_file(path)
    try:
        sha256 = sha256_of(model_file)
    except OSError as error:
        raise ModelLoadError(f"model {model_file} cannot be read ({error.strerror or error})") from None
    card_beside = _metadata_beside(model_file)
    integrity = check_integrity(model_file, sha256, card_beside, allow_unverified)
    if _is_torchscript_archive(model_file):
        module, metadata = _load_torchscript(model_file)
        kind = "torchscript"
        metadata = metadata or card_beside
    else:
        module = _load_state_dict_model(model_file, build_network)
        kind = "state_dict"
        metadata = card_beside
    name = metadata.get("name")
    version = metadata.get("version")
    if not name or not version:
        logger.warning("%s carries no model card with name and version: naming it after the file", model_file)
        name = name or model_file.stem
        version = version or f"sha256-{sha256[:12]}"
    logger.info("Loaded %s model '%s' version %s from %s", kind, name, version, model_file)
    return LoadedModel(module.to(device).eval(), model_file, kind, str(name), str(version), sha256, metadata, integrity)


def check_output_channels(model: LoadedModel, input_shape: tuple[int, ...], expected_channels: int, device: torch.device) -> None:
    """Run the model once on zeros of ``input_shape`` and check it returns ``expected_channels`` channels."""
    try:
        with torch.inference_mode():
            output = model.module(torch.zeros(input_shape, device=device))
    except Exception as error:  # noqa: BLE001 -- a foreign model can fail with any error; it is reported as the model's
        raise ModelLoadError(
            f"model {model.path} fails on a {tuple(input_shape)} input ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if not isinstance(output, torch.Tensor) or output.ndim != len(input_shape) or output.shape[1] != expected_channels:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelLoadError(
            f"model {model.path} returns {shape} for a {tuple(input_shape)} input; expected {expected_channels} output channels"
        )
