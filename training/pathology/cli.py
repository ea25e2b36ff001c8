"""Command line of the pathology stages: ``python -m training.pathology {prepare,train,evaluate,export,baseline,card}``.

Multi-process training: ``torchrun --nproc_per_node N -m training.pathology train ...``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from operators.core.device import add_compute_options
from operators.models.runtime import add_backend_option
from training.pathology.settings import CamelyonLayout, PrepareSettings, TrainSettings

logger = logging.getLogger("training.pathology")


def _prepare_parser(stages) -> None:
    prepare = stages.add_parser("prepare", allow_abbrev=False, help="tumor/tissue masks, patch candidates, split, held-out patches")
    prepare.add_argument("--data", type=Path, required=True, help="root of a Camelyon16-layout dataset")
    prepare.add_argument("--out", type=Path, required=True, help="prep folder to write")
    prepare.add_argument("--tumor-dir", type=Path, help="default DATA/training/tumor")
    prepare.add_argument("--normal-dir", type=Path, help="default DATA/training/normal")
    prepare.add_argument("--annotations-dir", type=Path, help="default DATA/training/lesion_annotations")
    prepare.add_argument("--test-images-dir", type=Path, help="default DATA/testing/images")
    prepare.add_argument("--test-reference-dir", type=Path, help="ground truth of the test slides, default DATA/testing/reference")
    prepare.add_argument("--test-reference-csv", type=Path, help="image,type rows, default DATA/testing/reference.csv")
    prepare.add_argument("--label-level", type=int, default=PrepareSettings.label_level, help="tumor mask level of the labels")
    prepare.add_argument("--mask-level", type=int, default=PrepareSettings.mask_level, help="level of the mask PNGs")
    prepare.add_argument("--val-fraction", type=float, default=PrepareSettings.val_fraction, help="slides held out per class")
    prepare.add_argument("--heldout-per-class", type=int, default=PrepareSettings.heldout_patches_per_class)
    prepare.add_argument("--seed", type=int, default=PrepareSettings.seed)


def _train_parser(stages) -> None:
    train = stages.add_parser("train", allow_abbrev=False, help="train into a run folder (resumes if present)")
    train.add_argument("--prep", type=Path, required=True, help="prep folder written by prepare")
    train.add_argument("--run-dir", type=Path, required=True)
    train.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    train.add_argument("--steps-per-epoch", type=int, default=TrainSettings.steps_per_epoch)
    train.add_argument("--batch-size", type=int, default=TrainSettings.batch_size, help="patches per step and process")
    train.add_argument("--lr", type=float, help="Novograd learning rate (default: the config's 1e-3)")
    train.add_argument("--lr-schedule", choices=("cosine", "constant"), default=TrainSettings.lr_schedule)
    train.add_argument("--tumor-probability", type=float, default=TrainSettings.tumor_probability)
    train.add_argument("--position-jitter-px", type=int, help="default: the config's 8")
    train.add_argument("--no-augmentation", action="store_true", help="no orientation or colour jitter")
    train.add_argument("--heldout-limit", type=int, default=TrainSettings.heldout_limit, help="held-out patches scored per epoch")
    train.add_argument("--workers", type=int, default=TrainSettings.workers, help="DataLoader processes reading patches")
    train.add_argument("--seed", type=int, default=TrainSettings.seed)
    train.add_argument(
        "--hard-negatives-from", type=Path, help="second pass: the first model (checkpoint or model.pt) whose false positives to mine"
    )
    train.add_argument(
        "--hard-negative-fraction", type=float, default=TrainSettings.hard_negative_fraction, help="share of normal draws that are hard"
    )
    train.add_argument(
        "--hard-negative-threshold",
        type=float,
        default=TrainSettings.hard_negative_threshold,
        help="first-model tumor probability from which a normal candidate is a hard negative",
    )
    train.add_argument(
        "--hard-negative-max-candidates",
        type=int,
        default=TrainSettings.hard_negative_max_candidates,
        help="normal candidates the first model scores",
    )
    train.add_argument("--init-from", type=Path, help="initial weights (checkpoint or model.pt) instead of random ones")
    add_compute_options(train)


def _evaluate_parser(stages) -> None:
    evaluate = stages.add_parser("evaluate", allow_abbrev=False, help="the app's inference on the test slides; FROC, AUC, patch accuracy")
    evaluate.add_argument("--prep", type=Path, required=True, help="prep folder (test slides, held-out patches)")
    evaluate.add_argument("--model", type=Path, required=True, help="checkpoint (RUN/checkpoints/best.pt) or exported model.pt")
    evaluate.add_argument("--out", type=Path, required=True, help="folder for detections, maps and metrics.json")
    evaluate.add_argument("--ground-truth", type=Path, help="test ground truth folder (default: the prepared layout's)")
    evaluate.add_argument("--mode", choices=("dense", "patch"), help="default: the config's")
    evaluate.add_argument("--tta", action="store_true")
    evaluate.add_argument("--nms-threshold", type=float)
    evaluate.add_argument("--nms-radius-um", type=float)
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--workers", type=int, default=2, help="region-decoding threads")
    add_compute_options(evaluate)
    add_backend_option(evaluate)
    evaluate.add_argument("--max-slides", type=int)
    evaluate.add_argument("--heldout-limit", type=int)
    evaluate.add_argument("--n-bootstrap", type=int, default=2000)
    evaluate.add_argument("--seed", type=int, default=0)


def _export_parser(stages) -> None:
    export = stages.add_parser("export", allow_abbrev=False, help="model.pt (bundle key layout) and metadata.json for the app")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--out", type=Path, help="folder (default: model_zoo/pathology_tumor_detection)")
    export.add_argument("--metrics", type=Path, help="evaluate's metrics.json, copied into the model card")
    export.add_argument("--version", default="0.1.0", help="model card version")
    export.add_argument("--float16", action="store_true", help="store the weights as float16 (half the file size)")


def _baseline_parser(stages) -> None:
    baseline = stages.add_parser("baseline", allow_abbrev=False, help="a colour-threshold detector on the test slides, scored as evaluate")
    baseline.add_argument("--prep", type=Path, required=True, help="prep folder (test slides)")
    baseline.add_argument("--out", type=Path, required=True, help="folder for detections, metrics.json and report/")
    baseline.add_argument("--ground-truth", type=Path, help="test ground truth folder (default: the prepared layout's)")
    baseline.add_argument("--max-slides", type=int)


def _card_parser(stages) -> None:
    card = stages.add_parser("card", allow_abbrev=False, help="add a benchmarks/camelyon_hard.py result to the model card")
    card.add_argument("--benchmark", type=Path, required=True, help="WORK/results.json of benchmarks/camelyon_hard.py")
    card.add_argument("--card", type=Path, help="metadata.json (default: the model zoo's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.pathology",
        allow_abbrev=False,
        description="Train the pathology tumor detection model on Camelyon16-layout data.",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    stages = parser.add_subparsers(dest="stage", required=True)
    for add in (_prepare_parser, _train_parser, _evaluate_parser, _export_parser, _baseline_parser, _card_parser):
        add(stages)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.stage == "prepare":
        from training.pathology.prepare import prepare

        layout = CamelyonLayout.from_root(
            args.data,
            tumor_dir=args.tumor_dir,
            normal_dir=args.normal_dir,
            annotations_dir=args.annotations_dir,
            test_images_dir=args.test_images_dir,
            test_reference_dir=args.test_reference_dir,
            test_reference_csv=args.test_reference_csv,
        )
        prepare(
            PrepareSettings(
                layout,
                args.out,
                label_level=args.label_level,
                mask_level=args.mask_level,
                val_fraction=args.val_fraction,
                heldout_patches_per_class=args.heldout_per_class,
                seed=args.seed,
            )
        )
    elif args.stage == "train":
        from training.pathology.train import train

        result = train(
            TrainSettings(
                prep_dir=args.prep,
                run_dir=args.run_dir,
                epochs=args.epochs,
                steps_per_epoch=args.steps_per_epoch,
                batch_size=args.batch_size,
                learning_rate=args.lr,
                lr_schedule=args.lr_schedule,
                tumor_probability=args.tumor_probability,
                position_jitter_px=args.position_jitter_px,
                augment=not args.no_augmentation,
                heldout_limit=args.heldout_limit,
                workers=args.workers,
                seed=args.seed,
                precision=args.precision,
                device=args.device,
                hard_negatives_from=args.hard_negatives_from,
                hard_negative_fraction=args.hard_negative_fraction,
                hard_negative_threshold=args.hard_negative_threshold,
                hard_negative_max_candidates=args.hard_negative_max_candidates,
                init_from=args.init_from,
            )
        )
        logger.info("done: %d epochs, best held-out accuracy %s at epoch %s", result.epochs_done, result.best_score, result.best_epoch)
    elif args.stage == "evaluate":
        from training.pathology.evaluate import EvaluateSettings, evaluate

        evaluate(
            EvaluateSettings(
                prep_dir=args.prep,
                model_path=args.model,
                out_dir=args.out,
                ground_truth_dir=args.ground_truth,
                mode=args.mode,
                tta=args.tta,
                nms_threshold=args.nms_threshold,
                nms_radius_um=args.nms_radius_um,
                batch_size=args.batch_size,
                workers=args.workers,
                precision=args.precision,
                device=args.device,
                backend=args.backend,
                max_slides=args.max_slides,
                heldout_limit=args.heldout_limit,
                n_bootstrap=args.n_bootstrap,
                seed=args.seed,
            )
        )
    elif args.stage == "export":
        from training.pathology.export import export

        export(args.checkpoint, args.out, args.metrics, args.version, float16=args.float16)
    elif args.stage == "card":
        from training.pathology.export import add_benchmark_to_card

        add_benchmark_to_card(args.benchmark, args.card)
    elif args.stage == "baseline":
        from training.pathology.baseline import BaselineSettings, run_baseline

        run_baseline(BaselineSettings(prep_dir=args.prep, out_dir=args.out, ground_truth_dir=args.ground_truth, max_slides=args.max_slides))
    return 0
