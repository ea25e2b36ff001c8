"""Stage ``train``: the app's ResNet18 patch classifier, class-balanced patches read on the fly.

One process, or one per device under torchrun (DDP: NCCL on GPUs, gloo on CPUs). Each epoch draws
``steps_per_epoch * batch_size`` patches per rank (:func:`training.pathology.sampling.draw_balanced`,
seed key ``(seed, epoch, rank)``), read and augmented in DataLoader worker processes, scaled to
-1..1 by the app's own :func:`operators.wsi.inference.to_network_input`. BCEWithLogitsLoss, Novograd,
cosine decay per step, mixed precision where it pays (:mod:`operators.core.device`). The loop itself
is :mod:`training.loop`.

The run folder (rank 0 writes it): ``config.json`` (resolved settings, the resolved device and
precision, the model config), ``environment.json`` (git commit, packages, device and precision of
each session), ``split.json`` (the prep folder's), ``metrics.json`` (per epoch: loss, step losses,
lr, patches/s, held-out accuracy and loss; the held-out scores before training; the weights' SHA-256
on every rank), ``train.log`` and ``checkpoints/{last,best}.pt``. Training again into the same folder
resumes from ``last.pt``; a resumed run draws the patches an uninterrupted one would.

A second pass (Wang et al. 2016), ``hard_negatives_from`` a first model: before the first epoch rank 0
scores the training slides' normal candidates with it and writes the hard negatives, its false
positives, as ``RUN/hard_negatives.npz`` and their summary as ``RUN/hard_negatives.json``
(:mod:`training.pathology.hard_negatives`; the other ranks wait, then read the file, as a resumed run
does instead of mining again); ``hard_negative_fraction`` of the normal draws come from them.
``init_from`` starts from given weights (a checkpoint or model.pt, e.g. the first model's: fine-tuning)
instead of random ones (retraining from scratch, as Wang et al. did); ``metrics.json`` records both
under ``hard_negatives`` and ``init_from``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.optimizers import Novograd

from operators.core.device import ComputeDevice, compute_on
from operators.models.config import load_model_config
from operators.models.loader import load_model
from operators.models.networks import build_patch_classifier
from operators.wsi.inference import to_network_input
from training.distributed import Distributed, all_true, training_process, weights_sha256
from training.loop import Evaluation, LoopSettings, Optimisation, TrainResult, open_run, resume, run_epochs
from training.pathology.augment import ColorJitter
from training.pathology.candidates import TrainingSlides, load_pools, read_split
from training.pathology.dataset import PatchDataset, SlidePatches
from training.pathology.hard_negatives import HardNegatives, hard_negatives_paths, mine_hard_negatives, read_hard_negatives, read_summary
from training.pathology.heldout import heldout_accuracy
from training.pathology.sampling import draw_balanced
from training.pathology.settings import RESUMABLE_CHANGES, TrainSettings, resolve_train

logger = logging.getLogger(__name__)

LOG_EVERY_STEPS = 10
SCORE = "heldout_accuracy"


def cosine_lr(step: int, total_steps: int, base_lr: float, floor_fraction: float = 0.01) -> float:
    """Learning rate at ``step`` of a cosine decay from ``base_lr`` to ``floor_fraction * base_lr``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return base_lr * (floor_fraction + (1 - floor_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def patch_loss(model: torch.nn.Module, images_nhwc: torch.Tensor, labels: torch.Tensor, compute: ComputeDevice) -> torch.Tensor:
    """BCEWithLogitsLoss of uint8 (N, H, W, 3) patches scaled as the app scales them, under the run's autocast."""
    with compute.autocast():
        logits = model(to_network_input(images_nhwc, compute)).reshape(-1)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(compute.device).float())


@dataclass(frozen=True)
class PathologyEpochs:
    """What the training loop asks of the pathology pipeline (:class:`training.loop.Pipeline`)."""

    slides: TrainingSlides
    patches: SlidePatches
    settings: TrainSettings
    config: dict[str, Any]
    compute: ComputeDevice
    rank: int
    heldout: dict[str, Any]  # the arguments of heldout_accuracy but the network
    hard_normal: tuple[np.ndarray, ...] | None = None  # per slide of ``slides``: hard negatives, (n, 2) level-0 (x, y)

    def batches(self, epoch: int) -> torch.utils.data.DataLoader:
        settings, config = self.settings, self.config
        key = (settings.seed, epoch, self.rank)
        draws = draw_balanced(
            self.slides.pools,
            settings.steps_per_epoch * settings.batch_size,
            key,
            settings.tumor_probability,
            self.hard_normal,
            settings.hard_negative_fraction,
        )
        jitter = ColorJitter(**config["color_jitter"]) if settings.augment else None
        dataset = PatchDataset(self.patches, draws, key, config["position_jitter_px"], jitter, settings.augment)
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=settings.batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=settings.workers,
            pin_memory=self.compute.device.type == "cuda",
        )

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        return patch_loss(model, images, labels, self.compute)

    def evaluate(self, net: torch.nn.Module, epochs_done: int) -> Evaluation:
        heldout = heldout_accuracy(net, **self.heldout)
        logger.info("after epoch %d: held-out %s", epochs_done, brief(heldout))
        return Evaluation({"heldout": heldout}, heldout["accuracy"])


def train(settings: TrainSettings) -> TrainResult:
    run_dir = Path(settings.run_dir)
    with training_process(run_dir, settings.device) as ctx:
        return _train(settings, ctx, run_dir)


