"""The pathology stages end to end on tiny synthetic Camelyon16-layout slides: prepare, train (resume,
a fixed batch whose loss falls, two-process DDP), export, the app's loader, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.optimizers import Novograd

from operators.core.device import ComputeDevice
from operators.models.config import load_model_config
from operators.models.loader import load_model, sha256_of
from operators.models.networks import build_patch_classifier
from training.pathology.candidates import load_heldout
from training.pathology.cli import main
from training.pathology.dataset import PatchDataset, SlidePatches
from training.pathology.evaluate import EvaluateSettings, evaluate
from training.pathology.export import bundle_state_dict_keys, checkpoint_network, export, round_to_float16
from training.pathology.settings import TrainSettings
from training.pathology.train import patch_loss, train
from training.steps import train_step

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG = load_model_config("pathology_tumor_detection")


@pytest.fixture(scope="module")
def trained(prep, tmp_path_factory):
    settings = TrainSettings(
        prep_dir=prep, run_dir=tmp_path_factory.mktemp("run"), epochs=1, steps_per_epoch=2, batch_size=4, heldout_limit=8, workers=1
    )
    return settings, train(settings)


def test_prepare_writes_split_candidates_masks_and_heldout_patches(prep):
    split = json.loads((prep / "split.json").read_text())
    assert {len(split[part][kind]) for part in ("train", "val") for kind in ("tumor", "normal")} == {1}
    assert sorted(entry["type"] for entry in split["test"].values()) == ["Normal", "Tumor"]
    slides = json.loads((prep / "slides.json").read_text())
    for name, entry in slides.items():
        with np.load(prep / "candidates" / f"{name}.npz") as candidates:
            assert len(candidates["tumor_xy_level0"]) == entry["tumor_candidates"]
            assert (entry["tumor_candidates"] > 0) == name.startswith("tumor")
            assert len(candidates["normal_xy_level0"]) > 0
        assert (prep / "masks" / entry["tumor_mask_png"]).is_file() and (prep / "masks" / entry["tissue_mask_png"]).is_file()
    paths, draws = load_heldout(prep)
    assert len(draws) == 16 and draws.labels.sum() == 8 and all(p.is_file() for p in paths)


def test_training_writes_a_self_describing_run_folder_and_resumes(trained):
    settings, result = trained
    run = settings.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    assert result.epochs_done == 1 and len(metrics["epochs"][0]["step_losses"]) == 2
    assert metrics["initial_heldout"]["patches"] == 8 and metrics["epochs"][0]["heldout"]["accuracy"] is not None
    config = json.loads((run / "config.json").read_text())
    assert config["optimizer"] == "novograd" and config["learning_rate"] == 1e-3 and config["position_jitter_px"] == 8
    assert config["color_jitter"] == {"brightness": 0.251, "saturation": 0.25, "hue": 0.04, "contrast": 0.75}
    assert json.loads((run / "split.json").read_text()) == json.loads((settings.prep_dir / "split.json").read_text())
    session = json.loads((run / "environment.json").read_text())["sessions"][-1]
    assert session["git"]["commit"] and session["packages"]["torch"] and session["world_size"] == 1
    assert result.last_checkpoint.is_file() and result.best_checkpoint.is_file()

    resumed = train(TrainSettings(**{**settings.__dict__, "epochs": 2}))
    history = json.loads((run / "metrics.json").read_text())["epochs"]
    assert resumed.epochs_done == 2 and [epoch["epoch"] for epoch in history] == [1, 2]
    with pytest.raises(ValueError, match="different settings"):
        train(TrainSettings(**{**settings.__dict__, "epochs": 3, "batch_size": 8}))


def test_training_steps_lower_the_loss_on_a_fixed_batch(prep):
    slide_paths, draws = load_heldout(prep, limit=8)
    patches = SlidePatches(slide_paths, CONFIG["preprocessing"]["model_mpp"], 224)
    images, labels = next(iter(torch.utils.data.DataLoader(PatchDataset(patches, draws, [0], augment=False), batch_size=8)))
    torch.manual_seed(0)
    net = build_patch_classifier(CONFIG["network"])
    optimizer = Novograd(net.parameters(), lr=1e-3)
    compute = ComputeDevice(torch.device("cpu"))
    scaler = compute.grad_scaler()
    losses = [train_step(lambda m: patch_loss(m, images, labels, compute), net, optimizer, scaler) for _ in range(6)]
    assert None not in losses and losses[-1] < 0.85 * losses[0], losses
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses


def test_export_has_the_bundle_layout_loads_in_the_app_and_evaluate_scores_it(trained, prep, tmp_path):
    _, result = trained
    model_path = export(result.best_checkpoint, tmp_path / "model")
    state = torch.load(model_path, weights_only=True)
    assert list(state) == bundle_state_dict_keys() and state["fc.weight"].shape == (1, 512, 1, 1)
    assert "features.5.0.downsample.0.weight" in state and all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    card = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert card["name"] == "pathology_tumor_detection" and card["version"] and "Not for clinical use" in card["intended_use"]
    assert card["weights"] == {"file": "model.pt", "sha256": sha256_of(model_path)}
    loaded = load_model(tmp_path / "model", lambda: build_patch_classifier(CONFIG["network"]), torch.device("cpu"))
    assert loaded.name == "pathology_tumor_detection" and loaded.kind == "state_dict"
    probe = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(probe), checkpoint_network(result.best_checkpoint)(probe))

    out = tmp_path / "eval"
    metrics = evaluate(EvaluateSettings(prep_dir=prep, model_path=model_path, out_dir=out, workers=1, heldout_limit=8, n_bootstrap=200))
    written = json.loads((out / "metrics.json").read_text())
    assert written["froc"] == metrics["froc"] and 0 <= written["froc"] <= 1
    assert set(written["froc_official"]["sensitivity_at_fp_rates"]) == {"0.25", "0.5", "1", "2", "4", "8"}
    assert written["froc_official"]["level"] == 5 and written["froc_official"]["n_slides"] == 2
    assert written["froc_bundle"]["level"] == 6 and written["froc_bundle"]["n_slides"] == 1
    assert written["auc"]["n_bootstrap"] == 200 and written["auc"]["ci_low"] <= written["auc"]["auc"] <= written["auc"]["ci_high"]
    assert written["patch_accuracy"]["patches"] == 8 and written["model"]["name"] == "pathology_tumor_detection"
    assert sorted(p.name for p in (out / "detections").iterdir()) == sorted(f"{name}.csv" for name in written["slides"])
    assert {p.name for p in (out / "report").iterdir()} == {
        "froc_curve.png",
        "lesions.csv",
        "false_positives.csv",
        "false_positives.png",
        "report.json",
    }


def test_float16_export_halves_the_file_and_loads_as_the_rounded_checkpoint(trained, tmp_path):
    _, result = trained
    full = export(result.best_checkpoint, tmp_path / "full")
    half = export(result.best_checkpoint, tmp_path / "half", float16=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    state = torch.load(half, weights_only=True)
    assert state["fc.weight"].dtype == torch.float16 and state["features.1.num_batches_tracked"].dtype == torch.int64
    loaded = load_model(tmp_path / "half", lambda: build_patch_classifier(CONFIG["network"]), torch.device("cpu"))
    rounded = checkpoint_network(result.best_checkpoint)
    round_to_float16(rounded)
    probe = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded.module(probe), rounded(probe))


def test_two_process_ddp_training_ends_with_identical_weights_on_both_ranks(prep, tmp_path):
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.pathology",
        "train",
        "--prep",
        str(prep),
        "--run-dir",
        str(run),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--heldout-limit",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    digests = metrics["weights_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2 and metrics["epochs"][0]["steps"] == 2
    first_weight = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]["features.0.weight"]
    torch.manual_seed(0)
    assert not torch.equal(first_weight, build_patch_classifier(CONFIG["network"]).state_dict()["features.0.weight"])


@pytest.mark.parametrize(
    "arguments",
    [
        ["prepare", "--data", "D", "--out", "P"],
        ["train", "--prep", "P", "--run-dir", "R"],
        ["evaluate", "--prep", "P", "--model", "M", "--out", "O"],
        ["export", "--checkpoint", "C"],
    ],
)
def test_every_stage_rejects_unknown_options(arguments, capsys):
    with pytest.raises(SystemExit) as raised:
        main([*arguments, "--no-such-option", "1"])
    assert raised.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
