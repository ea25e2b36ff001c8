"""Stage ``export``: TorchScript (fp32) of a checkpoint with the model card as ``extra/metadata.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from monai.data import load_net_with_metadata, save_net_with_metadata

from operators.models.config import load_model_card, load_model_config, model_dir
from operators.models.loader import CARD_FILE, card_for_weights
from training.spleen.network import MODEL_NAME, build_network

logger = logging.getLogger(__name__)

MAX_MODEL_BYTES = 25 * 1024 * 1024


def default_export_prefix(model_name: str = MODEL_NAME) -> Path:
    return model_dir(model_name) / "model"


def export(checkpoint: Path, out_prefix: Path | None = None, *, model_name: str = MODEL_NAME) -> Path:
    """Script the checkpoint's network and save it as ``<out_prefix>.ts``; returns the path, checked by reloading.

    ``extra/metadata.json`` is the model card (``model_zoo/<name>/metadata.json``) without its
    ``weights`` record (an archive cannot carry its own hash); ``extra/config.json`` the shared model
    config; ``extra/training.json`` the training run's resolved config and metrics when the checkpoint
    sits in a run folder. ``metadata.json`` beside the file is the card with the file's name and
    SHA-256 in ``weights``, which the apps check before loading it.
    """
    checkpoint = Path(checkpoint)
    model_config = load_model_config(model_name)
    card = {key: value for key, value in load_model_card(model_name).items() if key != "weights"}
    for key in ("name", "version"):
        if key not in card:
            raise ValueError(f"model card of {model_name} has no {key!r}")
    net = build_network(model_config)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"])
    net = net.float().eval()
    scripted = torch.jit.script(net)

    prefix = str(out_prefix if out_prefix is not None else default_export_prefix(model_name))
    path = Path(prefix if prefix.endswith(".ts") else prefix + ".ts")
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "config.json": json.dumps(model_config, indent=2).encode(),
        "training.json": json.dumps(_training_info(checkpoint, state), indent=2, default=str).encode(),
    }
    save_net_with_metadata(scripted, str(path), include_config_vals=False, append_timestamp=False, meta_values=card, more_extra_files=extra)
    _verify(path, net, card)
    (path.with_name(CARD_FILE)).write_text(json.dumps(card_for_weights(card, path), indent=2) + "\n")
    logger.info("exported %s (%.1f MB, model %s %s)", path, path.stat().st_size / 1e6, card["name"], card["version"])
    return path


def _training_info(checkpoint: Path, state: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "checkpoint": checkpoint.name,
        "epoch": state.get("epoch"),
        "best_val_dice": state.get("best_val_dice"),
        "best_epoch": state.get("best_epoch"),
    }
    run_dir = checkpoint.parent.parent
    for name in ("config.json", "environment.json"):
        candidate = run_dir / name
        if candidate.is_file():
            info[name.removesuffix(".json")] = json.loads(candidate.read_text())
    return info


def _verify(path: Path, net: torch.nn.Module, card: dict[str, Any]) -> None:
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{path} is {size / 1e6:.1f} MB, above the {MAX_MODEL_BYTES / 1e6:.0f} MB limit")
    loaded, meta, _ = load_net_with_metadata(str(path), map_location="cpu")
    if meta.get("name") != card["name"] or meta.get("version") != card["version"]:
        raise ValueError(f"{path}: embedded metadata does not match the model card")
    probe = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((loaded(probe) - net(probe)).abs().max())
    if difference > 1e-4:
        raise ValueError(f"{path}: TorchScript output differs from the network by {difference}")
