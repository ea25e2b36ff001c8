"""The network alone, in every runtime the apps offer, against this CPU's peak.

For each model input (spleen UNet 4 x 96^3 windows; pathology ResNet18 16 x 224^2 patches; one dense
1216^2 tile = 32 x 32 windows) and each runtime (torch eager float32 as the reference, torch with
channels-last inputs in fp32 and bf16 autocast, bf16 autocast on contiguous inputs, bf16 weights, OpenVINO f32 and bf16), in
one process, interleaved repeats, median: ms per call, windows/s, achieved TFLOPS (FLOPs counted by
torch's FlopCounterMode) against the peak of the arithmetic it runs in (benchmarks/hardware.py), the
speed-up over the reference, and the largest output difference from it.

    .venv/bin/python benchmarks/network_limits.py [--models spleen,wsi-patch,wsi-dense] [--repeats 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.hardware import Arithmetic, this_cpu
from operators.core.device import ComputeDevice
from operators.models.config import load_model_config, model_dir
from operators.models.loader import find_model_file, load_model, sha256_of
from operators.models.networks import build_patch_classifier, build_spleen_unet
from operators.models.runtime import RuntimeChoice, TorchNetwork, prepare_network

logger = logging.getLogger("network_limits")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class ModelInput:
    name: str
    model_name: str
    build: Callable[[dict], torch.nn.Module]
    shape: tuple[int, ...]
    windows_per_call: int


INPUTS = {
    "spleen": ModelInput("spleen", "spleen_ct_segmentation", build_spleen_unet, (4, 1, 96, 96, 96), 4),
    "wsi-patch": ModelInput("wsi-patch", "pathology_tumor_detection", build_patch_classifier, (16, 3, 224, 224), 16),
    "wsi-dense": ModelInput("wsi-dense", "pathology_tumor_detection", build_patch_classifier, (1, 3, 1216, 1216), 32 * 32),
}
# runtime name -> (backend, precision, arithmetic it computes in)
RUNTIMES: dict[str, tuple[str, str, Arithmetic]] = {
    "torch eager fp32 (reference)": ("eager", "fp32", "fp32"),
    "torch fp32 channels-last": ("torch", "fp32", "fp32"),
    "torch bf16 autocast": ("autocast", "bf16", "bf16"),
    "torch bf16 autocast channels-last": ("torch", "bf16", "bf16"),
    "torch bf16 weights channels-last": ("bf16-weights", "bf16", "bf16"),
    "openvino f32": ("openvino", "fp32", "fp32"),
    "openvino bf16": ("openvino", "bf16", "bf16"),
}


@dataclass
class Row:
    model: str
    runtime: str
    ms_per_call: float
    windows_per_s: float
    tflops: float
    peak_tflops: float | None
    share_of_peak: float | None
    speedup_vs_eager_fp32: float
    max_abs_diff: float


def _runner(input_: ModelInput, runtime: str, module: torch.nn.Module, example: torch.Tensor, sha: str) -> Callable[[], torch.Tensor]:
    backend, precision, _ = RUNTIMES[runtime]
    compute = ComputeDevice(CPU, precision)
    if backend == "eager":
        return lambda: module(example)
    if backend == "autocast":
        return lambda: _autocast(module, example)
    fresh = load_model(
        find_model_file(model_dir(input_.model_name)), lambda: input_.build(load_model_config(input_.model_name)["network"]), CPU
    )
    if backend == "bf16-weights":  # measured for the record: the apps do not run it (TorchNetwork says why)
        layout = torch.channels_last if example.ndim == 4 else torch.channels_last_3d
        weights = fresh.module.eval().to(torch.bfloat16).to(memory_format=layout)
        cast = example.to(torch.bfloat16).contiguous(memory_format=layout)
        return lambda: weights(cast).float()
    if backend == "torch":
        network = TorchNetwork(fresh.module, compute, example.ndim - 2)
    else:
        network = prepare_network(fresh.module, RuntimeChoice("openvino", compute, ""), example, sha, batch_size=example.shape[0])
    return lambda: network(example)


def _autocast(module: torch.nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return module(example).float()


def measure(input_: ModelInput, repeats: int) -> list[Row]:
    config = load_model_config(input_.model_name)
    path = find_model_file(model_dir(input_.model_name))
    module = load_model(path, lambda: input_.build(config["network"]), CPU).module.eval()
    torch.manual_seed(0)
    example = torch.rand(input_.shape) * (2 if input_.shape[1] == 3 else 1) - (1 if input_.shape[1] == 3 else 0)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            reference = module(example)
        flops = counter.get_total_flops()
        runners = {name: _runner(input_, name, module, example, sha256_of(path)) for name in RUNTIMES}
        outputs = {name: run() for name, run in runners.items()}  # warm-up (and compilation)
        seconds: dict[str, list[float]] = {name: [] for name in RUNTIMES}
        for _ in range(repeats):  # interleaved, so load changes hit every runtime alike
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    cpu = this_cpu()
    base = statistics.median(seconds["torch eager fp32 (reference)"])
    rows = []
    for name in RUNTIMES:
        median = statistics.median(seconds[name])
        peak = cpu.peak_tflops(RUNTIMES[name][2])
        achieved = flops / median / 1e12
        rows.append(
            Row(
                input_.name,
                name,
                round(median * 1000, 1),
                round(input_.windows_per_call / median, 1),
                round(achieved, 3),
                round(peak, 2) if peak else None,
                round(achieved / peak, 3) if peak else None,
                round(base / median, 2),
                float((outputs[name].float() - reference).abs().max()),
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'model':10s} {'runtime':34s} {'ms/call':>9s} {'windows/s':>10s} {'TFLOPS':>7s} {'peak':>6s} {'of peak':>8s} {'speed-up':>8s} {'max diff':>9s}"
    print(header)
    for r in rows:
        share = f"{r.share_of_peak:.1%}" if r.share_of_peak is not None else "?"
        print(
            f"{r.model:10s} {r.runtime:34s} {r.ms_per_call:9.1f} {r.windows_per_s:10.1f} {r.tflops:7.3f} "
            f"{r.peak_tflops or float('nan'):6.2f} {share:>8s} {r.speedup_vs_eager_fp32:7.2f}x {r.max_abs_diff:9.2e}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(INPUTS), help=f"comma-separated: {', '.join(INPUTS)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    unknown = sorted(set(args.models.split(",")) - set(INPUTS))
    if unknown:
        parser.error(f"unknown model inputs {unknown}; choose from {', '.join(INPUTS)}")
    os.environ.setdefault("CLINICAL_AI_RUNTIME_CACHE", tempfile.mkdtemp(prefix="network-limits-"))
    cpu = this_cpu()
    load_before = os.getloadavg()[0]
    rows = [row for name in args.models.split(",") for row in measure(INPUTS[name], args.repeats)]
    print(f"CPU: {cpu.describe()}; torch threads {torch.get_num_threads()}; load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.describe(), "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
