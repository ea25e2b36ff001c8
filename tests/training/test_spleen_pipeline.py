"""The spleen training stages end to end on tiny phantoms: prepare, train (loss falls, resume), export, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.data import load_net_with_metadata

from operators.core.device import compute_on
from operators.models.config import load_model_card
from operators.models.loader import sha256_of
from training.spleen.cli import build_parser, main
from training.spleen.evaluate import evaluate
from training.spleen.export import export
from training.spleen.prepare import prepare
from training.spleen.settings import TrainSettings
from training.spleen.train import train

# 384 mm field of view at 6 mm, 160 mm long: the whole trunk, small enough for 2 CPU cores.
SHAPE, SPACING = (32, 64, 64), (5.0, 6.0, 6.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    prepare(out, n_cases=3, seed=1, shape_zyx=SHAPE, spacing_zyx_mm=SPACING)
    return out


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    torch.manual_seed(0)
    settings = TrainSettings(
        data_dir=dataset,
        run_dir=tmp_path_factory.mktemp("run"),
        epochs=6,
        optimizer="adam",
        learning_rate=1e-3,
        lr_schedule="constant",
        crop_size=(32, 32, 32),
        num_samples=2,
        val_cases=1,
        val_interval=6,
        val_overlap=0.0,
        cache_workers=0,
    )
    return settings, train(settings)


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_a_run_folder(trained):
    settings, result = trained
    run = settings.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [epoch["loss"] for epoch in metrics["epochs"]]
    assert len(losses) == 6 and result.epochs_done == 6
    assert sum(losses[-2:]) < sum(losses[:2])
    assert metrics["epochs"][-1]["val_dice"] is not None and result.best_score is not None
    config = json.loads((run / "config.json").read_text())
    assert config["crop_size"] == [32, 32, 32] and config["optimizer"] == "adam" and config["seed"] == 0
    assert config["model_config"]["network"]["channels"] == [16, 32, 64, 128, 256]
    assert json.loads((run / "split.json").read_text()) == {"train": ["spleen_1.nii.gz", "spleen_2.nii.gz"], "val": ["spleen_3.nii.gz"]}
    session = json.loads((run / "environment.json").read_text())["sessions"][-1]
    assert {"git", "packages", "precision", "device"} <= set(session)
    expected = compute_on(torch.device("cpu"), "auto")
    assert config["precision"] == "auto" and config["compute"] == expected.as_json()
    assert (session["device"], session["precision"]) == ("cpu", expected.precision)
    assert session["packages"]["monai"] and session["packages"]["torch"]
    assert (run / "checkpoints" / "last.pt").is_file() and result.best_checkpoint.is_file()


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(trained):
    settings, _ = trained
    resumed = train(TrainSettings(**{**settings.__dict__, "epochs": 7}))
    assert resumed.epochs_done == 7
    history = json.loads((settings.run_dir / "metrics.json").read_text())["epochs"]
    assert [epoch["epoch"] for epoch in history] == list(range(1, 8))
    with pytest.raises(ValueError, match="different settings"):
        train(TrainSettings(**{**settings.__dict__, "epochs": 8, "optimizer": "novograd"}))


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_weights_and_records_them(trained, tmp_path):
    settings, result = trained
    start = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["model"]
    tuned = train(
        TrainSettings(
            **{
                **settings.__dict__,
                "run_dir": tmp_path / "tuned",
                "epochs": 1,
                "learning_rate": 1e-9,
                "init_weights": result.best_checkpoint,
            }
        )
    )
    weights = torch.load(tuned.last_checkpoint, map_location="cpu", weights_only=True)["model"]
    conv = "model.0.conv.unit0.conv.weight"
    torch.testing.assert_close(weights[conv], start[conv], rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["init_weights"] == str(result.best_checkpoint) and len(config["init_weights_sha256"]) == 64


@pytest.mark.slow
def test_export_embeds_the_model_card_and_evaluate_scores_it(trained, dataset, tmp_path):
    settings, result = trained
    path = export(result.best_checkpoint, tmp_path / "model")
    assert path.name == "model.ts" and path.stat().st_size < 25 * 1024 * 1024
    net, meta, extra = load_net_with_metadata(str(path), more_extra_files=("config.json", "training.json"))
    card = {key: value for key, value in load_model_card("spleen_ct_segmentation").items() if key != "weights"}
    assert meta == card and meta["name"] and meta["version"]
    beside = json.loads((tmp_path / "metadata.json").read_text())  # what the app checks before loading the file
    assert beside["weights"] == {"file": "model.ts", "sha256": sha256_of(path)} and beside["name"] == card["name"]
    assert json.loads(extra["config.json"])["network"]["out_channels"] == 2
    assert all(p.dtype == torch.float32 for p in net.parameters())
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)

    out = tmp_path / "metrics.json"
    scores = evaluate(dataset, path, out, last_n=1, overlap=0.0)
    metrics = json.loads(out.read_text())
    assert set(metrics["per_case"]) == {"spleen_3.nii.gz"}
    assert 0.0 <= scores.mean_dice_original <= 1.0 and 0.0 <= scores.mean_dice_resampled <= 1.0
    assert metrics["mean_dice_original"] == pytest.approx(scores.mean_dice_original)


TRAINING_DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.slow
@pytest.mark.parametrize("device", TRAINING_DEVICES)
def test_a_cache_on_the_training_device_trains_as_the_host_memory_cache_does(trained, device, tmp_path):
    settings, _ = trained
    runs = {}
    for cache_device in ("cpu", "device"):
        run = TrainSettings(
            **{
                **settings.__dict__,
                "run_dir": tmp_path / cache_device,
                "epochs": 2,
                "val_interval": 2,
                "device": device,
                "precision": "fp32",
                "cache_device": cache_device,
            }
        )
        train(run)
        runs[cache_device] = json.loads((run.run_dir / "metrics.json").read_text())["epochs"]
    assert [e["steps"] for e in runs["device"]] == [e["steps"] for e in runs["cpu"]]
    assert [e["loss"] for e in runs["device"]] == pytest.approx([e["loss"] for e in runs["cpu"]], rel=1e-4)
    assert runs["device"][-1]["val_dice"] == pytest.approx(runs["cpu"][-1]["val_dice"], abs=1e-4)
    assert json.loads((tmp_path / "device" / "config.json").read_text())["cache_device"] == "device"


def test_an_unknown_cache_device_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cache_device must be one of"):
        TrainSettings(data_dir=tmp_path, run_dir=tmp_path, cache_device="gpu")


def test_an_unknown_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'off'"):
        TrainSettings(data_dir=tmp_path, run_dir=tmp_path, precision="off")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--data", "d", "--run-dir", "r", "--bogus"],
        ["train", "--data", "d", "--run-dir", "r", "--epoch", "3"],  # no abbreviations
        ["train", "--data", "d", "--run-dir", "r", "--cache-device", "gpu"],
        ["train", "--data", "d", "--run-dir", "r", "--amp", "off"],  # the retired spelling of --precision
        ["train", "--data", "d", "--run-dir", "r", "--precision", "half"],
        ["evaluate", "--data", "d", "--model", "m", "--out", "o", "--precision", "on"],
        ["prepare", "--out", "d", "--optimizer", "adam"],
        ["export"],
        ["fit"],
    ],
)
def test_cli_rejects_unknown_or_missing_options(argv):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def test_cli_prepare(tmp_path):
    assert main(["prepare", "--out", str(tmp_path), "--cases", "1", "--shape", "8", "32", "32", "--spacing", "10", "12", "12"]) == 0
    assert (tmp_path / "imagesTr" / "spleen_1.nii.gz").is_file()


@pytest.mark.slow
def test_two_process_ddp_training_shares_the_cases_and_ends_with_identical_weights(dataset, tmp_path):
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.spleen",
        "train",
        "--data",
        str(dataset),
        "--run-dir",
        str(run),
        "--epochs",
        "2",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--crop-size",
        "32",
        "32",
        "32",
        "--num-samples",
        "2",
        "--val-cases",
        "1",
        "--val-interval",
        "2",
        "--val-overlap",
        "0",
        "--cache-workers",
        "0",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    done = subprocess.run(
        command,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    digests = metrics["weights_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert metrics["epochs_done"] == 2 and metrics["epochs"][-1]["val_dice"] is not None
    assert [epoch["steps"] for epoch in metrics["epochs"]] == [1, 1]  # one of the two training cases per rank
    assert "(1 on rank 0 of 2)" in done.stderr and "(1 on rank 1 of 2)" in done.stderr
