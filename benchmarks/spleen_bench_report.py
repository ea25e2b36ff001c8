"""The spleen benchmark's rows: each pipeline's SEG read back and compared, its timings summarised.

Every SEG is read back with highdicom onto the source slices (frames placed by
ReferencedSOPInstanceUID, each frame's geometry checked against its source slice) and compared by
Dice with the stock pipeline's mask, with that mask after the app's largest-component step, and
with the phantom's truth.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np

from benchmarks.reporting import fmt
from benchmarks.spleen_bench_inputs import PreparedInput
from benchmarks.spleen_bench_runs import STOCK, Pipeline, RunResult
from operators.core.metrics import dice_score
from operators.dicom.seg_readback import frame_geometry_problems, mask_on_source


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


def seg_mask_on_source(seg_path: Path, prepared: PreparedInput) -> tuple[np.ndarray, list[str]]:
    """The SEG's segment-1 mask (z, y, x) on the source slices in phantom order, and geometry problems found."""
    seg = hd.seg.segread(seg_path)
    return mask_on_source(seg, prepared.source_uids), frame_geometry_problems(seg, prepared.geometry)


def summarize_input(spec_name: str, runs: list[RunResult], prepared: PreparedInput, pipelines: tuple[Pipeline, ...]) -> list[Row]:
    # here, not at the top: the operators' module imports Holoscan, which warns in a process with the default stack
    from operators.ct.postprocessing import keep_largest_component

    masks: dict[str, np.ndarray] = {}
    problems: dict[str, list[str]] = {}
    for pipeline in pipelines:
        last = [r for r in runs if r.pipeline == pipeline.name and r.seg_path]
        if last:
            masks[pipeline.name], problems[pipeline.name] = seg_mask_on_source(Path(last[-1].seg_path), prepared)
    stock_lcc = keep_largest_component(masks[STOCK]) if STOCK in masks else None
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
                dice_vs_stock=dice_score(mask, masks[STOCK]) if mask is not None and STOCK in masks else None,
                dice_vs_stock_largest_component=dice_score(mask, stock_lcc) if mask is not None and stock_lcc is not None else None,
                dice_vs_truth=dice_score(mask, prepared.truth_zyx) if mask is not None else None,
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
