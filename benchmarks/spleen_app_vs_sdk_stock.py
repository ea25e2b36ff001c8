"""Benchmark: this project's spleen app against the MONAI Deploy SDK's stock pipeline, in one run.

Both pipelines get the same DICOM CT series and the same model file, and each runs end to end as a
fresh subprocess, the way users run it (``python apps/spleen_seg_app -i ... -o ... -m ...`` and
``python benchmarks/sdk_stock_spleen_app.py -i ... -o ... -m ...``). Per run it records the wall
time and the peak resident memory of that child alone (``os.wait4`` returns the rusage of the one
process waited for, so runs do not mix), reads both DICOM SEGs back with highdicom, aligns their
frames on the source slices by ReferencedSOPInstanceUID (and checks each frame's plane position
against its source slice), and computes Dice between the masks and against the phantom's truth.

Rows per input: ``ours`` (defaults), ``ours --no-amp``, ``ours --no-body-crop`` and ``sdk-stock``;
pipelines are interleaved within each repeat so that machine noise hits them alike.

Usage::

    python benchmarks/spleen_app_vs_sdk_stock.py --inputs demo,large --repeats 1 \
        --model model_zoo/spleen_ct_segmentation/model.ts --work-dir /tmp/spleen_bench --json result.json

Inputs (synthetic phantoms from training.synthetic.ct_phantom, written as DICOM CT series by
training.synthetic.dicom_series, cached under --work-dir and rebuilt when those sources change):
    demo:  (80, 256, 256) voxels (z, y, x) at (2.5, 1.5, 1.5) mm, seed 0
    large: (200, 512, 512) voxels at (2.5, 0.8, 0.8) mm, seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.process_metrics import run_measured  # noqa: E402
from training.synthetic.stamp import generator_stamp  # noqa: E402

logger = logging.getLogger("spleen_app_vs_sdk_stock")

APP_DIR = REPO_ROOT / "apps" / "spleen_seg_app"
STOCK_APP = REPO_ROOT / "benchmarks" / "sdk_stock_spleen_app.py"
DEFAULT_MODEL = REPO_ROOT / "model_zoo" / "spleen_ct_segmentation" / "model.ts"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "spleen_app_vs_sdk_stock"
GENERATOR_SOURCES = ("ct_phantom.py", "dicom_series.py")  # in training/synthetic
OUR_SEG_FILE, OUR_SUMMARY_FILE, STOCK_TIMINGS_FILE = "spleen_seg.dcm", "summary.json", "stock_timings.json"
STOCK = "sdk-stock"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    seed: int = 0


INPUTS: dict[str, InputSpec] = {
    "demo": InputSpec("demo", (80, 256, 256), (2.5, 1.5, 1.5), 0),
    "large": InputSpec("large", (200, 512, 512), (2.5, 0.8, 0.8), 0),
}


@dataclass(frozen=True)
class Pipeline:
    key: str  # for --pipelines and file names
    name: str  # as shown in the table
    script: Path
    extra_args: tuple[str, ...] = ()


PIPELINES: tuple[Pipeline, ...] = (
    Pipeline("ours", "ours", APP_DIR),
    Pipeline("no-amp", "ours --no-amp", APP_DIR, ("--no-amp",)),
    Pipeline("no-body-crop", "ours --no-body-crop", APP_DIR, ("--no-body-crop",)),
    Pipeline(STOCK, STOCK, STOCK_APP),
)


@dataclass(frozen=True)
class PreparedInput:
    spec: InputSpec
    dicom_dir: Path
    truth_zyx: np.ndarray  # uint8, slice order of ``source_uids``
    source_uids: tuple[str, ...]  # SOP Instance UIDs in phantom z order
    source_positions: dict[str, tuple[float, float, float]]  # ImagePositionPatient per SOP Instance UID
    orientation: tuple[float, ...]  # the series' ImageOrientationPatient
    pixel_spacing: tuple[float, float]  # the series' PixelSpacing (row, column)


@dataclass
class RunResult:
    input: str
    pipeline: str
    repeat: int
    returncode: int
    wall_s: float
    peak_rss_mib: float
    cpu_s: float
    output_dir: str
    stages_s: dict[str, float] = field(default_factory=dict)
    seg_path: str | None = None
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after the run


# ----------------------------------------------------------------------------------------------
# Inputs


def generator_fingerprint(spec: InputSpec) -> str:
    """Changes when the input spec or the phantom / DICOM writer sources change."""
    return generator_stamp(GENERATOR_SOURCES, asdict(spec))[:16]


def read_source_slices(dicom_dir: Path, with_pixels: bool) -> list[Any]:
    """The series' datasets sorted along the slice normal (inferior to superior for axial LPS)."""
    import pydicom

    slices = [pydicom.dcmread(path, stop_before_pixels=not with_pixels) for path in sorted(dicom_dir.rglob("*")) if path.is_file()]
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    slices.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    return slices


