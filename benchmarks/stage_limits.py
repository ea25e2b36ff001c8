"""The per-stage table both app benchmarks print, with each stage's limit on this machine.

- stage shares: each pipeline's stages (from its summary.json timings) as seconds and share of the
  process's wall time; what no stage covers is start-up (imports, model load) and exit;
- network limit: the network alone in the runtimes the apps offer (benchmarks/network_limits.py),
  windows/s and achieved TFLOPS against this CPU's peak;
- decode limit (slides): level-0 pixels decoded per second by the app's slide reader, one thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.hardware import this_cpu
from benchmarks.network_limits import INPUTS, Row, measure, print_table

SUMMED = frozenset({"total", "total_in_app", "process_overhead"})  # totals the summaries report beside their stages


@dataclass(frozen=True)
class StageRow:
    pipeline: str
    wall_s: float
    stages_s: dict[str, float]


def format_stage_shares(rows: list[StageRow]) -> str:
    """One line per pipeline: each stage's seconds and share of wall time; ``rest`` is start-up and exit."""
    lines = []
    for row in rows:
        stages = {k: v for k, v in row.stages_s.items() if k not in SUMMED}
        rest = max(row.wall_s - sum(stages.values()), 0.0)
        cells = [f"{name} {seconds:.1f}s ({seconds / row.wall_s:.0%})" for name, seconds in {**stages, "rest": rest}.items()]
        lines.append(f"{row.pipeline}: wall {row.wall_s:.1f}s: " + ", ".join(cells))
    return "\n".join(lines)


def network_limits(model_inputs: list[str], repeats: int) -> list[Row]:
    rows = [row for name in model_inputs for row in measure(INPUTS[name], repeats)]
    print(f"\nnetwork alone (CPU: {this_cpu().describe()}):")
    print_table(rows)
    return rows


def decode_mpx_per_s(slide: Path, max_megapixels: float = 64.0, region_px: int = 1024) -> float:
    """Level-0 megapixels per second read by the app's slide reader (one thread, regions in raster
    order, at most ``max_megapixels``)."""
    from operators.wsi.slide.reader import open_slide

    handle = open_slide(slide)
    try:
        width, height = handle.size_xy
        budget = int(max_megapixels * 1e6)
        pixels, start = 0, time.perf_counter()
        for y in range(0, height, region_px):
            for x in range(0, width, region_px):
                size = (min(region_px, width - x), min(region_px, height - y))
                handle.read_region((x, y), 0, size)
                pixels += size[0] * size[1]
                if pixels >= budget:
                    return pixels / 1e6 / (time.perf_counter() - start)
        return pixels / 1e6 / (time.perf_counter() - start)
    finally:
        handle.close()
