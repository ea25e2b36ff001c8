"""A MAP's pre-built OpenVINO models: written under the key the app looks up, and used without conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from map_packaging.__main__ import main
from map_packaging.app_specs import REPO_ROOT, app_spec
from map_packaging.runtime_cache import CONVERTIBLE
from operators.core.device import ComputeDevice
from operators.models import runtime
from operators.models.config import load_model_config
from operators.models.loader import find_model_file, load_model, sha256_of
from operators.models.runtime import PREBUILT_CACHE_DIRNAME, RuntimeChoice, cache_key, prepare_network

CPU_FP32 = ComputeDevice(torch.device("cpu"), "fp32")


@pytest.mark.slow
@pytest.mark.parametrize("app", ["spleen_seg_app", "wsi_metastasis_app"])
def test_a_prebuilt_cache_serves_the_app_without_a_conversion(app: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = app_spec(app)
    model_name = spec.model_names[0]
    model_file = find_model_file(REPO_ROOT / "model_zoo" / model_name)
    staged = tmp_path / "staged"
    assert main(["stage", "--app", app, "--out", str(staged), "--models", str(model_file), "--prebuild-runtime-cache"]) == 0
    cache = staged / PREBUILT_CACHE_DIRNAME
    for precision in ("fp32", "bf16"):
        assert (cache / cache_key(sha256_of(model_file), precision) / "model.xml").is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although the MAP carries the model")

    monkeypatch.setattr(runtime, "convert_to_ir", no_conversion)
    monkeypatch.setenv("CLINICAL_AI_RUNTIME_CACHE", str(tmp_path / "empty-writable-cache"))
    config = load_model_config(model_name)
    convertible = CONVERTIBLE[model_name]
    model = load_model(model_file, lambda: convertible.build(config["network"]), torch.device("cpu"))
    example = convertible.example(config)
    network = prepare_network(
        model.module, RuntimeChoice("openvino", CPU_FP32, ""), example, model.sha256, batch_size=example.shape[0], cache_dirs=[cache]
    )
    assert network.backend == "openvino"
    with torch.inference_mode():
        torch.testing.assert_close(network(example), model.module(example), atol=1e-4, rtol=1e-4)


def test_prebuilding_needs_the_model(tmp_path: Path):
    assert main(["stage", "--app", "spleen_seg_app", "--out", str(tmp_path / "s"), "--prebuild-runtime-cache"]) == 2
    assert not (tmp_path / "s").exists()


def test_every_packageable_model_is_convertible():
    assert {m for a in ("spleen_seg_app", "wsi_metastasis_app") for m in app_spec(a).model_names} <= set(CONVERTIBLE)
