from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import save_net_with_metadata

from operators.core.device import ComputeDevice
from operators.core.errors import ModelLoadError
from operators.models.config import load_model_config
from operators.models.loader import load_model
from operators.models.networks import build_patch_classifier
from operators.models.runtime import RuntimeChoice, torch_runtime
from operators.wsi.classifier import PatchContract, frozen_for_cpu, prepare_classifier

CPU = torch.device("cpu")
CPU_TORCH = torch_runtime(ComputeDevice(CPU, "fp32"))
NETWORK = load_model_config("pathology_tumor_detection")["network"]


def build() -> torch.nn.Module:
    return build_patch_classifier(NETWORK)


class FlatClassifier(torch.nn.Module):
    """A TorchScript-style classifier with (N, 1) output and no dense capability."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


def test_bundle_state_dict_wrapped_in_model_key_loads_and_runs_densely(tmp_path: Path):
    torch.save({"model": build().state_dict()}, tmp_path / "model.pt")
    (tmp_path / "metadata.json").write_text(json.dumps({"name": "pathology_tumor_detection", "version": "0.6.0"}))
    classifier = prepare_classifier(load_model(tmp_path / "model.pt", build, CPU), CPU_TORCH)
    assert classifier.output_stride_px == 32
    assert classifier.model.version == "0.6.0"


@pytest.mark.parametrize(("card", "expected_stride"), [({"name": "flat", "version": "1"}, None)])
def test_torchscript_classifier_runs_in_patch_mode_unless_it_declares_dense(tmp_path: Path, card, expected_stride):
    save_net_with_metadata(
        torch.jit.script(FlatClassifier().eval()),
        str(tmp_path / "model"),
        include_config_vals=False,
        append_timestamp=False,
        meta_values=card,
    )
    classifier = prepare_classifier(load_model(tmp_path / "model.ts", build, CPU), CPU_TORCH)
    assert classifier.output_stride_px == expected_stride


def test_torchscript_that_falsely_declares_dense_is_refused(tmp_path: Path):
    card = {"name": "flat", "version": "1", "fully_convolutional": {"output_stride_px": 32}}
    save_net_with_metadata(
        torch.jit.script(FlatClassifier().eval()),
        str(tmp_path / "model"),
        include_config_vals=False,
        append_timestamp=False,
        meta_values=card,
    )
    with pytest.raises(ModelLoadError, match="claims to be fully convolutional"):
        prepare_classifier(load_model(tmp_path / "model.ts", build, CPU), CPU_TORCH)


def test_spleen_unet_weights_are_refused_as_a_classifier(tmp_path: Path):
    from operators.models.networks import build_spleen_unet

    torch.save(build_spleen_unet(load_model_config("spleen_ct_segmentation")["network"]).state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="do not fit the network"):
        load_model(tmp_path / "model.pt", build, CPU)


def test_two_class_torchscript_is_refused(tmp_path: Path):
    two = build_patch_classifier({**NETWORK, "num_classes": 2}).eval()
    torch.jit.save(torch.jit.script(two), str(tmp_path / "model.ts"))
    with pytest.raises(ModelLoadError, match="expected one tumor logit per patch"):
        prepare_classifier(load_model(tmp_path / "model.ts", build, CPU), CPU_TORCH)


def test_the_patch_contract_is_the_model_config_s_and_is_what_the_model_is_checked_against(tmp_path: Path):
    config = load_model_config("pathology_tumor_detection")
    assert PatchContract.from_config(config) == PatchContract(patch_px=224, state_dict_output_stride_px=32)
    torch.save(build().state_dict(), tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt", build, CPU)
    # the same network given 256 px patches answers a 2x2 map, not one logit: refused, naming the contract's size
    with pytest.raises(ModelLoadError, match="for two 256x256 patches"):
        prepare_classifier(model, CPU_TORCH, contract=PatchContract(patch_px=256, state_dict_output_stride_px=32))


def test_freezing_keeps_outputs():
    net = build().eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 288, 288) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(frozen_for_cpu(net)(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_the_bundle_classifier_gives_the_same_logits_in_every_fp32_runtime(backend: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CLINICAL_AI_RUNTIME_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    torch.save(build().state_dict(), tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt", build, CPU)
    classifier = prepare_classifier(model, RuntimeChoice(backend, ComputeDevice(CPU, "fp32"), "avx512f"), batch_size=4)
    assert classifier.runtime.backend == backend and classifier.network.backend == backend
    patches = torch.rand(3, 3, 224, 224) * 2 - 1  # a short batch (padded in OpenVINO)
    tile = torch.rand(1, 3, 288, 288) * 2 - 1  # a dense tile: 3 x 3 windows
    reference = build().eval()
    reference.load_state_dict(torch.load(tmp_path / "model.pt"))
    with torch.inference_mode():
        torch.testing.assert_close(classifier.network(patches), reference(patches), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(classifier.network(tile), reference(tile), atol=1e-4, rtol=1e-4)