def _train(settings: TrainSettings, ctx: Distributed, run_dir: Path) -> TrainResult:
    model_config = load_model_config(settings.model_name)
    compute = compute_on(ctx.device, settings.precision)
    resolved = resolve_train(settings, model_config, ctx.world_size)
    config = open_run(ctx, run_dir, resolved, RESUMABLE_CHANGES, compute, read_split(settings.prep_dir), world_size=ctx.world_size)
    slides = load_pools(settings.prep_dir, "train")
    preprocessing = model_config["preprocessing"]
    patches = SlidePatches(slides.slide_paths, preprocessing["model_mpp"], config["patch_px"])
    hard = None if settings.hard_negatives_from is None else _hard_negatives(ctx, settings, run_dir, slides, compute)

    torch.manual_seed(settings.seed)
    net = build_patch_classifier(model_config["network"]).to(ctx.device)
    parts = Optimisation(net, Novograd(net.parameters(), lr=config["learning_rate"]), compute.grad_scaler())
    state = resume(run_dir, parts, ctx.device, SCORE)
    if settings.init_from is not None and state.epoch == 0:
        state.extras["init_from"] = load_initial_weights(net, Path(settings.init_from), model_config, ctx.device)
    if hard is not None:
        state.extras["hard_negatives"] = {"file": hard_negatives_paths(run_dir)[0].name, **_brief_summary(run_dir)}
    heldout = dict(
        prep_dir=Path(settings.prep_dir),
        model_mpp=preprocessing["model_mpp"],
        patch_px=config["patch_px"],
        compute=compute,
        limit=settings.heldout_limit,
        batch_size=settings.batch_size,
        workers=settings.workers,
    )
    if ctx.is_main and state.epoch == 0 and state.extras.get("initial_heldout") is None:
        state.extras["initial_heldout"] = heldout_accuracy(net, **heldout)
        logger.info("before training: held-out %s", brief(state.extras["initial_heldout"]))
    logger.info(
        "run %s: %d slides (%d with tumor), %d process(es) on %s, %d x %d steps of %d patches",
        run_dir,
        len(slides.slide_paths),
        len(slides.pools.slides_with(1)),
        ctx.world_size,
        compute.describe(),
        settings.epochs,
        settings.steps_per_epoch,
        settings.batch_size,
    )
    lr_at = None
    if settings.lr_schedule == "cosine":
        total_steps = settings.epochs * settings.steps_per_epoch
        lr_at = functools.partial(_step_lr, settings.steps_per_epoch, total_steps, config["learning_rate"])
    loop = LoopSettings(settings.epochs, SCORE, settings.batch_size * ctx.world_size, "patches", lr_at, LOG_EVERY_STEPS)
    epochs = PathologyEpochs(slides, patches, settings, config, compute, ctx.rank, heldout, None if hard is None else hard.xy_level0)
    return run_epochs(ctx, run_dir, parts, epochs, state, loop)


def _hard_negatives(
    ctx: Distributed, settings: TrainSettings, run_dir: Path, slides: TrainingSlides, compute: ComputeDevice
) -> HardNegatives:
    """The run's hard negatives: mined by rank 0 into ``RUN/hard_negatives.*`` unless a previous session
    did, then read by every rank (a failure on rank 0 stops all of them)."""
    npz_path, _ = hard_negatives_paths(run_dir)
    mined, failure = False, None
    if ctx.is_main and not npz_path.is_file():
        try:
            mine_hard_negatives(
                Path(settings.hard_negatives_from),
                settings.prep_dir,
                run_dir,
                compute,
                threshold=settings.hard_negative_threshold,
                max_candidates=settings.hard_negative_max_candidates,
                seed=settings.seed,
                batch_size=settings.batch_size,
                workers=settings.workers,
                model_name=settings.model_name,
            )
            mined = True
        except Exception as error:  # noqa: BLE001 -- raised below, once the other ranks know to stop
            failure = error
    if not all_true(ctx, failure is None):
        raise failure or RuntimeError(f"rank 0 could not mine the hard negatives into {npz_path}: see its log")
    hard = read_hard_negatives(run_dir, slides.pools.slides)
    logger.info(
        "second pass: %d hard negatives on %d slide(s) %s %s (first model %s), %.0f%% of the normal draws",
        hard.count,
        sum(1 for xy in hard.xy_level0 if len(xy)),
        "mined into" if mined else "read from",
        npz_path,
        settings.hard_negatives_from,
        100 * settings.hard_negative_fraction,
    )
    return hard


def _brief_summary(run_dir: Path) -> dict[str, Any]:
    summary = read_summary(run_dir)
    keys = ("threshold", "candidates_scored", "reaching_threshold", "kept", "rule", "seconds")
    return {"first_model_sha256": summary["first_model"]["sha256"], **{key: summary[key] for key in keys}}


def load_initial_weights(net: torch.nn.Module, path: Path, model_config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Load the weights of a checkpoint or model.pt (the app's loader) into ``net``; what they were."""
    loaded = load_model(path, lambda: build_patch_classifier(model_config["network"]), device)
    net.load_state_dict(loaded.module.state_dict())
    logger.info("initial weights from %s (SHA-256 %s)", loaded.path, loaded.sha256[:16])
    return {"path": str(path), "file": str(loaded.path), "sha256": loaded.sha256, "weights_sha256": weights_sha256(net)}


def _step_lr(steps_per_epoch: int, total_steps: int, base_lr: float, epoch: int, step: int) -> float:
    return cosine_lr(epoch * steps_per_epoch + step, total_steps, base_lr)


def brief(metrics: dict[str, Any]) -> str:
    """``metrics`` on one line, for the log."""
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if k != "threshold")
