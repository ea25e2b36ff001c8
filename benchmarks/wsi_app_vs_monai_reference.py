"""Benchmark: the WSI metastasis app (patch and dense mode) against MONAI's reference pipeline, in one run.

Same slide, same weights. Every pipeline runs as its own child process, so that its wall time,
CPU time and peak resident memory (``os.wait4`` on its pid) are its own:

- ``reference``: ``benchmarks/wsi_monai_reference.py``, the model-zoo pathology_tumor_detection
  bundle's inference (MaskedPatchWSIDataset at mask level 6, 224 patches, the bundle's transforms,
  DataLoader batch 400, SimpleInferer, sigmoid, ProbMapProducer's map at 1/64 scale), float32 on
  the CPU, network eager as the bundle runs it;
- ``patch fp32 torch``, ``patch fp32``, ``patch``, ``dense fp32``, ``dense``: ``python
  apps/wsi_metastasis_app -i SLIDE -o OUT -m MODEL --mode patch|dense [--precision fp32] [--backend
  torch] --device cpu`` as users run it (``fp32`` rows with ``--precision fp32``, in the runtime
  ``auto`` picks, and once in torch; the others with the app's defaults: the model config's runtime
  for this CPU, bf16 where the CPU has native bf16);
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
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.reporting import fmt, machine_info
from benchmarks.stage_limits import StageRow, decode_mpx_per_s, format_stage_shares, network_limits
from benchmarks.wsi_bench_inputs import SlideSpec, describe_model, make_calibrated_random_model, parse_size, prepare_slide
from benchmarks.wsi_bench_maps import compare_app_maps, compare_with_reference
from benchmarks.wsi_bench_report import format_agreement, format_speed_table, speed_rows, targets
from benchmarks.wsi_bench_runs import PIPELINES, REFERENCE, REPO_ROOT, Pipeline, RunRecord, run_pipeline

logger = logging.getLogger("wsi_app_vs_monai_reference")

TRAINED_MODEL = REPO_ROOT / "model_zoo" / "pathology_tumor_detection" / "model.pt"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "wsi_app_vs_monai_reference"
APP_MODES = ("patch-fp32-torch", "patch-fp32", "patch", "dense-fp32", "dense")
APP_MAP_PAIRS = (  # (coarse, fine)
    ("patch-fp32", "dense-fp32"),
    ("patch", "dense"),
    ("patch-fp32", "patch"),
    ("dense-fp32", "dense"),
    ("patch-fp32-torch", "patch-fp32"),
)


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
    parser.add_argument("--no-limits", action="store_true", help="skip the network-alone and decode measurements (stage limits)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is killed")
    args = parser.parse_args(argv)
    unknown = set(args.pipelines.split(",")) - {p.key for p in PIPELINES}
    if unknown:
        parser.error(f"unknown pipelines {sorted(unknown)}")
    return args


def bench_slide_spec(args: argparse.Namespace) -> SlideSpec:
    tumor_sizes = tuple(float(v) for v in args.tumor_sizes.split(",") if v.strip())
    return SlideSpec(
        f"bench_{args.slide_size[0]}x{args.slide_size[1]}_s{args.seed}", args.slide_size, args.seed, args.tissue_fraction, tumor_sizes
    )


def choose_model(given: Path | None, slide: Path, seed: int) -> tuple[Path, str]:
    """The weights every pipeline runs, and what they are: given, the trained default, or a calibrated random stand-in."""
    if given is not None:
        return given.resolve(), "given"
    if TRAINED_MODEL.is_file():
        return TRAINED_MODEL, "trained (model_zoo)"
    model = slide.parent / f"calibrated_random_seed{seed}.pt"  # in the slide's cache folder: rebuilt with the slide
    if not model.is_file():
        make_calibrated_random_model(slide, model, seed)
    return model, "random, batch-norm and head calibrated on the benchmark slide"


def compare_outputs(records: list[RunRecord], slide_stem: str) -> dict[str, dict[str, Any]]:
    """Each app map against the reference's, and the app maps against each other, of the runs that succeeded."""
    outputs = {r.pipeline: Path(r.output_dir) for r in records if r.process.returncode == 0}
    app_slide_dir = {key: path / slide_stem for key, path in outputs.items() if key != REFERENCE}
    agreement: dict[str, dict[str, Any]] = {}
    if REFERENCE in outputs:
        for key in APP_MODES:
            if key in app_slide_dir:
                agreement[f"{key} vs reference"] = compare_with_reference(outputs[REFERENCE], app_slide_dir[key])
    for coarse, fine in APP_MAP_PAIRS:
        if coarse in app_slide_dir and fine in app_slide_dir:
            agreement[f"{fine} vs {coarse}"] = compare_app_maps(app_slide_dir[coarse], app_slide_dir[fine])
    return agreement


