"""Hard-negative mining measured: second passes with and without it, several seeds, on the hard Camelyon16 test set.

``python benchmarks/hard_negative_mining.py --work-dir /tmp/hnm [--first-model model_zoo/pathology_tumor_detection/model.pt]
[--seeds 0 1 2] [--epochs 8] [--steps-per-epoch 30] [--batch-size 16] [--lr 5e-4]``

For each seed, two second passes of ``training.pathology train`` on the benchmark's training split (centre A,
:mod:`training.synthetic.camelyon_hard`), both starting from the first model's weights (``--init-from``), with the
same settings, patches and seed; they differ in one thing:

- ``control-s<seed>``: normal patches drawn as in the first pass;
- ``mined-s<seed>``: half of the normal draws from the first model's false positives on the training slides
  (``--hard-negatives-from``, Wang et al. 2016).

Then :func:`benchmarks.camelyon_hard.run` evaluates the first model and every second pass on the 24 test slides (the
default runtime, and the first model under ``--runtime`` too) next to the colour-threshold baseline, and this
script adds, per seed, the paired slide-bootstrap difference mined - control, and per arm the mean and spread of the
official FROC and AUC over seeds. Written: ``WORK/results.json``, ``WORK/report.md``, ``WORK/froc_curves.png``,
the run folders ``WORK/runs/<name>`` (each with its ``metrics.json``: loss, patches/s, seconds) and the logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.camelyon_hard import REPO, RUNTIMES, default_data_dir, froc_report_of, report_markdown, run, run_stage
from training.pathology.froc_bootstrap import paired_froc_difference
from training.synthetic.camelyon_hard import HARD_BENCHMARK_SEED, ensure_hard_dataset

logger = logging.getLogger("benchmarks.hard_negative_mining")


def train_second_pass(
    work: Path, prep: Path, name: str, first_model: Path, seed: int, mined: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """One second pass into WORK/runs/<name> (resumed if there); its best checkpoint, wall time and training figures."""
    run_dir = work / "runs" / name
    cmd = ["train", "--prep", str(prep), "--run-dir", str(run_dir), "--init-from", str(first_model), "--seed", str(seed)]
    cmd += ["--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch), "--batch-size", str(args.batch_size)]
    cmd += ["--lr", str(args.lr), "--heldout-limit", "128", "--workers", "1"]
    if mined:
        cmd += ["--hard-negatives-from", str(first_model)]
    measured = run_stage(cmd, work / "logs" / f"train-{name}.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs = metrics["epochs"]
    return {
        **measured,
        "checkpoint": str(run_dir / "checkpoints" / "best.pt"),
        "patches_per_s": round(statistics.mean(e["patches_per_s"] for e in epochs), 1) if epochs and "patches_per_s" in epochs[0] else None,
        "hard_negatives": metrics.get("hard_negatives"),
        "train_seconds": metrics.get("train_seconds"),
    }


def arm_summary(runs: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    frocs = [runs[n]["froc_official"] for n in names]
    aucs = [runs[n]["auc"] for n in names if runs[n]["auc"] is not None]
    return {
        "runs": list(names),
        "froc_mean": statistics.mean(frocs),
        "froc_sd": statistics.stdev(frocs) if len(frocs) > 1 else None,
        "auc_mean": statistics.mean(aucs) if aucs else None,
        "auc_sd": statistics.stdev(aucs) if len(aucs) > 1 else None,
        "fps_mean": statistics.mean(runs[n]["n_false_positives"] for n in names),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="the benchmark's slides (default: the cache, written when missing)")
    ap.add_argument("--first-model", type=Path, default=REPO / "model_zoo/pathology_tumor_detection/model.pt")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--runtime", action="append", choices=sorted(RUNTIMES), help="default: auto, openvino-fp32")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.first_model.is_file():
        logger.error("--first-model: no file %s", args.first_model)
        return 2
    data = args.data or ensure_hard_dataset(default_data_dir(HARD_BENCHMARK_SEED))
    work = args.work_dir
    prep = work / "prep"
    if not (prep / "split.json").is_file():
        run_stage(["prepare", "--data", str(data), "--out", str(prep)], work / "logs" / "prepare.log")
    training = {}
    for seed in args.seeds:
        for arm, mined in (("control", False), ("mined", True)):
            name = f"{arm}-s{seed}"
            logger.info("training %s", name)
            training[name] = train_second_pass(work, prep, name, args.first_model, seed, mined, args)
    models = {"first": args.first_model, **{name: Path(t["checkpoint"]) for name, t in training.items()}}
    runtimes = args.runtime or ["auto", "openvino-fp32"]
    result = run(work, data, models, runtimes, baseline=True)
    runs = result["runs"]
    rt = runtimes[0]
    result["training"] = training
    result["paired_mined_minus_control"] = {
        seed: paired_froc_difference(
            froc_report_of(runs[f"control-s{seed} / {rt}"], "official"), froc_report_of(runs[f"mined-s{seed} / {rt}"], "official")
        )
        for seed in args.seeds
    }
    result["arms"] = {arm: arm_summary(runs, [f"{arm}-s{s} / {rt}" for s in args.seeds]) for arm in ("control", "mined")}
    lines = [report_markdown(result), "", "| arm | official FROC mean (sd) | AUC mean (sd) | FPs mean |", "|---|---|---|---|"]
    for arm, a in result["arms"].items():
        lines.append(
            f"| {arm} | {a['froc_mean']:.3f} ({a['froc_sd'] or 0:.3f}) | {a['auc_mean']:.3f} ({a['auc_sd'] or 0:.3f}) | {a['fps_mean']:.0f} |"
        )
    lines.append("")
    for seed, d in result["paired_mined_minus_control"].items():
        lines.append(
            f"- seed {seed}: mined - control FROC {d['difference']:+.4f} (paired 95% CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f})"
        )
    for name, t in training.items():
        lines.append(f"- {name}: trained in {t['wall_s']:.0f} s ({t['patches_per_s']} patches/s), load {t['load']}")
    text = "\n".join(lines) + "\n"
    (work / "results.json").write_text(json.dumps(result, indent=1, default=str))
    (work / "report.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
