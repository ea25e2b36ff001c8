from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import save_net_with_metadata

from operators.core.errors import ModelIntegrityError, ModelLoadError
from operators.models.config import load_model_card, load_model_config, model_dir
from operators.models.loader import card_for_weights, check_output_channels, find_model_file, load_model, sha256_of
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


def state_dict_with_card(folder: Path, card: dict | None = None) -> Path:
    """A state-dict checkpoint and the card training's export writes beside it (with the weights' SHA-256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.save(build().state_dict(), path)
    (folder / "metadata.json").write_text(json.dumps(card_for_weights(card or {"name": "carded", "version": "2.0"}, path)))
    return path


def flip_byte(path: Path, fraction: float) -> None:
    """Flip the lowest bit of the byte at ``fraction`` of the file (0: its zip header; 0.5: inside a tensor)."""
    data = bytearray(path.read_bytes())
    data[int(fraction * len(data))] ^= 0x01
    path.write_bytes(bytes(data))


def test_weights_matching_their_card_are_verified(tmp_path: Path):
    model = load_model(state_dict_with_card(tmp_path), build, CPU)
    assert model.integrity.status == "verified" and model.integrity.expected_sha256 == model.sha256
    assert model.identity()["integrity"] == {"status": "verified", "expected_sha256": model.sha256, "reason": None}


@pytest.mark.parametrize("fraction", [0.0, 0.5], ids=["header", "weights"])
def test_a_flipped_byte_fails_the_integrity_check_before_loading(tmp_path: Path, fraction: float):
    path = state_dict_with_card(tmp_path)
    flip_byte(path, fraction)
    with pytest.raises(ModelIntegrityError, match="fails its integrity check: SHA-256 .* differs from .* in its model card"):
        load_model(path, build, CPU)


def test_allowed_unverified_weights_run_with_a_warning_and_say_so(tmp_path: Path, caplog):
    path = state_dict_with_card(tmp_path)
    flip_byte(path, 0.5)
    model = load_model(path, build, CPU, allow_unverified=True)
    assert model.integrity.status == "unverified" and "differs from" in model.integrity.reason
    assert (model.name, model.version) == ("carded", "2.0")
    assert "running it as unverified" in caplog.text


def test_a_model_without_a_hash_in_a_card_is_unverified(tmp_path: Path, caplog):
    path = save_torchscript(build(), tmp_path, {"name": "Spleen test model", "version": "9.8.7"})  # an embedded card only
    model = load_model(path, build, CPU)
    assert model.integrity.status == "unverified" and model.integrity.reason.startswith("no model card beside it")
    assert "is unverified" in caplog.text


def test_a_card_describing_another_file_does_not_verify_this_one(tmp_path: Path):
    path = state_dict_with_card(tmp_path)
    renamed = path.rename(tmp_path / "other.pt")
    assert load_model(renamed, build, CPU).integrity.status == "unverified"


def test_a_damaged_zip_directory_is_a_named_load_error(tmp_path: Path):
    """Flipped bytes in the central directory's names: zipfile raised UnicodeDecodeError, a traceback."""
    path = save_torchscript(build(), tmp_path, None)
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 200, len(data) - 150):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="damaged"):
        load_model(path, build, CPU)


@pytest.mark.parametrize("card", ["{not json", "[1, 2]", b"\xff\xfe\x00"], ids=["malformed", "not-an-object", "not-utf8"])
def test_an_unreadable_card_is_a_named_load_error(tmp_path: Path, card):
    torch.save(build().state_dict(), tmp_path / "model.pt")
    (tmp_path / "metadata.json").write_bytes(card if isinstance(card, bytes) else card.encode())
    with pytest.raises(ModelLoadError, match="model card .* (cannot be read|not a JSON object)"):
        load_model(tmp_path / "model.pt", build, CPU)


@pytest.mark.parametrize("model_name", ["spleen_ct_segmentation", "pathology_tumor_detection"])
def test_the_model_zoo_cards_carry_their_weights_sha256(model_name: str):
    card = load_model_card(model_name)
    weights = model_dir(model_name) / card["weights"]["file"]
    assert card["weights"]["sha256"] == sha256_of(weights)
