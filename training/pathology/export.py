"""Stage ``export``: the files the WSI app loads by default, ``model_zoo/pathology_tumor_detection/``:

- ``model.pt``: a float32 state dict in the model-zoo bundle's key layout (MONAI's
  ``TorchVisionFCModel("resnet18", num_classes=1, use_conv=True)``: ``features.0`` conv1,
  ``features.1`` bn1, ``features.4``-``features.7`` layer1-4 with torchvision's names inside,
  ``fc`` a [1, 512, 1, 1] convolution), so the bundle's own weights and these are interchangeable;
- ``metadata.json``: the model card (name, version, inputs and outputs, intended use, training
  data, the training run, the evaluation metrics, and ``weights``: model.pt's name and SHA-256,
  which the app checks before loading it).

The export is checked by loading it through the app's loader and classifier preparation and
comparing outputs with the checkpoint's network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from operators.core.device import ComputeDevice
from operators.models.config import load_model_config, model_dir
from operators.models.loader import CARD_FILE, card_for_weights, load_model, load_state_dict, sha256_of
from operators.models.networks import build_patch_classifier
from operators.models.runtime import torch_runtime
from operators.wsi.classifier import PatchContract, prepare_classifier
from training.pathology.settings import MODEL_NAME
from training.provenance import package_versions, save_torch, write_json

logger = logging.getLogger(__name__)

CARD_VERSION = "0.1.0"
FROZEN_TOLERANCE = 1e-4  # the app folds batch norm into the convolutions on the CPU


def bundle_state_dict_keys() -> list[str]:
    """The keys of the bundle's ``model.pt``, written out from torchvision's ResNet18 names."""

    def bn(prefix: str) -> list[str]:
        return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]

    keys = ["features.0.weight", *bn("features.1")]
    for layer in range(4):
        for block in range(2):
            prefix = f"features.{4 + layer}.{block}"
            keys += [f"{prefix}.conv1.weight", *bn(f"{prefix}.bn1"), f"{prefix}.conv2.weight", *bn(f"{prefix}.bn2")]
            if layer and not block:
                keys += [f"{prefix}.downsample.0.weight", *bn(f"{prefix}.downsample.1")]
    return [*keys, "fc.weight", "fc.bias"]


def checkpoint_network(checkpoint: Path, model_name: str = MODEL_NAME) -> torch.nn.Module:
    """The float32 network (eval mode) of a training checkpoint ({"model": state dict, ...}) or a plain state dict."""
    net = build_patch_classifier(load_model_config(model_name)["network"])
    net.load_state_dict(load_state_dict(checkpoint))
    return net.float().eval()


def model_card(version: str, training: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any]:
    contract = PatchContract.from_config(load_model_config(MODEL_NAME))
    versions = package_versions(("monai", "torch"))
    return {
        "name": MODEL_NAME,
        "version": version,
        "task": "Metastasis detection in H&E lymph-node whole-slide images (tumor patch classification)",
        "description": "ResNet18 with a 1x1-convolution head, the architecture, input scaling and key layout of the MONAI model-zoo "
        "pathology_tumor_detection bundle. These weights were trained on synthetic Camelyon16-like slides only and are for "
        "software testing.",
        "intended_use": "Software testing and demonstration only. Not for clinical use.",
        "authors": "clinical-ai apps team",
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"],
        "data_source": "Synthetic H&E-like Camelyon16-layout slides (training.synthetic.camelyon_layout), 0.243 um/px",
        "data_type": "tiff",
        "fully_convolutional": {"output_stride_px": contract.state_dict_output_stride_px},
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "RGB",
                    "num_channels": 3,
                    "spatial_shape": [contract.patch_px, contract.patch_px],
                    "dtype": "float32",
                    "value_range": [-1, 1],
                    "is_patch_data": True,
                    "mpp": 0.243,
                    "preprocessing": "uint8 RGB / 127.5 - 1 (operators.wsi.inference.to_network_input)",
                    "channel_def": {"0": "R", "1": "G", "2": "B"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "logits",
                    "num_channels": 1,
                    "spatial_shape": [1, 1],
                    "dtype": "float32",
                    "value_range": None,
                    "is_patch_data": True,
                    "channel_def": {"0": "tumor"},
                    "postprocessing": f"sigmoid; a ({contract.patch_px} + {contract.state_dict_output_stride_px} k)-pixel input "
                    "gives a (k + 1) x (k + 1) map of windows",
                }
            },
        },
        "training": training,
        "metrics": metrics,
    }


def round_to_float16(net: torch.nn.Module) -> None:
    """Round the network's floating-point weights and buffers to float16 values, in place (kept float32)."""
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def export(
    checkpoint: Path, out_dir: Path | None = None, metrics_path: Path | None = None, version: str = CARD_VERSION, float16: bool = False
) -> Path:
    """Write ``model.pt`` and ``metadata.json`` into ``out_dir`` (default: the model zoo) and check them; returns model.pt.

    ``float16`` stores the floating-point tensors as float16 (half the size; the app loads them into its
    float32 network); the check then compares with the checkpoint's weights rounded the same way, and
    metrics belong to the exported file only if ``evaluate`` ran on it.
    """
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir) if out_dir is not None else model_dir(MODEL_NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = checkpoint_network(checkpoint)
    if float16:
        round_to_float16(net)
    state_dict = {
        key: (value.half() if float16 and value.is_floating_point() else value).detach().clone().contiguous()
        for key, value in net.state_dict().items()
    }
    if list(state_dict) != bundle_state_dict_keys():
        raise ValueError("the network's state dict does not have the bundle's key layout")
    path = out_dir / "model.pt"
    save_torch(path, state_dict)
    metrics = json.loads(Path(metrics_path).read_text()) if metrics_path else None
    write_json(out_dir / CARD_FILE, card_for_weights(model_card(version, _training_info(checkpoint), _card_metrics(metrics)), path))
    verify_export(path, net)
    logger.info("exported %s (%.1f MB) and its metadata.json", path, path.stat().st_size / 1e6)
    return path


def verify_export(path: Path, net: torch.nn.Module) -> None:
    """Load ``path`` as the app does; its outputs must equal ``net``'s (frozen for the CPU: within 1e-4)."""
    config = load_model_config(MODEL_NAME)
    loaded = load_model(path, lambda: build_patch_classifier(config["network"]), torch.device("cpu"))
    if loaded.kind != "state_dict" or loaded.name != MODEL_NAME:
        raise ValueError(f"{path} loads as a {loaded.kind} model named {loaded.name!r}")
    contract = PatchContract.from_config(config)
    classifier = prepare_classifier(loaded, torch_runtime(ComputeDevice(torch.device("cpu"), "fp32")), contract=contract)
    if classifier.output_stride_px != contract.state_dict_output_stride_px:
        raise ValueError(f"{path} does not run densely in the app")
    side = contract.patch_px + 2 * contract.state_dict_output_stride_px  # 3 x 3 windows
    probe = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        expected = net(probe)
        if not torch.equal(loaded.module(probe), expected):
            raise ValueError(f"{path}: the app's network gives other outputs than the checkpoint's")
        difference = float((classifier.network(probe) - expected).abs().max())
    if difference > FROZEN_TOLERANCE:
        raise ValueError(f"{path}: the app's frozen network differs from the checkpoint's by {difference}")


def _training_info(checkpoint: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"checkpoint": checkpoint.name}
    run_dir = checkpoint.parent.parent
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        info["settings"] = {k: v for k, v in config.items() if k not in ("model_config", "run_dir", "prep_dir")}
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        info.update({key: metrics.get(key) for key in ("epochs_done", "train_seconds", "best_heldout_accuracy", "best_epoch")})
    return info


def _card_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    official = metrics["froc_official"]
    return {
        "test_data": "synthetic Camelyon16-like test split",
        "test_slides": official["n_slides"],
        "test_tumor_slides": official["n_tumor_slides"],
        "test_lesions": official["n_lesions"],
        "test_itc": official["n_itc"],
        "froc_official_level5_all_slides": metrics["froc_official"]["froc"],
        "froc_bundle_level6_tumor_slides": metrics["froc_bundle"]["froc"],
        "sensitivity_at_fp_rates_official": metrics["froc_official"]["sensitivity_at_fp_rates"],
        "auc": metrics["auc"],
        "patch_accuracy": metrics["patch_accuracy"],
    }


BASELINE_RUN = "colour-threshold baseline"  # its name in benchmarks/camelyon_hard.py's results


def add_benchmark_to_card(results_path: Path, card_path: Path | None = None, benchmark: str = "camelyon_hard") -> dict[str, Any]:
    """Record a ``benchmarks/camelyon_hard.py`` result in the model card: the runs of the card's own weights, and the baseline.

    Runs are matched by the SHA-256 of their model file, so figures of other weights never reach the card.
    Written under ``metrics.benchmarks.<benchmark>``; returns that entry.

    Raises:
        ValueError: when no run of the result evaluated the card's weights.
    """
    card_path = Path(card_path) if card_path is not None else model_dir(MODEL_NAME) / CARD_FILE
    card = json.loads(card_path.read_text())
    result = json.loads(Path(results_path).read_text())
    digests = {m: sha256_of(Path(m)) for m in {run.get("model") for run in result["runs"].values()} if m and Path(m).is_file()}
    mine = {name: run for name, run in result["runs"].items() if digests.get(run.get("model")) == card["weights"]["sha256"]}
    if not mine:
        raise ValueError(f"no run in {results_path} evaluated {card['weights']['file']} (SHA-256 {card['weights']['sha256'][:12]}...)")
    keep = (
        "froc_official",
        "froc_ci",
        "froc_bundle",
        "sensitivity_at_fp_rates",
        "auc",
        "auc_ci",
        "lesions_by_size_class",
        "n_false_positives",
    )
    entry = {
        "test_data": "the hard synthetic Camelyon16 test set (training.synthetic.camelyon_hard; training/synthetic/HARD_BENCHMARK.md)",
        "runs": {name: {"runtime": run.get("runtime"), **{k: run.get(k) for k in keep}} for name, run in mine.items()},
        "baseline": {k: baseline.get(k) for k in keep} if (baseline := result["runs"].get(BASELINE_RUN)) else None,
        "runtime_checks": result.get("checks", []),
        "machine": result.get("machine"),
    }
    card["metrics"] = card.get("metrics") or {}
    card["metrics"].setdefault("benchmarks", {})[benchmark] = entry
    write_json(card_path, card)
    logger.info("model card %s: %s figures of %d run(s)", card_path, benchmark, len(mine))
    return entry
