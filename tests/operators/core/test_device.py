"""The one device and precision resolver: CPU flags, requested x available -> resolved, refusals, the CLI options."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch

from operators.core.device import (
    ComputeChoiceError,
    ComputeDevice,
    add_compute_options,
    compute_on,
    cpu_flags,
    has_native_bf16,
    resolve_device,
    resolve_precision,
)

SAPPHIRE_RAPIDS = "fpu vme avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
COOPER_LAKE = "fpu avx2 avx512f avx512_vnni avx512_bf16"
ICE_LAKE = "fpu avx2 avx512f avx512_vnni avx512ifma"
ZEN4 = "fpu avx2 avx512f avx512_bf16 avx512_vnni"
HASWELL = "fpu sse4_2 avx avx2 fma"


def cpuinfo_text(flags: str, cores: int = 2) -> str:
    block = "processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: some CPU\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n"
    return "\n".join(block.format(n=n, flags=flags) for n in range(cores))


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (cpuinfo_text(SAPPHIRE_RAPIDS), True),
        (cpuinfo_text(COOPER_LAKE), True),
        (cpuinfo_text(ZEN4), True),
        (cpuinfo_text(ICE_LAKE), False),
        (cpuinfo_text(HASWELL), False),
        (cpuinfo_text("fpu avx512_bf16x amx_bf16_fake"), False),  # whole flag names only
        ("processor\t: 0\nmodel name\t: avx512_bf16 amx_bf16 in a name\nflags\t\t: fpu avx2\n", False),  # flags lines only
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", False),  # Arm: no x86 flags line
        ("", False),
    ],
)
def test_native_bf16_is_read_from_the_flags_lines_of_cpuinfo(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert has_native_bf16(cpu_flags(path)) is native


def test_an_unreadable_cpuinfo_means_no_flags(tmp_path):
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("requested", "device_type", "native_bf16", "resolved"),
    [
        ("auto", "cuda", False, "fp16"),
        ("auto", "cuda", True, "fp16"),
        ("auto", "cpu", True, "bf16"),
        ("auto", "cpu", False, "fp32"),
        ("fp32", "cuda", False, "fp32"),
        ("fp32", "cpu", True, "fp32"),
        ("bf16", "cpu", False, "bf16"),
        ("bf16", "cuda", False, "bf16"),
        ("fp16", "cuda", False, "fp16"),
        ("fp16", "cpu", True, "fp16"),
    ],
)
def test_precision_resolves_from_the_request_and_the_device(requested, device_type, native_bf16, resolved):
    assert resolve_precision(requested, device_type, native_bf16) == resolved


@pytest.mark.parametrize("requested", ["on", "off", "amp", "float16", "FP32", "", "bf32"])
def test_an_unknown_precision_is_refused_with_the_choices(requested):
    with pytest.raises(ComputeChoiceError, match=r"precision must be one of auto, fp32, bf16, fp16, got"):
        resolve_precision(requested, "cpu", True)


def test_a_resolved_compute_device_has_no_auto_precision():
    with pytest.raises(ComputeChoiceError, match="resolved precision must be one of fp32, bf16, fp16"):
        ComputeDevice(torch.device("cpu"), "auto")


@pytest.mark.parametrize(
    ("requested", "cuda_available", "local_rank", "resolved"),
    [
        ("auto", False, None, "cpu"),
        ("auto", True, None, "cuda"),
        ("auto", False, 1, "cpu"),
        ("auto", True, 1, "cuda:1"),
        ("cpu", True, None, "cpu"),
        ("cpu", True, 1, "cpu"),
        ("cuda", True, None, "cuda"),
        ("cuda", True, 1, "cuda:1"),
        ("cuda:2", True, None, "cuda:2"),
    ],
)
def test_device_resolves_from_the_request_cuda_and_the_local_rank(requested, cuda_available, local_rank, resolved):
    assert resolve_device(requested, cuda_available, local_rank) == torch.device(resolved)


@pytest.mark.parametrize(
    ("requested", "cuda_available", "local_rank", "message"),
    [
        ("gpu", True, None, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("cuda:x", True, None, "device must be"),
        ("CUDA", True, None, "device must be"),
        ("mps", False, None, "device must be"),
        ("cuda", False, None, "no CUDA device is available"),
        ("cuda:0", False, None, "no CUDA device is available"),
        ("cuda:0", True, 1, "under torchrun use auto or cuda"),
    ],
)
def test_an_unknown_or_unavailable_device_is_refused(requested, cuda_available, local_rank, message):
    with pytest.raises(ComputeChoiceError, match=message):
        resolve_device(requested, cuda_available, local_rank)


@pytest.mark.parametrize(("flags", "resolved"), [(SAPPHIRE_RAPIDS, "bf16"), (HASWELL, "fp32")])
def test_auto_on_the_cpu_follows_the_machines_flags(tmp_path, flags, resolved):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo_text(flags))
    assert compute_on(torch.device("cpu"), "auto", path) == ComputeDevice(torch.device("cpu"), resolved)
    assert compute_on(torch.device("cpu"), "fp32", path).precision == "fp32"


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_autocast_context_computes_in_the_resolved_type(precision, dtype):
    compute = ComputeDevice(torch.device("cpu"), precision)
    with compute.autocast():
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == dtype


@pytest.mark.parametrize(("precision", "scaled"), [("fp32", False), ("bf16", False), ("fp16", True)])
def test_only_fp16_training_scales_its_loss(precision, scaled):
    assert ComputeDevice(torch.device("cpu"), precision).grad_scaler().is_enabled() is scaled


def test_summaries_record_the_resolved_device_and_precision():
    assert ComputeDevice(torch.device("cpu"), "bf16").as_json() == {"device": "cpu", "precision": "bf16"}


def parser(deprecated_no_amp: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_compute_options(p, deprecated_no_amp=deprecated_no_amp)
    return p


def test_the_options_default_to_auto():
    args = parser().parse_args([])
    assert (args.device, args.precision) == ("auto", "auto")


def test_an_unknown_precision_option_is_refused():
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'half'"):
        parser().parse_args(["--precision", "half"])


def test_no_amp_is_a_deprecated_alias_of_fp32_in_the_apps_only(caplog):
    with caplog.at_level(logging.WARNING):
        assert parser(deprecated_no_amp=True).parse_args(["--no-amp"]).precision == "fp32"
    assert "--no-amp is deprecated" in caplog.text
    assert parser(deprecated_no_amp=True).parse_args(["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser().parse_args(["--no-amp"])