def run_scaling(args: argparse.Namespace, model: Path, run_dir: Path, work_dir: Path) -> list[RunRecord]:
    """The app's defaults on the small slide and on the mostly empty large one, both holding the same tissue area."""
    large_area = args.large_size[0] * args.large_size[1]
    tissue_px = args.large_tissue_fraction * large_area
    small_area = args.small_size[0] * args.small_size[1]
    default_app = Pipeline("app-default", ())
    scaling = []
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
    return scaling


def print_report(result: dict[str, Any]) -> None:
    machine, slide, model = result["machine"], result["slide"], result["model"]
    print(f"\nmachine: {machine['cpus']} CPUs (bf16: {machine['cpu_bf16']}), load average at start {machine['load_average_at_start']}")
    print(
        f"slide: {slide['path']} ({slide['size_xy'][0]} x {slide['size_xy'][1]}, tissue fraction {slide['tissue_fraction']}, "
        f"tumours {slide['tumor_sizes_um']} um)"
    )
    print(f"model: {model['path']} ({model['kind']})\n")
    print("map x / wall x / CPU x: reference's seconds divided by this row's (map: tissue mask + probability map stages);")
    print("occup: dense tiles' windows on tissue / windows computed (tiles run whole)")
    print(format_speed_table(result["rows"]))
    print("\nprobability agreement on the same level-0 windows:")
    print(format_agreement(result["agreement"]))
    if result["scaling"]:
        print("\napp defaults on a mostly empty large slide vs a small slide with the same tissue:")
        print(format_speed_table(result["scaling"]))
    print("\ntargets:")
    for name, value in result["targets"].items():
        print(f"  {name}: {fmt(value['measured'], '.3g')} -> {'met' if value['met'] else 'MISSED'}")


def stage_limits(records: list[RunRecord], slide: Path) -> dict[str, Any]:
    """Stage shares of every run, the network alone in each runtime, and the slide reader's decode rate."""
    print("\nstage shares (rest = start-up and exit):")
    print(format_stage_shares([StageRow(r.pipeline, r.process.wall_s, r.stages_s) for r in records]))
    network = network_limits(["wsi-patch", "wsi-dense"], repeats=3)
    decode = decode_mpx_per_s(slide)
    print(f"\nslide decode (app reader, one thread, level 0): {decode:.1f} Mpx/s")
    return {"network": [asdict(r) for r in network], "decode_mpx_per_s": decode}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    work_dir = args.work_dir.resolve()
    run_dir = work_dir / "runs"
    machine = machine_info(load_average_at_start=os.getloadavg())
    bench = bench_slide_spec(args)
    slide = prepare_slide(bench, work_dir)
    model, model_kind = choose_model(args.model, slide, args.seed)
    logger.info("Model: %s (%s)", model, model_kind)

    wanted = set(args.pipelines.split(","))
    records = [run_pipeline(p, slide, model, run_dir, args) for p in PIPELINES if p.key in wanted]
    agreement = compare_outputs(records, slide.stem)
    scaling = [] if args.no_scaling else run_scaling(args, model, run_dir, work_dir)

    rows = speed_rows(records)
    limits = {} if args.no_limits else stage_limits(records, slide)
    result = {
        "machine": machine,
        "slide": {"path": str(slide), **asdict(bench)},
        "model": describe_model(model) | {"kind": model_kind},
        "settings": {"batch_size": args.batch_size, "workers": args.workers, "reader": args.reader},
        "rows": rows,
        "agreement": agreement,
        "scaling": speed_rows(scaling),
        "targets": targets(rows, agreement),
        "runs": [asdict(r) for r in records + scaling],
        "limits": limits,
    }
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        logger.info("Wrote %s", args.json)
    return 0 if all(r.process.returncode == 0 for r in records + scaling) else 1


if __name__ == "__main__":
    sys.exit(main())