def hu_volume(slices: list[Any]) -> np.ndarray:
    return np.stack([ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0)) for ds in slices])


def slice_positions(slices: list[Any]) -> dict[str, tuple[float, float, float]]:
    return {str(ds.SOPInstanceUID): tuple(float(v) for v in ds.ImagePositionPatient) for ds in slices}


def phantom_order(hu_written: np.ndarray, hu_read_sorted: np.ndarray) -> int:
    """+1 when the phantom's slice 0 is the most inferior written slice, -1 when reversed."""
    if np.array_equal(np.rint(hu_read_sorted), hu_written):
        return 1
    if np.array_equal(np.rint(hu_read_sorted[::-1]), hu_written):
        return -1
    raise RuntimeError("the DICOM series read back does not reproduce the phantom's HU values")


def build_input(spec: InputSpec, folder: Path) -> None:
    from training.synthetic.ct_phantom import make_abdomen_phantom
    from training.synthetic.dicom_series import write_ct_series

    logger.info("Generating the %s phantom %s at %s mm", spec.name, spec.shape_zyx, spec.spacing_zyx_mm)
    start = time.perf_counter()
    phantom = make_abdomen_phantom(spec.shape_zyx, spec.spacing_zyx_mm, spec.seed)
    dicom_dir = folder / "dicom"
    write_ct_series(phantom.hu_zyx, phantom.spacing_zyx_mm, dicom_dir, seed=spec.seed)
    slices = read_source_slices(dicom_dir, with_pixels=True)
    uids = [str(ds.SOPInstanceUID) for ds in slices]
    order = phantom_order(phantom.hu_zyx, hu_volume(slices))
    np.save(folder / "truth_zyx.npy", phantom.spleen_mask_zyx.astype(np.uint8))
    (folder / "source_uids.json").write_text(json.dumps(uids if order == 1 else uids[::-1]))
    logger.info("Wrote %d slices to %s in %.1f s", len(uids), dicom_dir, time.perf_counter() - start)


def prepare_input(spec: InputSpec, work_dir: Path) -> PreparedInput:
    """The cached DICOM series and truth for ``spec``, generated when missing or stale."""
    folder = work_dir / "inputs" / spec.name
    stamp = folder / "fingerprint.txt"
    fingerprint = generator_fingerprint(spec)
    if not stamp.is_file() or stamp.read_text() != fingerprint:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        build_input(spec, folder)
        stamp.write_text(fingerprint)
    else:
        logger.info("Reusing cached %s input in %s", spec.name, folder)
    slices = read_source_slices(folder / "dicom", with_pixels=False)
    return PreparedInput(
        spec=spec,
        dicom_dir=folder / "dicom",
        truth_zyx=np.load(folder / "truth_zyx.npy"),
        source_uids=tuple(json.loads((folder / "source_uids.json").read_text())),
        source_positions=slice_positions(slices),
        orientation=tuple(float(v) for v in slices[0].ImageOrientationPatient),
        pixel_spacing=(float(slices[0].PixelSpacing[0]), float(slices[0].PixelSpacing[1])),
    )


# ----------------------------------------------------------------------------------------------
# Running one pipeline in its own process


