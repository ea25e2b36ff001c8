"""Benchmark: the WSI metastasis app (patch and dense mode) against MONAI's reference pipeline, in one run.

Same slide, same weights. Every pipeline runs as its own child process, so that its wall time,
CPU time and peak resident memory (``os.wait4`` on its pid) are its own:

- ``reference``: ``benchmarks/wsi_monai_reference.py``, the model-zoo pathology_tumor_detection
  bundle's inference (MaskedPatchWSIDataset at mask level 6, 224 patches, the bundle's transforms,
  DataLoader batch 400, SimpleInferer, sigmoid, ProbMapProducer's map at 1/64 scale), float32 on
  the CPU, network eager as the bundle runs it;
- ``patch fp32``, ``patch``, ``dense fp32``, ``dense``: ``python apps/wsi_metastasis_app -i SLIDE
  -o OUT -m MODEL --mode patch|dense [--no-amp] --device cpu`` as users run it (``fp32`` rows with
  ``--no-amp``; the others with the app's default, bf16 autocast where the CPU has native bf16);
- ``scaling``: the app with its defaults (dense) on a mostly empty 100k x 100k slide and on a
  16k x 12k slide holding about the same tissue, to show that peak memory does not grow with the
  slide's size.

The maps are compared cell by cell, matched through level 0: the reference's patch of mask pixel
(row, col) has its level-0 top-left corner in the dataset's own sample metadata; its centre (+112)
is looked up on the app's grid from the app's ``probability_map.json`` (cell centre = origin + index
x stride). A centre that does not fall on an app cell centre is counted as misaligned.

Usage::

    .venv/bin/python benchmarks/wsi_app_vs_monai_reference.py --work-dir /tmp/wsi_bench --json /tmp/wsi_bench/result.json

``--model`` defaults to ``model_zoo/pathology_tumor_detection/model.pt`` when it exists, else a
seeded random model calibrated on the benchmark slide (see ``wsi_bench_inputs``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.process_metrics import ProcessMeasurement, run_measured  # noqa: E402
from benchmarks.wsi_bench_inputs import SlideSpec, describe_model, make_calibrated_random_model, parse_size, prepare_slide  # noqa: E402

logger = logging.getLogger("wsi_app_vs_monai_reference")

APP_DIR = REPO_ROOT / "apps" / "wsi_metastasis_app"
REFERENCE_SCRIPT = REPO_ROOT / "benchmarks" / "wsi_monai_reference.py"
TRAINED_MODEL = REPO_ROOT / "model_zoo" / "pathology_tumor_detection" / "model.pt"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "wsi_app_vs_monai_reference"
REFERENCE = "reference"
PATCH_PX = 224
MISALIGNED_TOLERANCE_PX = 1e-6
LARGE_AREA_PX = 100_000 * 100_000


@dataclass(frozen=True)
class Pipeline:
    key: str
    app_args: tuple[str, ...] | None  # None: the reference


PIPELINES: tuple[Pipeline, ...] = (
    Pipeline(REFERENCE, None),
    Pipeline("patch-fp32", ("--mode", "patch", "--no-amp")),
    Pipeline("patch", ("--mode", "patch")),
    Pipeline("dense-fp32", ("--mode", "dense", "--no-amp")),
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


@dataclass(frozen=True)
class AppMap:
    probabilities: np.ndarray
    tissue: np.ndarray  # bool, on the map's grid
    centre0_xy: tuple[float, float]
    stride_px: float


# ----------------------------------------------------------------------------------------------
# Running


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
    record.mode, record.compute, record.reader = probability["mode"], summary.get("device"), summary["slide"]["reader"]
    record.map_shape_rows_cols = probability["shape_rows_cols"]
    record.map_stride_level0_px = float(probability["stride_level0_px"])
    record.self_reported_peak_mib = summary.get("peak_memory_mib")
    tissue = load_app_map(slide_output).tissue if (slide_output / "probability_map.npy").is_file() else None
    record.windows = int(tissue.sum()) if tissue is not None else None
    if tissue is not None and record.mode == "dense":
        k = dense_tile_windows()
        record.computed_windows, record.tile_pixels, record.tile_pixels_cropped = dense_tile_costs(tissue, k)


def dense_tile_costs(tissue: np.ndarray, k: int, window_px: int = PATCH_PX, stride_px: int = 32) -> tuple[int, int, int]:
    """(windows computed, tile input pixels, tile input pixels if each tile were cropped to the
    bounding box of its tissue windows) for dense mode's k x k-window tiles on ``tissue``."""
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


