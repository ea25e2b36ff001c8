"""Running one WSI pipeline (MONAI's reference or the app) in its own process, and reading what it reports.

Each run is a child process, so that its wall time, CPU time and peak resident memory are its own
(:func:`benchmarks.process_metrics.run_measured`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.process_metrics import ProcessMeasurement, run_measured
from benchmarks.reporting import fmt
from benchmarks.wsi_bench_maps import dense_tile_windows, load_app_map, output_stride_px, patch_px

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_DIR = REPO_ROOT / "apps" / "wsi_metastasis_app"
REFERENCE_SCRIPT = REPO_ROOT / "benchmarks" / "wsi_monai_reference.py"
REFERENCE = "reference"


@dataclass(frozen=True)
class Pipeline:
    key: str
    app_args: tuple[str, ...] | None  # None: the reference


PIPELINES: tuple[Pipeline, ...] = (
    Pipeline(REFERENCE, None),
    Pipeline("patch-fp32-torch", ("--mode", "patch", "--precision", "fp32", "--backend", "torch")),
    Pipeline("patch-fp32", ("--mode", "patch", "--precision", "fp32")),
    Pipeline("patch", ("--mode", "patch")),
    Pipeline("dense-fp32", ("--mode", "dense", "--precision", "fp32")),
    Pipeline("dense", ("--mode", "dense")),
)


@dataclass
class RunRecord:
    pipeline: str
    slide: str
    command: list[str]
    process: ProcessMeasurement
    output_dir: str
    windows: int | None = None  # classified windows (patches)
    windows_per_s: float | None = None
    map_seconds: float | None = None  # the probability-map stage (reference: mask + dataset + inference)
    stages_s: dict[str, float] = field(default_factory=dict)
    mode: str | None = None
    compute: str | None = None
    reader: str | None = None
    map_shape_rows_cols: list[int] | None = None
    map_stride_level0_px: float | None = None
    self_reported_peak_mib: float | None = None
    computed_windows: int | None = None  # dense: windows of every tile that holds tissue (tiles run whole)
    tile_pixels: int | None = None  # dense: input pixels of those tiles
    tile_pixels_cropped: int | None = None  # dense: the same if each tile were cropped to its tissue windows' bounding box


def app_command(
    slide: Path, output_dir: Path, model: Path, extra: tuple[str, ...], batch_size: int | None, workers: int | None
) -> list[str]:
    command = [sys.executable, str(APP_DIR), "-i", str(slide), "-o", str(output_dir), "-m", str(model), "--device", "cpu", *extra]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command


def run_pipeline(pipeline: Pipeline, slide: Path, model: Path, run_dir: Path, args: argparse.Namespace, tag: str = "") -> RunRecord:
    name = pipeline.key + (f"@{tag}" if tag else "")
    output_dir = run_dir / name
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    if pipeline.app_args is None:
        command = [
            sys.executable,
            str(REFERENCE_SCRIPT),
            str(slide),
            str(model),
            str(output_dir),
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
            "--reader",
            args.reader,
        ]
    else:
        command = app_command(slide, output_dir, model, pipeline.app_args, args.batch_size, args.workers)
    logger.info("[%s] %s", name, " ".join(command))
    measured = run_measured(command, run_dir / f"{name}.log", args.timeout, cwd=REPO_ROOT)
    record = RunRecord(pipeline.key, slide.name, command, measured, str(output_dir))
    if pipeline.app_args is None:
        read_reference_result(record, output_dir)
    else:
        read_app_summary(record, output_dir / slide.stem)
    logger.info(
        "[%s] exit %d, %.1f s wall, %.1f CPU s, %.0f MiB peak RSS, %s windows at %s/s, load %.1f -> %.1f",
        name,
        measured.returncode,
        measured.wall_s,
        measured.cpu_s,
        measured.peak_rss_mib,
        record.windows,
        fmt(record.windows_per_s, ".1f"),
        measured.load_before,
        measured.load_after,
    )
    return record


def read_reference_result(record: RunRecord, output_dir: Path) -> None:
    path = output_dir / "reference.json"
    if not path.is_file():
        return
    result = json.loads(path.read_text())
    timings = result["timings_s"]
    record.windows = int(result["patches"])
    record.windows_per_s = float(result["patches_per_s"])
    record.map_seconds = float(timings["dataset_and_mask"] + timings["inference"])
    record.stages_s = {k: float(v) for k, v in timings.items()}
    record.mode, record.compute, record.reader = "patch", "cpu, float32 (eager)", result["reader"]
    record.map_shape_rows_cols = result["mask_shape_rows_cols"]
    record.map_stride_level0_px = float(result["mask_downsample"])


def read_app_summary(record: RunRecord, slide_output: Path) -> None:
    path = slide_output / "summary.json"
    if not path.is_file():
        return
    summary = json.loads(path.read_text())
    probability = summary["probability_map"]
    timings = {k: float(v) for k, v in summary.get("timings_s", {}).items()}
    record.windows_per_s = float(probability["windows_per_s"])
    record.stages_s = timings
    record.map_seconds = timings.get("tissue_mask", 0.0) + timings.get("probability_map", 0.0)
    record.mode, record.reader = probability["mode"], summary["slide"]["reader"]
    record.compute = (
        f"{summary.get('backend', 'torch')}, {summary.get('device')}, {summary.get('precision')}, {summary.get('cpu_isa', '?')}"
    )
    record.map_shape_rows_cols = probability["shape_rows_cols"]
    record.map_stride_level0_px = float(probability["stride_level0_px"])
    record.self_reported_peak_mib = summary.get("peak_memory_mib")
    tissue = load_app_map(slide_output).tissue if (slide_output / "probability_map.npy").is_file() else None
    record.windows = int(tissue.sum()) if tissue is not None else None
    if tissue is not None and record.mode == "dense":
        k = dense_tile_windows()
        record.computed_windows, record.tile_pixels, record.tile_pixels_cropped = dense_tile_costs(tissue, k)


def dense_tile_costs(tissue: np.ndarray, k: int, window_px: int | None = None, stride_px: int | None = None) -> tuple[int, int, int]:
    """(windows computed, tile input pixels, tile input pixels if each tile were cropped to the
    bounding box of its tissue windows) for dense mode's k x k-window tiles on ``tissue``; window and
    stride default to the model config's patch size and output stride."""
    window_px = patch_px() if window_px is None else window_px
    stride_px = output_stride_px() if stride_px is None else stride_px
    windows = pixels = cropped = 0
    side = window_px + (k - 1) * stride_px
    for r in range(0, tissue.shape[0], k):
        for c in range(0, tissue.shape[1], k):
            block = tissue[r : r + k, c : c + k]
            if not block.any():
                continue
            windows += k * k
            pixels += side * side
            rows, cols = np.nonzero(block.any(axis=1))[0], np.nonzero(block.any(axis=0))[0]
            cropped += (window_px + (rows[-1] - rows[0]) * stride_px) * (window_px + (cols[-1] - cols[0]) * stride_px)
    return windows, pixels, int(cropped)
