from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import save_net_with_metadata

from operators.core.errors import ModelLoadError
from operators.models.config import load_model_config
from operators.models.loader import check_output_channels, find_model_file, load_model
from operators.models.networks import build_spleen_unet

CPU = torch.device("cpu")
NETWORK = load_model_config("spleen_ct_segmentation")["network"]
SMALL_INPUT = (1, 1, 32, 32, 32)


def build() -> torch.nn.Module:
    return build_spleen_unet(NETWORK)


def save_torchscript(net: torch.nn.Module, folder: Path, meta: dict | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if meta is None:
        path = folder / "model.ts"
        torch.jit.save(torch.jit.script(net), str(path))
        return path
    save_net_with_metadata(
        torch.jit.script(net), str(folder / "model"), include_config_vals=False, append_timestamp=False, meta_values=meta
    )
    return folder / "model.ts"


def test_torchscript_with_embedded_card_gives_name_and_version(tmp_path: Path):
    path = save_torchscript(build(), tmp_path, {"name": "Spleen test model", "version": "9.8.7"})
    model = load_model(path, build, CPU)
    assert (model.kind, model.name, model.version) == ("torchscript", "Spleen test model", "9.8.7")
    assert len(model.sha256) == 64
    check_output_channels(model, SMALL_INPUT, 2, CPU)


@pytest.mark.parametrize(
    "wrap",
    [lambda sd: sd, lambda sd: {"model": sd}, lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}}],
    ids=["plain", "model-key", "ddp-prefixed"],
)
def test_state_dict_checkpoint_loads_with_card_beside_it(tmp_path: Path, wrap):
    net = build()
    torch.save(wrap(net.state_dict()), tmp_path / "weights.pt")
    (tmp_path / "metadata.json").write_text(json.dumps({"name": "beside", "version": "1.2"}))
    model = load_model(tmp_path, build, CPU)  # a folder holding one model
    assert (model.kind, model.name, model.version) == ("state_dict", "beside", "1.2")
    for key, value in net.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], value)


def test_model_without_card_is_named_after_its_file_and_hash(tmp_path: Path):
    path = save_torchscript(build(), tmp_path, None)
    model = load_model(path, build, CPU)
    assert model.name == "model" and model.version == f"sha256-{model.sha256[:12]}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is a text file, not weights", "neither a TorchScript model nor a PyTorch checkpoint"),
        (b"", "neither a TorchScript model nor a PyTorch checkpoint"),
    ],
)
def test_not_a_model_is_refused_with_a_named_reason(tmp_path: Path, content, message):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        load_model(path, build, CPU)


def test_weights_of_another_network_are_refused_listing_the_mismatch(tmp_path: Path):
    other = build_spleen_unet({**NETWORK, "out_channels": 3})
    torch.save(other.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="do not fit the network: .*wrong shapes"):
        load_model(tmp_path / "model.pt", build, CPU)


def test_torchscript_with_wrong_output_channels_is_refused(tmp_path: Path):
    path = save_torchscript(build_spleen_unet({**NETWORK, "out_channels": 3}), tmp_path, {"name": "three", "version": "1"})
    model = load_model(path, build, CPU)
    with pytest.raises(ModelLoadError, match="expected 2 output channels"):
        check_output_channels(model, SMALL_INPUT, 2, CPU)


def test_truncated_torchscript_archive_is_refused(tmp_path: Path):
    path = save_torchscript(build(), tmp_path, {"name": "x", "version": "1"})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError):
        load_model(path, build, CPU)


@pytest.mark.parametrize(
    ("files", "expected"),
    [(["a/model.ts", "a/other.pt"], "a/model.ts"), (["deep/er/weights.pth"], "deep/er/weights.pth")],
)
def test_find_model_file_in_a_folder(tmp_path: Path, files, expected):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert find_model_file(tmp_path) == tmp_path / expected


@pytest.mark.parametrize(("files", "message"), [([], "no model file"), (["a.pt", "b.pt"], "several model files")])
def test_find_model_file_refuses_ambiguous_or_empty_folders(tmp_path: Path, files, message):
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=message):
        find_model_file(tmp_path)