# ----------------------------------------------------------------------------------------------
# Maps


def _model_config() -> dict[str, Any]:
    from operators.models.config import load_model_config

    return load_model_config("pathology_tumor_detection")


def mask_stride_model_px() -> int:
    return int(_model_config()["tissue_mask"]["mask_downsample"])


def dense_tile_windows() -> int:
    return int(_model_config()["inference"]["dense_tile_windows"])


def load_app_map(slide_output: Path) -> AppMap:
    """The app's map, its geometry, and its tissue cells (the mask grid's tissue mask brought to
    the map's grid as the app does: a cell is tissue when its centre is in a tissue mask pixel)."""
    from PIL import Image

    probabilities = np.load(slide_output / "probability_map.npy")
    geometry = json.loads((slide_output / "probability_map.json").read_text())
    mask = np.asarray(Image.open(slide_output / "tissue_mask.png")) > 0
    centre0 = (float(geometry["cell_0_centre_xy_level0"][0]), float(geometry["cell_0_centre_xy_level0"][1]))
    stride = float(geometry["stride_px_level0"])
    rows, cols = probabilities.shape
    if mask.shape == probabilities.shape:
        tissue = mask
    else:  # a finer grid (dense): mask pixel (i, j) covers model px [j * s, (j + 1) * s) x [i * s, ...), s = the mask stride
        mask_stride = mask_stride_model_px() * float(geometry["window_px_level0"]) / float(geometry["window_model_px"])
        r = np.floor((centre0[1] + stride * np.arange(rows)) / mask_stride).astype(int)
        c = np.floor((centre0[0] + stride * np.arange(cols)) / mask_stride).astype(int)
        ok_r, ok_c = r < mask.shape[0], c < mask.shape[1]
        tissue = np.zeros((rows, cols), dtype=bool)
        tissue[np.ix_(ok_r, ok_c)] = mask[np.ix_(r[ok_r], c[ok_c])]
    return AppMap(probabilities, tissue, centre0, stride)


