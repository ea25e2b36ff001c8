"""The inference runtimes: backend choice, torch and OpenVINO networks, the on-disk cache, fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from operators.core.device import ComputeChoiceError, ComputeDevice
from operators.models.runtime import (
    OpenVINONetwork,
    RuntimeChoice,
    TorchNetwork,
    cache_key,
    cpu_isa,
    prepare_network,
    resolve_backend,
)

CPU_FP32 = ComputeDevice(torch.device("cpu"), "fp32")
CPU_BF16 = ComputeDevice(torch.device("cpu"), "bf16")
SHA = "0123456789abcdef" * 4


@pytest.fixture(autouse=True)
def runtime_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "runtime-cache"
    monkeypatch.setenv("CLINICAL_AI_RUNTIME_CACHE", str(cache))
    return cache


def small_net(spatial_dims: int) -> torch.nn.Module:
    conv, norm = (torch.nn.Conv2d, torch.nn.BatchNorm2d) if spatial_dims == 2 else (torch.nn.Conv3d, torch.nn.BatchNorm3d)
    torch.manual_seed(spatial_dims)
    net = torch.nn.Sequential(conv(3, 8, 3, padding=1), norm(8), torch.nn.ReLU(), conv(8, 2, 1))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


class UntraceableNet(torch.nn.Module):
    """A model OpenVINO cannot convert: it refuses to be traced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("this model cannot be traced")
        return x[:, :2] * 2


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        ({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_tile"}, "amx_bf16"),
        ({"avx2", "avx512f", "avx512_bf16"}, "avx512_bf16"),
        ({"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),
        ({"avx2", "avx512f"}, "avx512f"),
        ({"sse4_2", "avx2"}, "avx2"),
        (set(), "baseline"),
    ],
)
def test_cpu_isa_names_the_most_capable_instruction_set(flags: set[str], isa: str):
    assert cpu_isa(flags) == isa


PREFERENCES = {"native_bf16": "torch", "default": "openvino"}


@pytest.mark.parametrize(
    ("requested", "device_type", "native_bf16", "have_openvino", "expected"),
    [
        ("auto", "cpu", True, True, "torch"),
        ("auto", "cpu", False, True, "openvino"),
        ("auto", "cpu", False, False, "torch"),
        ("auto", "cuda", False, True, "torch"),
        ("torch", "cpu", False, True, "torch"),
        ("openvino", "cpu", True, True, "openvino"),
        ("openvino", "cpu", True, False, "torch"),
    ],
)
def test_backend_resolution(requested: str, device_type: str, native_bf16: bool, have_openvino: bool, expected: str):
    assert resolve_backend(requested, device_type, native_bf16, PREFERENCES, have_openvino) == expected


def test_auto_without_a_preference_in_the_config_runs_torch():
    assert resolve_backend("auto", "cpu", False, {}, True) == "torch"


@pytest.mark.parametrize(
    ("requested", "device_type", "message"), [("tensorrt", "cpu", "backend must be one of"), ("openvino", "cuda", "runs on the CPU")]
)
def test_impossible_backends_are_refused_with_the_reason(requested: str, device_type: str, message: str):
    with pytest.raises(ComputeChoiceError, match=message):
        resolve_backend(requested, device_type, False, PREFERENCES, True)


def test_missing_openvino_falls_back_to_torch_with_one_warning(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert resolve_backend("openvino", "cpu", False, PREFERENCES, False) == "torch"
    assert [r.message for r in caplog.records if r.levelno == logging.WARNING] == [
        "OpenVINO is not installed (pip install openvino); running the network in torch"
    ]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torch_network_in_fp32_gives_the_module_output_and_bf16_stays_close(spatial_dims: int):
    net = small_net(spatial_dims)
    batch = torch.rand(3, 3, *([12] * spatial_dims))
    with torch.no_grad():
        reference = net(batch)
        fp32 = TorchNetwork(small_net(spatial_dims), CPU_FP32, spatial_dims)(batch)
        bf16 = TorchNetwork(small_net(spatial_dims), CPU_BF16, spatial_dims)(batch)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.float32
    torch.testing.assert_close(fp32, reference, atol=1e-5, rtol=1e-5)
    assert float((bf16 - reference).abs().max()) < 0.1


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_openvino_fp32_matches_torch_and_pads_a_short_batch(spatial_dims: int, runtime_cache: Path):
    net = small_net(spatial_dims)
    example = torch.rand(4, 3, *([16] * spatial_dims))
    network = prepare_network(net, RuntimeChoice("openvino", CPU_FP32, "avx512f"), example, SHA, batch_size=4)
    assert isinstance(network, OpenVINONetwork)
    short = torch.rand(3, 3, *([16] * spatial_dims))
    with torch.no_grad():
        reference = net(short)
    output = network(short)
    assert output.shape == reference.shape
    torch.testing.assert_close(output, reference, atol=1e-5, rtol=1e-5)
    assert (runtime_cache / cache_key(SHA, "fp32") / "model.xml").is_file()


def test_a_second_preparation_reads_the_converted_model_from_the_cache(runtime_cache: Path):
    net = small_net(2)
    example = torch.rand(2, 3, 16, 16)
    choice = RuntimeChoice("openvino", CPU_FP32, "avx512f")
    prepare_network(net, choice, example, SHA, batch_size=2)
    # Same SHA-256: the IR on disk serves, so even a module that cannot be converted runs as the cached model.
    cached = prepare_network(UntraceableNet(), choice, example, SHA, batch_size=2)
    assert isinstance(cached, OpenVINONetwork)
    with torch.no_grad():
        torch.testing.assert_close(cached(example), net(example), atol=1e-5, rtol=1e-5)


def test_a_prebuilt_read_only_cache_is_used_before_the_writable_one(tmp_path: Path, runtime_cache: Path):
    net = small_net(2)
    example = torch.rand(2, 3, 16, 16)
    choice = RuntimeChoice("openvino", CPU_FP32, "avx512f")
    prepare_network(net, choice, example, SHA, batch_size=2)
    prebuilt = tmp_path / "prebuilt"
    prebuilt.mkdir()
    (runtime_cache / cache_key(SHA, "fp32")).rename(prebuilt / cache_key(SHA, "fp32"))
    network = prepare_network(UntraceableNet(), choice, example, SHA, batch_size=2, cache_dirs=[prebuilt])
    assert isinstance(network, OpenVINONetwork)
    assert not (runtime_cache / cache_key(SHA, "fp32")).exists()


def test_a_model_openvino_cannot_convert_runs_in_torch_with_one_warning(caplog: pytest.LogCaptureFixture):
    example = torch.rand(2, 3, 8, 8)
    with caplog.at_level(logging.WARNING):
        network = prepare_network(UntraceableNet(), RuntimeChoice("openvino", CPU_FP32, "avx512f"), example, SHA, batch_size=2)
    assert isinstance(network, TorchNetwork) and network.backend == "torch"
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("OpenVINO could not run this model")
    torch.testing.assert_close(network(example), example[:, :2] * 2)