def pipeline_command(pipeline: Pipeline, dicom_dir: Path, output_dir: Path, model: Path) -> list[str]:
    return [sys.executable, str(pipeline.script), "-i", str(dicom_dir), "-o", str(output_dir), "-m", str(model), *pipeline.extra_args]


def find_seg(pipeline: Pipeline, output_dir: Path) -> Path | None:
    if pipeline.name != STOCK:
        path = output_dir / OUR_SEG_FILE
        return path if path.is_file() else None
    segs = sorted(output_dir.glob("*.dcm"))
    return segs[0] if len(segs) == 1 else None


def stage_timings(pipeline: Pipeline, output_dir: Path) -> dict[str, float]:
    if pipeline.name != STOCK:
        summary = output_dir / OUR_SUMMARY_FILE
        if not summary.is_file():
            return {}
        run_info = json.loads(summary.read_text())
        timings = find_key(run_info, "timings_s") or {}
        return {k: float(v) for k, v in timings.items()}
    path = output_dir / STOCK_TIMINGS_FILE
    return {k: float(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def find_key(tree: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


def run_pipeline(pipeline: Pipeline, prepared: PreparedInput, model: Path, run_dir: Path, repeat: int, timeout_s: float) -> RunResult:
    slug = pipeline.key
    output_dir = run_dir / prepared.spec.name / f"{slug}_r{repeat}"
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    command = pipeline_command(pipeline, prepared.dicom_dir, output_dir, model)
    logger.info("[%s r%d] %s", prepared.spec.name, repeat, " ".join(command))
    measured = run_measured(command, output_dir.parent / f"{slug}_r{repeat}.log", timeout_s, cwd=REPO_ROOT)
    code, wall, rss, cpu = measured.returncode, measured.wall_s, measured.peak_rss_mib, measured.cpu_s
    load = (measured.load_before, measured.load_after)
    seg = find_seg(pipeline, output_dir)
    logger.info(
        "[%s r%d] %s: exit %d, %.1f s, %.0f MiB peak RSS, %.1f CPU s, load %s",
        prepared.spec.name,
        repeat,
        pipeline.name,
        code,
        wall,
        rss,
        cpu,
        load,
    )
    return RunResult(
        input=prepared.spec.name,
        pipeline=pipeline.name,
        repeat=repeat,
        returncode=code,
        wall_s=wall,
        peak_rss_mib=rss,
        cpu_s=cpu,
        output_dir=str(output_dir),
        stages_s=stage_timings(pipeline, output_dir),
        seg_path=str(seg) if seg else None,
        load_average=load,
    )


# ----------------------------------------------------------------------------------------------
# Reading the SEGs back and comparing masks


def seg_mask_on_source(seg_path: Path, prepared: PreparedInput) -> tuple[np.ndarray, list[str]]:
    """The SEG's segment-1 mask (z, y, x) on the source slices in phantom order, and geometry problems found."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    problems = check_frame_geometry(seg, prepared)
    mask = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(prepared.source_uids),
        segment_numbers=[1],
        combine_segments=True,
        assert_missing_frames_are_empty=True,
        dtype=np.uint8,
    )
    return (np.asarray(mask) > 0).astype(np.uint8), problems


def check_frame_geometry(seg: Any, prepared: PreparedInput, tolerance_mm: float = 1e-3) -> list[str]:
    """Each frame's plane position must be its referenced source slice's ImagePositionPatient."""
    problems: list[str] = []
    shape = prepared.truth_zyx.shape
    if (int(seg.Rows), int(seg.Columns)) != tuple(shape[1:]):
        problems.append(f"SEG is {seg.Rows}x{seg.Columns}, source {shape[1]}x{shape[2]}")
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" in shared:
        orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
        if not np.allclose(orientation, prepared.orientation, atol=1e-4):
            problems.append(f"SEG orientation {orientation.tolist()} != source {list(prepared.orientation)}")
    if "PixelMeasuresSequence" in shared:
        spacing = np.asarray(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)
        if not np.allclose(spacing, prepared.pixel_spacing, atol=1e-4):
            problems.append(f"SEG pixel spacing {spacing.tolist()} != source {list(prepared.pixel_spacing)}")
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if uid not in prepared.source_positions:
            problems.append(f"frame {index + 1} references unknown instance {uid}")
            continue
        if "PlanePositionSequence" not in frame:
            continue
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        offset = float(np.abs(position - np.asarray(prepared.source_positions[uid])).max())
        if offset > tolerance_mm:
            problems.append(f"frame {index + 1} plane position {position.tolist()} is {offset:.3f} mm off its source slice")
    return problems


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask (as the app's postprocessing)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask.astype(np.uint8)
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == 1 + int(np.argmax(sizes))).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


# ----------------------------------------------------------------------------------------------
# Summary table


@dataclass
class Row:
    input: str
    pipeline: str
    wall_s: float
    wall_s_runs: list[float]
    peak_rss_mib: float
    cpu_s: float
    dice_vs_stock: float | None
    dice_vs_stock_largest_component: float | None  # vs the stock mask after the largest-component step our app applies
    dice_vs_truth: float | None
    mask_voxels: int | None
    speedup_vs_stock: float | None  # median over repeats of (stock wall / this wall) in the same repeat
    cpu_ratio_vs_stock: float | None  # the same for CPU seconds (user + system)
    stages_s: dict[str, float]
    failed_runs: int
    geometry_problems: list[str]


def summarize_input(spec_name: str, runs: list[RunResult], prepared: PreparedInput, pipelines: tuple[Pipeline, ...]) -> list[Row]:
    masks: dict[str, np.ndarray] = {}
    problems: dict[str, list[str]] = {}
    for pipeline in pipelines:
        last = [r for r in runs if r.pipeline == pipeline.name and r.seg_path]
        if last:
            masks[pipeline.name], problems[pipeline.name] = seg_mask_on_source(Path(last[-1].seg_path), prepared)
    stock_lcc = largest_component(masks[STOCK]) if STOCK in masks else None
    rows = []
    for pipeline in pipelines:
        mine = [r for r in runs if r.pipeline == pipeline.name]
        ok = [r for r in mine if r.returncode == 0]
        mask = masks.get(pipeline.name)
        wall = statistics.median([r.wall_s for r in ok]) if ok else float("nan")
        rows.append(
            Row(
                input=spec_name,
                pipeline=pipeline.name,
                wall_s=wall,
                wall_s_runs=[round(r.wall_s, 2) for r in ok],
                peak_rss_mib=max((r.peak_rss_mib for r in ok), default=float("nan")),
                cpu_s=statistics.median([r.cpu_s for r in ok]) if ok else float("nan"),
                dice_vs_stock=dice(mask, masks[STOCK]) if mask is not None and STOCK in masks else None,
                dice_vs_stock_largest_component=dice(mask, stock_lcc) if mask is not None and stock_lcc is not None else None,
                dice_vs_truth=dice(mask, prepared.truth_zyx) if mask is not None else None,
                mask_voxels=int(mask.sum()) if mask is not None else None,
                speedup_vs_stock=paired_ratio(runs, pipeline.name, "wall_s"),
                cpu_ratio_vs_stock=paired_ratio(runs, pipeline.name, "cpu_s"),
                stages_s=with_process_overhead(ok[-1]) if ok else {},
                failed_runs=len(mine) - len(ok),
                geometry_problems=problems.get(pipeline.name, [])[:10],
            )
        )
    return rows


def with_process_overhead(run: RunResult) -> dict[str, float]:
    """The run's stage seconds plus ``process_overhead``: wall time outside the app's own total
    (interpreter start, imports, Holoscan set-up before the timer starts, exit)."""
    in_app = run.stages_s.get("total", run.stages_s.get("total_in_app"))
    overhead = {"process_overhead": round(run.wall_s - in_app, 3)} if in_app is not None else {}
    return run.stages_s | overhead


def paired_ratio(runs: list[RunResult], pipeline: str, metric: str) -> float | None:
    """Median over repeats of stock's ``metric`` / this pipeline's, pairing runs of the same repeat."""
    ok = {(r.pipeline, r.repeat): getattr(r, metric) for r in runs if r.returncode == 0}
    ratios = [ok[(STOCK, rep)] / value for (name, rep), value in ok.items() if name == pipeline and (STOCK, rep) in ok and value > 0]
    return statistics.median(ratios) if ratios else None


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'input':<7} {'pipeline':<21} {'wall s':>8} {'peak RSS MiB':>13} {'Dice vs stock':>14} {'Dice vs truth':>14} "
        f"{'stock/this':>11} {'CPU s':>8} {'CPU stock/this':>15} {'Dice vs stock+LCC':>18}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.input:<7} {row.pipeline:<21} {row.wall_s:>8.1f} {row.peak_rss_mib:>13.0f} "
            f"{fmt(row.dice_vs_stock, '.4f'):>14} {fmt(row.dice_vs_truth, '.4f'):>14} {fmt(row.speedup_vs_stock, '.2f') + 'x':>11} "
            f"{row.cpu_s:>8.1f} {fmt(row.cpu_ratio_vs_stock, '.2f') + 'x':>15} {fmt(row.dice_vs_stock_largest_component, '.4f'):>18}"
            + (f"  ({row.failed_runs} failed)" if row.failed_runs else "")
        )
    return "\n".join(lines)


def format_stages(rows: list[Row]) -> str:
    return "\n".join(f"{row.input:<7} {row.pipeline:<21} " + ", ".join(f"{k} {v:.1f}" for k, v in row.stages_s.items()) for row in rows)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", default="demo,large", help="comma-separated: " + ", ".join(INPUTS))
    parser.add_argument("--repeats", type=int, default=1, help="runs of each pipeline per input (median wall time reported)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="TorchScript model used by every pipeline")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="cached inputs and run outputs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--pipelines", default=",".join(p.key for p in PIPELINES), help="comma-separated subset of: " + ", ".join(p.key for p in PIPELINES)
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is killed")
    args = parser.parse_args(argv)
    unknown = [name for name in args.inputs.split(",") if name not in INPUTS]
    if unknown:
        parser.error(f"unknown inputs {unknown}; choose from {list(INPUTS)}")
    unknown = [key for key in args.pipelines.split(",") if key not in {p.key for p in PIPELINES}]
    if unknown:
        parser.error(f"unknown pipelines {unknown}; choose from {[p.key for p in PIPELINES]}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.model.is_file():
        parser.error(f"model not found: {args.model}")
    return args


def machine_info() -> dict[str, Any]:
    import platform

    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "node": platform.node(),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    wanted = set(args.pipelines.split(","))
    pipelines = tuple(p for p in PIPELINES if p.key in wanted)
    model = args.model.resolve()
    work_dir = args.work_dir.resolve()
    run_dir = work_dir / "runs"
    rows: list[Row] = []
    all_runs: list[RunResult] = []
    for name in args.inputs.split(","):
        prepared = prepare_input(INPUTS[name], work_dir)
        runs = [run_pipeline(p, prepared, model, run_dir, r, args.timeout) for r in range(args.repeats) for p in pipelines]
        all_runs.extend(runs)
        rows.extend(summarize_input(name, runs, prepared, pipelines))
        print(format_table([r for r in rows if r.input == name]), flush=True)
    print(f"\nmodel: {model}\n")
    print(format_table(rows))
    print("\nper-stage seconds (last run of each):")
    print(format_stages(rows))
    for row in rows:
        if row.geometry_problems:
            print(f"geometry problems in {row.input} / {row.pipeline}: {row.geometry_problems}")
    if args.json:
        result = {
            "model": str(model),
            "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "machine": machine_info(),
            "inputs": {name: asdict(INPUTS[name]) for name in args.inputs.split(",")},
            "rows": [asdict(r) for r in rows],
            "runs": [asdict(r) for r in all_runs],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float))
        logger.info("Wrote %s", args.json)
    return 0 if all(r.failed_runs == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
