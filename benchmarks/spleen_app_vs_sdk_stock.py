"""Benchmark: this project's spleen app against the MONAI Deploy SDK's stock pipeline, in one run.

Both pipelines get the same DICOM CT series and the same model file, and each runs end to end as a
fresh subprocess, the way users run it (``python apps/spleen_seg_app -i ... -o ... -m ...`` and
``python benchmarks/sdk_stock_spleen_app.py -i ... -o ... -m ...``). Per run it records the wall
time and the peak resident memory of that child alone (``os.wait4`` returns the rusage of the one
process waited for, so runs do not mix), reads both DICOM SEGs back with highdicom, aligns their
frames on the source slices by ReferencedSOPInstanceUID (and checks each frame's plane position
against its source slice), and computes Dice between the masks and against the phantom's truth.

Rows per input: ``ours`` (defaults), ``ours --precision fp32`` (in the runtime ``auto`` picks, and once with ``--backend torch``), ``ours --no-body-crop`` and ``sdk-stock``;
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
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.reporting import machine_info
from benchmarks.spleen_bench_inputs import INPUTS, prepare_input
from benchmarks.spleen_bench_report import Row, format_stages, format_table, summarize_input
from benchmarks.spleen_bench_runs import PIPELINES, REPO_ROOT, RunResult, run_pipeline
from benchmarks.stage_limits import StageRow, format_stage_shares, network_limits

logger = logging.getLogger("spleen_app_vs_sdk_stock")

DEFAULT_MODEL = REPO_ROOT / "model_zoo" / "spleen_ct_segmentation" / "model.ts"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "spleen_app_vs_sdk_stock"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", default="demo,large", help="comma-separated: " + ", ".join(INPUTS))
    parser.add_argument("--repeats", type=int, default=1, help="runs of each pipeline per input (median wall time reported)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="TorchScript model used by every pipeline")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="cached inputs and run outputs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--no-limits", action="store_true", help="skip the network-alone measurement (stage limits)")
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


def torch_info() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


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
    print("\nstage shares (last run of each; rest = start-up and exit):")
    last = {(r.input, r.pipeline): r for r in all_runs}
    print(format_stage_shares([StageRow(f"{i} {p}", r.wall_s, r.stages_s) for (i, p), r in last.items()]))
    limits = [] if args.no_limits else network_limits(["spleen"], repeats=3)
    for row in rows:
        if row.geometry_problems:
            print(f"geometry problems in {row.input} / {row.pipeline}: {row.geometry_problems}")
    if args.json:
        result = {
            "model": str(model),
            "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "machine": machine_info(**torch_info()),
            "inputs": {name: asdict(INPUTS[name]) for name in args.inputs.split(",")},
            "rows": [asdict(r) for r in rows],
            "runs": [asdict(r) for r in all_runs],
            "network_limits": [asdict(r) for r in limits],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float))
        logger.info("Wrote %s", args.json)
    return 0 if all(r.failed_runs == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
