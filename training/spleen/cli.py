"""Command line of the spleen training stages: ``python -m training.spleen {prepare,train,evaluate,export}``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from operators.core.device import add_compute_options
from training.spleen.settings import CACHE_DEVICES, LR_SCHEDULES, OPTIMIZERS, TrainSettings

logger = logging.getLogger("training.spleen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.spleen", allow_abbrev=False, description="Train the spleen CT segmentation model on synthetic phantoms."
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    stages = parser.add_subparsers(dest="stage", required=True)

    prepare = stages.add_parser("prepare", allow_abbrev=False, help="write a synthetic MSD Task09-layout dataset")
    prepare.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    prepare.add_argument("--cases", type=int, default=41, help="number of phantoms (default 41, as MSD Task09)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="fixed volume shape (default: random per case)")
    prepare.add_argument(
        "--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="fixed voxel spacing in mm (default: random per case)"
    )
    prepare.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes writing cases in parallel (the files do not depend on it)",
    )

    train = stages.add_parser("train", allow_abbrev=False, help="train into a run folder (resumes if present)")
    train.add_argument("--data", type=Path, required=True, help="MSD-layout dataset folder")
    train.add_argument("--run-dir", type=Path, required=True, help="run folder (created, or resumed)")
    train.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=TrainSettings.optimizer)
    train.add_argument("--lr", type=float, help="learning rate (default: the config's for the optimizer)")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=TrainSettings.lr_schedule)
    train.add_argument(
        "--crop-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="training crop in voxels (default: the config's 96 96 96)"
    )
    train.add_argument("--num-samples", type=int, help="crops per volume (default: the config's)")
    train.add_argument("--batch-size", type=int, default=TrainSettings.batch_size, help="volumes per step")
    train.add_argument("--val-cases", type=int, help="last N cases validate (default: the config's 9)")
    train.add_argument("--train-cases", type=int, help="use only the first N training cases")
    train.add_argument("--val-interval", type=int, default=TrainSettings.val_interval, help="epochs")
    train.add_argument("--val-overlap", type=float, help="sliding-window overlap while training")
    train.add_argument("--seed", type=int, default=TrainSettings.seed)
    add_compute_options(train)
    train.add_argument("--no-intensity-augmentation", action="store_true")
    train.add_argument("--cache-workers", type=int, default=TrainSettings.cache_workers)
    train.add_argument(
        "--cache-device",
        choices=CACHE_DEVICES,
        default=TrainSettings.cache_device,
        help="keep the cached training volumes in host memory (cpu) or on the training device",
    )
    train.add_argument("--init-weights", type=Path, help="start from these weights (a checkpoint or state dict): fine-tuning")

    evaluate = stages.add_parser("evaluate", allow_abbrev=False, help="sliding-window Dice per case and mean")
    evaluate.add_argument("--data", type=Path, required=True, help="MSD-layout dataset folder")
    evaluate.add_argument("--model", type=Path, required=True, help="model.ts or a checkpoint .pt")
    evaluate.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    evaluate.add_argument("--last", type=int, help="only the last N cases (default: all)")
    evaluate.add_argument("--overlap", type=float, help="sliding-window overlap (default: the config's)")
    add_compute_options(evaluate)

    export = stages.add_parser("export", allow_abbrev=False, help="TorchScript with the model card embedded")
    export.add_argument("--checkpoint", type=Path, required=True, help="checkpoint .pt (e.g. RUN/checkpoints/best.pt)")
    export.add_argument("--out", type=Path, help="output prefix (default: model_zoo/spleen_ct_segmentation/model)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.stage == "prepare":
        from training.spleen.prepare import prepare

        prepare(args.out, args.cases, args.seed, args.shape, args.spacing, workers=args.workers)
    elif args.stage == "train":
        from training.spleen.train import train

        result = train(
            TrainSettings(
                data_dir=args.data,
                run_dir=args.run_dir,
                epochs=args.epochs,
                optimizer=args.optimizer,
                learning_rate=args.lr,
                lr_schedule=args.lr_schedule,
                crop_size=tuple(args.crop_size) if args.crop_size else None,
                num_samples=args.num_samples,
                batch_size=args.batch_size,
                val_cases=args.val_cases,
                train_cases=args.train_cases,
                val_interval=args.val_interval,
                val_overlap=args.val_overlap,
                seed=args.seed,
                precision=args.precision,
                device=args.device,
                intensity_augmentation=not args.no_intensity_augmentation,
                cache_workers=args.cache_workers,
                cache_device=args.cache_device,
                init_weights=args.init_weights,
            )
        )
        logger.info("done: %d epochs, best validation Dice %s at epoch %s", result.epochs_done, result.best_score, result.best_epoch)
    elif args.stage == "evaluate":
        from training.spleen.evaluate import evaluate

        evaluate(args.data, args.model, args.out, last_n=args.last, overlap=args.overlap, precision=args.precision, device=args.device)
    elif args.stage == "export":
        from training.spleen.export import export

        export(args.checkpoint, args.out)
    return 0