def cells_at(app: AppMap, centres_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, aligned) of the app cells centred at level-0 ``centres_xy`` (N, 2)."""
    col_f = (centres_xy[:, 0] - app.centre0_xy[0]) / app.stride_px
    row_f = (centres_xy[:, 1] - app.centre0_xy[1]) / app.stride_px
    rows, cols = np.rint(row_f).astype(int), np.rint(col_f).astype(int)
    aligned = (np.abs(row_f - rows) * app.stride_px < MISALIGNED_TOLERANCE_PX + 1e-9) & (
        np.abs(col_f - cols) * app.stride_px < MISALIGNED_TOLERANCE_PX + 1e-9
    )
    inside = (rows >= 0) & (cols >= 0) & (rows < app.probabilities.shape[0]) & (cols < app.probabilities.shape[1])
    return np.where(inside, rows, 0), np.where(inside, cols, 0), aligned & inside


def diff_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    if a.size == 0:
        return {"cells": 0}
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "cells": int(a.size),
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "p99_abs": float(np.quantile(d, 0.99)),
        "over_1e-3": int((d > 1e-3).sum()),
    }


def compare_with_reference(reference_dir: Path, app_output: Path) -> dict[str, Any]:
    """The app's map against the reference's on the same level-0 patches."""
    ref_map = np.load(reference_dir / "reference_map.npy")
    locations = np.load(reference_dir / "reference_locations.npy")  # mask row, mask col, top-left y, x
    app = load_app_map(app_output)
    reference_stride = float(json.loads((reference_dir / "reference.json").read_text())["mask_downsample"])
    centres = np.stack([locations[:, 3] + PATCH_PX // 2, locations[:, 2] + PATCH_PX // 2], axis=1).astype(np.float64)
    rows, cols, aligned = cells_at(app, centres)
    on_tissue = aligned & app.tissue[rows, cols]
    ref_values = ref_map[locations[:, 0], locations[:, 1]]
    app_values = app.probabilities[rows, cols]
    offset = centres[:, 0] - (app.centre0_xy[0] + cols * app.stride_px), centres[:, 1] - (app.centre0_xy[1] + rows * app.stride_px)
    hit = np.zeros(app.tissue.shape, dtype=bool)
    hit[rows[aligned], cols[aligned]] = True
    app_cells = int(app.tissue.sum())
    return {
        "reference_patches": len(locations),
        "app_tissue_cells": app_cells,
        "misaligned_reference_patches": int((~aligned).sum()),
        "max_centre_offset_px": float(max(np.abs(offset[0]).max(initial=0.0), np.abs(offset[1]).max(initial=0.0))),
        "reference_only_cells": int((aligned & ~app.tissue[rows, cols]).sum()),
        "app_only_cells": int((app.tissue & ~hit).sum())
        if app.stride_px == reference_stride
        else None,  # dense: most cells are between patches
        "diff": diff_stats(ref_values[on_tissue], app_values[on_tissue]),
    }


def compare_app_maps(coarse_output: Path, fine_output: Path) -> dict[str, Any]:
    """Two app maps on the cells of the coarser one that both computed (e.g. patch vs dense)."""
    coarse, fine = load_app_map(coarse_output), load_app_map(fine_output)
    r0, c0 = np.nonzero(coarse.tissue)
    centres = np.stack([coarse.centre0_xy[0] + c0 * coarse.stride_px, coarse.centre0_xy[1] + r0 * coarse.stride_px], axis=1)
    rows, cols, aligned = cells_at(fine, centres)
    both = aligned & fine.tissue[rows, cols]
    return {
        "coarse_cells": len(r0),
        "misaligned": int((~aligned).sum()),
        "diff": diff_stats(coarse.probabilities[r0[both], c0[both]], fine.probabilities[rows[both], cols[both]]),
    }


# ----------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def speed_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    ref = next((r for r in records if r.pipeline == REFERENCE and r.process.returncode == 0), None)
    rows = []
    for record in records:
        mask_cells_per_s = None
        if record.map_seconds and ref is not None and ref.windows:
            mask_cells_per_s = ref.windows / record.map_seconds  # the reference's patches covered per second of map time
        rows.append(
            {
                "pipeline": record.pipeline,
                "slide": record.slide,
                "exit": record.process.returncode,
                "mode": record.mode,
                "compute": record.compute,
                "reader": record.reader,
                "windows": record.windows,
                "computed_windows": record.computed_windows,
                "dense_tile_pixels": record.tile_pixels,
                "dense_tile_pixels_if_cropped_to_tissue": record.tile_pixels_cropped,
                "stride_px": record.map_stride_level0_px,
                "windows_per_s": record.windows_per_s,
                "map_s": record.map_seconds,
                "wall_s": record.process.wall_s,
                "cpu_s": record.process.cpu_s,
                "peak_rss_mib": record.process.peak_rss_mib,
                "load": (record.process.load_before, record.process.load_after),
                "speedup_map_vs_reference": ratio(ref.map_seconds, record.map_seconds) if ref else None,
                "speedup_wall_vs_reference": ratio(ref.process.wall_s, record.process.wall_s) if ref else None,
                "speedup_cpu_vs_reference": ratio(ref.process.cpu_s, record.process.cpu_s) if ref else None,
                "reference_patches_per_s_equivalent": mask_cells_per_s,
                "peak_rss_vs_reference": ratio(record.process.peak_rss_mib, ref.process.peak_rss_mib) if ref else None,
            }
        )
    return rows


def format_speed_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'pipeline':<12} {'slide':<14} {'compute':<22} {'windows':>8} {'occup':>5} {'stride':>6} {'win/s':>7} {'map s':>7} {'wall s':>7} {'CPU s':>7} "
        f"{'peak MiB':>8} {'map x':>6} {'wall x':>6} {'CPU x':>6} {'load':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['pipeline']:<12} {row['slide'][:14]:<14} {str(row['compute'] or '-')[:22]:<22} {fmt(row['windows'], 'd'):>8} "
            f"{fmt(ratio(row['windows'], row['computed_windows']), '.2f'):>5} {fmt(row['stride_px'], '.0f'):>6} {fmt(row['windows_per_s'], '.1f'):>7} {fmt(row['map_s'], '.1f'):>7} {row['wall_s']:>7.1f} "
            f"{row['cpu_s']:>7.1f} {row['peak_rss_mib']:>8.0f} {fmt(row['speedup_map_vs_reference'], '.2f'):>6} "
            f"{fmt(row['speedup_wall_vs_reference'], '.2f'):>6} {fmt(row['speedup_cpu_vs_reference'], '.2f'):>6} "
            f"{row['load'][0]:>4.1f}-{row['load'][1]:<4.1f}" + (f"  EXIT {row['exit']}" if row["exit"] else "")
        )
    return "\n".join(lines)


def format_agreement(agreement: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'comparison':<28} {'cells':>7} {'max |dp|':>10} {'mean |dp|':>10} {'p99 |dp|':>10} {'>1e-3':>7} {'misaligned':>10}"]
    for name, result in agreement.items():
        d = result.get("diff", {})
        misaligned = result.get("misaligned_reference_patches", result.get("misaligned"))
        lines.append(
            f"{name:<28} {d.get('cells', 0):>7} {fmt(d.get('max_abs'), '.2e'):>10} {fmt(d.get('mean_abs'), '.2e'):>10} "
            f"{fmt(d.get('p99_abs'), '.2e'):>10} {fmt(d.get('over_1e-3'), 'd'):>7} {fmt(misaligned, 'd'):>10}"
        )
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], agreement: dict[str, dict[str, Any]]) -> dict[str, Any]:
    by = {(r["pipeline"], r["slide"]): r for r in rows}
    out: dict[str, Any] = {}
    bench_slide = next((r["slide"] for r in rows if r["pipeline"] == REFERENCE), None)
    for key, needed in (("patch-fp32", 2.0), ("patch", 2.0), ("dense-fp32", 10.0), ("dense", 10.0)):
        row = by.get((key, bench_slide))
        if row is None:
            continue
        speed = row["speedup_map_vs_reference"]
        out[f"{key}: map time >= {needed:g}x reference"] = {"measured": speed, "met": speed is not None and speed >= needed}
    for key in ("patch-fp32 vs reference", "patch vs reference"):
        if key in agreement and agreement[key].get("diff", {}).get("cells"):
            value = agreement[key]["diff"]["max_abs"]
            out[f"{key}: max |dp| < 1e-3"] = {"measured": value, "met": value < 1e-3}
    return out


def machine_info() -> dict[str, Any]:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "python": platform.python_version(),
        "node": platform.node(),
        "load_average_at_start": os.getloadavg(),
    }


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        type=Path,
        help="bundle-layout state dict or TorchScript classifier (default: the trained model, else a calibrated random one)",
    )
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="cached slides, model and run outputs")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--slide-size", type=parse_size, default=(8192, 8192), help="benchmark slide, level-0 WIDTHxHEIGHT")
    parser.add_argument("--tissue-fraction", type=float, default=0.035, help="benchmark slide's approximate tissue fraction")
    parser.add_argument("--tumor-sizes", default="400,150", help="benchmark slide's lesion major axes, um, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipelines", default=",".join(p.key for p in PIPELINES), help="subset of: " + ", ".join(p.key for p in PIPELINES))
    parser.add_argument("--batch-size", type=int, default=400, help="patches per batch in every pipeline (the bundle: 400)")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader processes and app decoding threads")
    parser.add_argument("--reader", default="OpenSlide", help="the reference's MONAI WSIReader backend (OpenSlide or cuCIM)")
    parser.add_argument("--large-size", type=parse_size, default=(100_000, 100_000), help="the mostly empty slide for peak memory")
    parser.add_argument("--small-size", type=parse_size, default=(16384, 12288), help="the slide it is compared with")
    parser.add_argument(
        "--large-tissue-fraction", type=float, default=0.0015, help="tissue fraction of the large slide; the small one gets the same area"
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the large / small slide runs")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is killed")
    args = parser.parse_args(argv)
    unknown = set(args.pipelines.split(",")) - {p.key for p in PIPELINES}
    if unknown:
        parser.error(f"unknown pipelines {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    work_dir = args.work_dir.resolve()
    run_dir = work_dir / "runs"
    machine = machine_info()
    tumor_sizes = tuple(float(v) for v in args.tumor_sizes.split(",") if v.strip())
    bench = SlideSpec(
        f"bench_{args.slide_size[0]}x{args.slide_size[1]}_s{args.seed}", args.slide_size, args.seed, args.tissue_fraction, tumor_sizes
    )
    slide = prepare_slide(bench, work_dir)
    if args.model is not None:
        model, model_kind = args.model.resolve(), "given"
    elif TRAINED_MODEL.is_file():
        model, model_kind = TRAINED_MODEL, "trained (model_zoo)"
    else:
        model = slide.parent / f"calibrated_random_seed{args.seed}.pt"  # in the slide's cache folder: rebuilt with the slide
        if not model.is_file():
            make_calibrated_random_model(slide, model, args.seed)
        model, model_kind = model, "random, batch-norm and head calibrated on the benchmark slide"
    logger.info("Model: %s (%s)", model, model_kind)

    wanted = set(args.pipelines.split(","))
    records = [run_pipeline(p, slide, model, run_dir, args) for p in PIPELINES if p.key in wanted]
    outputs = {r.pipeline: Path(r.output_dir) for r in records if r.process.returncode == 0}
    app_slide_dir = {key: path / slide.stem for key, path in outputs.items() if key != REFERENCE}

    agreement: dict[str, dict[str, Any]] = {}
    if REFERENCE in outputs:
        for key in ("patch-fp32", "patch", "dense-fp32", "dense"):
            if key in app_slide_dir:
                agreement[f"{key} vs reference"] = compare_with_reference(outputs[REFERENCE], app_slide_dir[key])
    for coarse, fine in (("patch-fp32", "dense-fp32"), ("patch", "dense"), ("patch-fp32", "patch"), ("dense-fp32", "dense")):
        if coarse in app_slide_dir and fine in app_slide_dir:
            agreement[f"{fine} vs {coarse}"] = compare_app_maps(app_slide_dir[coarse], app_slide_dir[fine])

    scaling: list[RunRecord] = []
    if not args.no_scaling:
        large_area = args.large_size[0] * args.large_size[1]
        tissue_px = args.large_tissue_fraction * large_area
        small_area = args.small_size[0] * args.small_size[1]
        default_app = Pipeline("app-default", ())
        for size, fraction in ((args.small_size, tissue_px / small_area), (args.large_size, args.large_tissue_fraction)):
            spec = SlideSpec(f"empty_{size[0]}x{size[1]}_t{tissue_px / 1e6:.0f}M_s{args.seed}", size, args.seed, fraction, ())
            scaling.append(
                run_pipeline(
                    default_app,
                    prepare_slide(spec, work_dir),
                    model,
                    run_dir,
                    argparse.Namespace(**(vars(args) | {"batch_size": None, "workers": None})),
                    tag=spec.name,
                )
            )

    rows = speed_rows(records)
    scaling_rows = speed_rows(scaling)
    goal = targets(rows, agreement)
    print(f"\nmachine: {machine['cpus']} CPUs (bf16: {machine['cpu_bf16']}), load average at start {machine['load_average_at_start']}")
    print(
        f"slide: {slide} ({bench.size_xy[0]} x {bench.size_xy[1]}, tissue fraction {bench.tissue_fraction}, tumours {bench.tumor_sizes_um} um)"
    )
    print(f"model: {model} ({model_kind})\n")
    print("map x / wall x / CPU x: reference's seconds divided by this row's (map: tissue mask + probability map stages);")
    print("occup: dense tiles' windows on tissue / windows computed (tiles run whole)")
    print(format_speed_table(rows))
    print("\nprobability agreement on the same level-0 windows:")
    print(format_agreement(agreement))
    if scaling_rows:
        print("\napp defaults on a mostly empty large slide vs a small slide with the same tissue:")
        print(format_speed_table(scaling_rows))
    print("\ntargets:")
    for name, value in goal.items():
        print(f"  {name}: {fmt(value['measured'], '.3g')} -> {'met' if value['met'] else 'MISSED'}")
    if args.json:
        result = {
            "machine": machine,
            "slide": {"path": str(slide), **asdict(bench)},
            "model": describe_model(model) | {"kind": model_kind},
            "settings": {"batch_size": args.batch_size, "workers": args.workers, "reader": args.reader},
            "rows": rows,
            "agreement": agreement,
            "scaling": scaling_rows,
            "targets": goal,
            "runs": [asdict(r) for r in records + scaling],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        logger.info("Wrote %s", args.json)
    return 0 if all(r.process.returncode == 0 for r in records + scaling) else 1


if __name__ == "__main__":
    sys.exit(main())
