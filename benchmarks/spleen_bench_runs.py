"""Running one spleen pipeline in its own process, and what its outputs say about the run.

Each run is a fresh child process started the way users start the pipeline; wall time, peak RSS
and CPU seconds are that child's alone (:func:`benchmarks.process_metrics.run_measured`).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.process_metrics import run_measured
from benchmarks.spleen_bench_inputs import PreparedInput

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_DIR = REPO_ROOT / "apps" / "spleen_seg_app"
STOCK_APP = REPO_ROOT / "benchmarks" / "sdk_stock_spleen_app.py"
OUR_SEG_FILE, OUR_SUMMARY_FILE, STOCK_TIMINGS_FILE = "spleen_seg.dcm", "summary.json", "stock_timings.json"
STOCK = "sdk-stock"


@dataclass(frozen=True)
class Pipeline:
    key: str  # for --pipelines and file names
    name: str  # as shown in the table
    script: Path
    extra_args: tuple[str, ...] = ()


PIPELINES: tuple[Pipeline, ...] = (
    Pipeline("ours", "ours", APP_DIR),
    Pipeline("fp32", "ours --precision fp32", APP_DIR, ("--precision", "fp32")),
    Pipeline("fp32-torch", "ours --precision fp32 --backend torch", APP_DIR, ("--precision", "fp32", "--backend", "torch")),
    Pipeline("no-body-crop", "ours --no-body-crop", APP_DIR, ("--no-body-crop",)),
    Pipeline(STOCK, STOCK, STOCK_APP),
)


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
