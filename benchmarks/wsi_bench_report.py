"""The WSI benchmark's tables: speed against the reference, map agreement, and the targets."""

from __future__ import annotations

from typing import Any

from benchmarks.reporting import fmt
from benchmarks.wsi_bench_runs import REFERENCE, RunRecord


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
        f"{'pipeline':<17} {'slide':<14} {'compute':<34} {'windows':>8} {'occup':>5} {'stride':>6} {'win/s':>7} {'map s':>7} {'wall s':>7} {'CPU s':>7} "
        f"{'peak MiB':>8} {'map x':>6} {'wall x':>6} {'CPU x':>6} {'load':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['pipeline']:<17} {row['slide'][:14]:<14} {str(row['compute'] or '-')[:34]:<34} {fmt(row['windows'], 'd'):>8} "
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
    # issue 12's targets: patch fp32 >= 3x with max |dp| <= 1e-4, patch default >= 10x, dense default >= 40x
    for key, needed in (("patch-fp32", 3.0), ("patch", 10.0), ("dense", 40.0)):
        row = by.get((key, bench_slide))
        if row is None:
            continue
        speed = row["speedup_map_vs_reference"]
        out[f"{key}: map time >= {needed:g}x reference"] = {"measured": speed, "met": speed is not None and speed >= needed}
    for key, limit in (("patch-fp32 vs reference", 1e-4), ("patch-fp32-torch vs reference", 1e-4), ("patch vs reference", 0.02)):
        if key in agreement and agreement[key].get("diff", {}).get("cells"):
            value = agreement[key]["diff"]["max_abs"]
            out[f"{key}: max |dp| <= {limit:g}"] = {"measured": value, "met": value <= limit}
    return out
