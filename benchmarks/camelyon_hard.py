"""The hard synthetic Camelyon16 benchmark: models and runtimes on the fixed test set, next to a colour-threshold baseline.

``python benchmarks/camelyon_hard.py --work-dir /tmp/camelyon_hard [--model today=model_zoo/pathology_tumor_detection/model.pt]
[--model mined=RUN/checkpoints/best.pt ...] [--runtime auto --runtime openvino-fp32 --runtime torch-fp32] [--check]``

1. The benchmark's slides (:mod:`training.synthetic.camelyon_hard`, seed 20261207) are written once into
   ``$CLINICAL_AI_APPS_CACHE/camelyon_hard/<seed>`` (default ``~/.cache/clinical-ai-apps``) and reused
   while their generator is unchanged; ``training.pathology prepare`` runs into ``WORK/prep``.
2. The first model is evaluated (``training.pathology evaluate``, the app's own pipeline) under every
   ``--runtime``; every other model under the first runtime only. ``training.pathology baseline`` runs
   the colour-threshold detector on the same slides.
3. ``WORK/results.json`` and ``WORK/report.md``: per run, both FROCs (official and the bundle's variant),
   the sensitivity at each of the six FP rates, the slide AUC with its bootstrap interval, false
   positives, lesions found per size class, wall time, peak memory and the load; each runtime's FROC
   against the float32 runs (the check: the first runtime loses at most 0.01 FROC against each
   ``*-fp32`` runtime; ``--check`` makes a failed check exit 1); ``WORK/froc_curves.png`` overlays the
   curves.

Every run is a child process measured by :mod:`benchmarks.process_metrics`; runs are sequential.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.process_metrics import run_measured
from benchmarks.reporting import fmt, machine_info
from training.pathology.export import BASELINE_RUN
from training.pathology.froc_bootstrap import paired_froc_difference
from training.pathology.report import plot_froc_curves
from training.synthetic.camelyon_hard import HARD_BENCHMARK_SEED, ensure_hard_dataset

logger = logging.getLogger("benchmarks.camelyon_hard")

REPO = Path(__file__).resolve().parents[1]
RUNTIMES: dict[str, list[str]] = {
    "auto": [],
    "openvino-bf16": ["--backend", "openvino", "--precision", "bf16"],
    "openvino-fp32": ["--backend", "openvino", "--precision", "fp32"],
    "torch-bf16": ["--backend", "torch", "--precision", "bf16"],
    "torch-fp32": ["--backend", "torch", "--precision", "fp32"],
}
MAX_FROC_LOSS = 0.01
RUN_TIMEOUT_S = 3600.0


def default_data_dir(seed: int) -> Path:
    root = Path(os.environ.get("CLINICAL_AI_APPS_CACHE") or Path.home() / ".cache" / "clinical-ai-apps")
    return root / "camelyon_hard" / str(seed)


def parse_models(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs, in order; names must be unique and paths must exist."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model takes NAME=PATH, got {spec!r}")
        if name in models:
            raise ValueError(f"--model {name} given twice")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--model {name}: no file {path}")
        models[name] = Path(path)
    return models


def summarise(out: Path) -> dict[str, Any]:
    """What the report shows of an evaluate or baseline folder (``metrics.json``, ``report/report.json``)."""
    metrics = json.loads((out / "metrics.json").read_text())
    official, bundle, auc = metrics["froc_official"], metrics["froc_bundle"], metrics["auc"]
    return {
        "lesions_by_size_class": json.loads((out / "report" / "report.json").read_text())["lesions_by_size_class"],
        "sensitivity_at_fp_rates_bundle": bundle["sensitivity_at_fp_rates"],
        "froc_official": official["froc"],
        "froc_bundle": bundle["froc"],
        "froc_ci": [official["bootstrap"]["ci_low"], official["bootstrap"]["ci_high"]],
        "sensitivity_at_fp_rates": official["sensitivity_at_fp_rates"],
        "auc": auc.get("auc"),
        "auc_ci": [auc.get("ci_low"), auc.get("ci_high")],
        "n_lesions": official["n_lesions"],
        "n_lesions_detected": official["n_lesions_detected"],
        "n_false_positives": official["n_false_positives"],
        "n_slides": official["n_slides"],
    }


def froc_report_of(run: dict[str, Any], variant: str) -> dict[str, Any]:
    return json.loads((Path(run["out"]) / f"froc_{variant}.json").read_text())


def runtime_checks(runs: dict[str, dict[str, Any]], first_model: str, runtimes: Sequence[str]) -> list[dict[str, Any]]:
    """The first runtime's FROC (both variants) against each float32 runtime's, on the first model.

    Passes when the loss is at most 0.01; each with the paired slide-bootstrap interval of the difference.
    """
    fast = runs.get(f"{first_model} / {runtimes[0]}")
    checks = []
    for runtime in runtimes[1:]:
        ref = runs.get(f"{first_model} / {runtime}")
        if not runtime.endswith("fp32") or fast is None or ref is None:
            continue
        for variant in ("official", "bundle"):
            paired = paired_froc_difference(froc_report_of(ref, variant), froc_report_of(fast, variant))
            loss = -paired["difference"]
            checks.append(
                {
                    "variant": variant,
                    "fast": runtimes[0],
                    "reference": runtime,
                    "froc_fast": fast[f"froc_{variant}"],
                    "froc_reference": ref[f"froc_{variant}"],
                    "froc_loss": round(loss, 6),
                    "loss_interval": [round(-paired["ci_high"], 6), round(-paired["ci_low"], 6)],
                    "passed": loss <= MAX_FROC_LOSS,
                }
            )
    return checks


def model_differences(runs: dict[str, dict[str, Any]], models: Sequence[str], runtime: str) -> list[dict[str, Any]]:
    """Each model's official FROC against the first model's under ``runtime``: the paired slide-bootstrap difference."""
    first = runs[f"{models[0]} / {runtime}"]
    return [
        {
            "reference": models[0],
            "model": name,
            **paired_froc_difference(froc_report_of(first, "official"), froc_report_of(runs[f"{name} / {runtime}"], "official")),
        }
        for name in models[1:]
    ]


def report_markdown(result: dict[str, Any]) -> str:
    rates = ("0.25", "0.5", "1", "2", "4", "8")
    columns = ["run", "FROC official (95% CI)", "FROC bundle"] + [f"sens @{r}" for r in rates]
    columns += ["AUC (95% CI)", "lesions found (micro, macro)", "FPs", "wall s"]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for name, run in result["runs"].items():
        sens, ci, sizes = run["sensitivity_at_fp_rates"], run["froc_ci"], run["lesions_by_size_class"]
        found = " ".join(f"{sizes[c]['found']}/{sizes[c]['total']}" for c in ("micro", "macro") if c in sizes)
        cells = [name, f"{run['froc_official']:.3f} ({fmt(ci[0], '.3f')}-{fmt(ci[1], '.3f')})", f"{run['froc_bundle']:.3f}"]
        cells += [f"{sens[r]:.3f}" for r in rates]
        cells += [f"{fmt(run['auc'], '.3f')} ({fmt(run['auc_ci'][0], '.3f')}-{fmt(run['auc_ci'][1], '.3f')})", found]
        cells += [str(run["n_false_positives"]), f"{run['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for d in result["model_differences"]:
        lines.append(
            f"- {d['model']} - {d['reference']}: FROC {d['difference']:+.4f} (paired 95% CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f}, "
            f"above 0 in {100 * d['share_above_zero']:.0f}% of {d['n_bootstrap']} resamples)"
        )
    for c in result["checks"]:
        verdict = "passes" if c["passed"] else "FAILS"
        lines.append(
            f"- {c['fast']} vs {c['reference']}, {c['variant']} FROC: {c['froc_fast']:.4f} vs {c['froc_reference']:.4f}, "
            f"loss {c['froc_loss']:+.4f} (paired 95% CI {c['loss_interval'][0]:+.4f} to {c['loss_interval'][1]:+.4f}; limit {MAX_FROC_LOSS}): {verdict}"
        )
    return "\n".join(lines) + "\n"


def run_stage(args: list[str], log: Path) -> dict[str, Any]:
    measured = run_measured([sys.executable, "-m", "training.pathology", *args], log, RUN_TIMEOUT_S, cwd=REPO)
    if measured.returncode != 0:
        raise RuntimeError(f"training.pathology {args[0]} failed (exit {measured.returncode}); see {log}")
    return {
        "wall_s": round(measured.wall_s, 1),
        "peak_rss_mib": round(measured.peak_rss_mib),
        "load": [measured.load_before, measured.load_after],
    }


def run(work: Path, data: Path, models: dict[str, Path], runtimes: Sequence[str], baseline: bool) -> dict[str, Any]:
    prep = work / "prep"
    if not (prep / "split.json").is_file():
        run_stage(["prepare", "--data", str(data), "--out", str(prep)], work / "logs" / "prepare.log")
    runs: dict[str, dict[str, Any]] = {}
    curves = []
    plan = [(name, rt) for i, name in enumerate(models) for rt in (runtimes if i == 0 else runtimes[:1])]
    for name, runtime in plan:
        out = work / "eval" / f"{name}-{runtime}"
        label = f"{name} / {runtime}"
        logger.info("evaluating %s", label)
        cmd = ["evaluate", "--prep", str(prep), "--model", str(models[name]), "--out", str(out), *RUNTIMES[runtime]]
        measured = run_stage(cmd, work / "logs" / f"eval-{name}-{runtime}.log")
        runs[label] = {**summarise(out), **measured, "model": str(models[name]), "runtime": runtime, "out": str(out)}
        curves.append((label, json.loads((out / "froc_official.json").read_text())))
    if baseline:
        out = work / "eval" / "baseline"
        measured = run_stage(["baseline", "--prep", str(prep), "--out", str(out)], work / "logs" / "baseline.log")
        runs[BASELINE_RUN] = {**summarise(out), **measured, "out": str(out)}
        curves.append((BASELINE_RUN, json.loads((out / "froc_official.json").read_text())))
    plot_froc_curves(curves, work / "froc_curves.png")
    return {
        "machine": machine_info(load_at_start=os.getloadavg()[0]),
        "data": str(data),
        "runs": runs,
        "checks": runtime_checks(runs, next(iter(models)), runtimes),
        "model_differences": model_differences(runs, list(models), runtimes[0]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="the benchmark's slides (default: the cache, written when missing)")
    ap.add_argument("--seed", type=int, default=HARD_BENCHMARK_SEED)
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH (default: today=the committed model)")
    ap.add_argument("--runtime", action="append", choices=sorted(RUNTIMES), help="default: auto, openvino-fp32, torch-fp32")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--check", action="store_true", help="exit 1 when the first runtime loses more than 0.01 FROC against float32")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        models = parse_models(args.model or [f"today={REPO / 'model_zoo/pathology_tumor_detection/model.pt'}"])
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    runtimes = args.runtime or ["auto", "openvino-fp32", "torch-fp32"]
    data = args.data or ensure_hard_dataset(default_data_dir(args.seed), seed=args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    result = run(args.work_dir, data, models, runtimes, not args.no_baseline)
    (args.work_dir / "results.json").write_text(json.dumps(result, indent=1))
    (args.work_dir / "report.md").write_text(report_markdown(result))
    sys.stdout.write(report_markdown(result))
    failed = [c for c in result["checks"] if not c["passed"]]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
