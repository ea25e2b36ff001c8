"""Stage ``train``: the app's ResNet18 patch classifier, class-balanced patches read on the fly.

One process, or one per device under torchrun (DDP: NCCL on GPUs, gloo on CPUs). Each epoch draws
``steps_per_epoch * batch_size`` patches per rank (:func:`training.pathology.sampling.draw_balanced`,
seed key ``(seed, epoch, rank)``), read and augmented in DataLoader worker processes, scaled to
-1..1 by the app's own :func:`operators.wsi.inference.to_network_input`. BCEWithLogitsLoss, Novograd,
cosine decay per step, mixed precision where it pays (fp16 on CUDA, bf16 on CPUs with native bf16).

The run folder (rank 0 writes it): ``config.json`` (resolved settings and model config),
``environment.json`` (git commit, packages, device of each session), ``split.json`` (the prep
folder's), ``metrics.json`` (per epoch: loss, step losses, lr, patches/s, held-out accuracy and loss;
the held-out scores before training; the weights' SHA-256 on every rank), ``train.log`` and
``checkpoints/{last,best}.pt``. Training again into the same folder resumes from ``last.pt``; a
resumed run draws the patches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.optimizers import Novograd
from torch.nn.parallel import DistributedDataParallel

from operators.core.device import ComputeDevice
from operators.models.config import load_model_config
from operators.models.networks import build_patch_classifier
from operators.wsi.inference import to_network_input
from training.distributed import (
    Distributed,
    all_true,
    barrier,
    broadcast_buffers,
    gather_objects,
    mean_over_ranks,
    training_process,
    weights_sha256,
)
from training.pathology.augment import ColorJitter
from training.pathology.candidates import load_pools, read_split
from training.pathology.dataset import PatchDataset, SlidePatches
from training.pathology.heldout import heldout_accuracy
from training.pathology.sampling import draw_balanced
from training.pathology.settings import RESUMABLE_CHANGES, TrainSettings, resolve_train
from training.provenance import check_resumable, record_session, save_torch, write_json
from training.spleen.engine import choose_precision
from training.steps import finite_step

logger = logging.getLogger(__name__)

LOG_EVERY_STEPS = 10


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_accuracy: float | None
    best_epoch: int | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    weights_sha256_per_rank: list[str]


@dataclass
class _State:
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    initial_heldout: dict[str, Any] | None = None
    best_accuracy: float | None = None
    best_epoch: int | None = None


def cosine_lr(step: int, total_steps: int, base_lr: float, floor_fraction: float = 0.01) -> float:
    """Learning rate at ``step`` of a cosine decay from ``base_lr`` to ``floor_fraction * base_lr``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return base_lr * (floor_fraction + (1 - floor_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(
    model: torch.nn.Module,
    images_nhwc: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    compute: ComputeDevice,
    ctx: Distributed | None = None,
) -> float | None:
    """One BCEWithLogitsLoss step on uint8 (N, H, W, 3) patches scaled as the app scales them; the loss, or None
    when the step was skipped (a non-finite loss on any rank, or a non-finite gradient)."""
    optimizer.zero_grad(set_to_none=True)
    with compute.autocast():
        logits = model(to_network_input(images_nhwc, compute)).reshape(-1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(compute.device).float())
    finite = bool(torch.isfinite(loss))
    if ctx is not None and not all_true(ctx, finite):
        return None
    return float(loss.detach()) if finite_step(loss, model, optimizer, scaler) else None


def train(settings: TrainSettings) -> TrainResult:
    run_dir = Path(settings.run_dir)
    with training_process(run_dir, settings.device) as ctx:
        return _train(settings, ctx, run_dir)


def _train(settings: TrainSettings, ctx: Distributed, run_dir: Path) -> TrainResult:
    model_config = load_model_config(settings.model_name)
    config = resolve_train(settings, model_config, ctx.world_size)
    check_resumable(run_dir / "config.json", config, RESUMABLE_CHANGES)  # every rank, so that all of them stop
    barrier(ctx)
    precision = choose_precision(ctx.device, settings.amp)
    compute = ComputeDevice(ctx.device, precision.dtype)
    if ctx.is_main:
        write_json(run_dir / "config.json", config)
        write_json(run_dir / "split.json", read_split(settings.prep_dir))
        record_session(run_dir / "environment.json", ctx.device, precision.name, world_size=ctx.world_size)
    slides = load_pools(settings.prep_dir, "train")
    preprocessing = model_config["preprocessing"]
    patches = SlidePatches(slides.slide_paths, preprocessing["model_mpp"], config["patch_px"])

    torch.manual_seed(settings.seed)
    net = build_patch_classifier(model_config["network"]).to(ctx.device)
    optimizer = Novograd(net.parameters(), lr=config["learning_rate"])
    scaler = precision.grad_scaler()
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    state = _load_checkpoint(last_path, net, optimizer, ctx.device) if last_path.is_file() else _State()
    if state.epoch:
        logger.info("resumed from %s at epoch %d", last_path, state.epoch)
    model = DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) if ctx.active else net
    heldout = dict(
        prep_dir=Path(settings.prep_dir),
        model_mpp=preprocessing["model_mpp"],
        patch_px=config["patch_px"],
        compute=compute,
        limit=settings.heldout_limit,
        batch_size=settings.batch_size,
        workers=settings.workers,
    )
    if ctx.is_main and state.epoch == 0 and state.initial_heldout is None:
        state.initial_heldout = heldout_accuracy(net, **heldout)
        logger.info("before training: held-out %s", _brief(state.initial_heldout))
    logger.info(
        "run %s: %d slides (%d with tumor), %d process(es) on %s, precision %s, %d x %d steps of %d patches",
        run_dir,
        len(slides.slide_paths),
        len(slides.pools.slides_with(1)),
        ctx.world_size,
        ctx.device,
        precision.name,
        settings.epochs,
        settings.steps_per_epoch,
        settings.batch_size,
    )

    jitter = ColorJitter(**config["color_jitter"]) if settings.augment else None
    total_steps = settings.epochs * settings.steps_per_epoch
    for epoch in range(state.epoch, settings.epochs):
        key = (settings.seed, epoch, ctx.rank)
        draws = draw_balanced(slides.pools, settings.steps_per_epoch * settings.batch_size, key, settings.tumor_probability)
        dataset = PatchDataset(patches, draws, key, config["position_jitter_px"], jitter, settings.augment)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=settings.batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=settings.workers,
            pin_memory=ctx.device.type == "cuda",
        )
        net.train()
        started, losses, skipped = time.monotonic(), [], 0
        for step, (images, labels) in enumerate(loader):
            lr = (
                cosine_lr(epoch * settings.steps_per_epoch + step, total_steps, config["learning_rate"])
                if (settings.lr_schedule == "cosine")
                else config["learning_rate"]
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(model, images, labels, optimizer, scaler, compute, ctx)
            if loss is None:
                skipped += 1
                continue
            losses.append(loss)
            if (step + 1) % LOG_EVERY_STEPS == 0:
                rate = (step + 1) * settings.batch_size * ctx.world_size / (time.monotonic() - started)
                logger.info(
                    "epoch %d step %d/%d loss %.4f lr %.3g, %.1f patches/s",
                    epoch + 1,
                    step + 1,
                    settings.steps_per_epoch,
                    sum(losses[-LOG_EVERY_STEPS:]) / len(losses[-LOG_EVERY_STEPS:]),
                    lr,
                    rate,
                )
        broadcast_buffers(ctx, net)
        seconds = time.monotonic() - started
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": mean_over_ranks(ctx, sum(losses) / len(losses) if losses else float("nan")),
            "steps": len(losses),
            "skipped_steps": skipped,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(seconds, 1),
            "patches_per_s": round(len(losses) * settings.batch_size * ctx.world_size / max(seconds, 1e-9), 2),
            "step_losses": [round(v, 5) for v in losses],
        }
        if ctx.is_main:
            record["heldout"] = heldout_accuracy(net, **heldout)
            state.epoch, state.history = epoch + 1, [*state.history, record]
            accuracy = record["heldout"]["accuracy"]
            if accuracy is not None and (state.best_accuracy is None or accuracy > state.best_accuracy):
                state.best_accuracy, state.best_epoch = accuracy, epoch + 1
                _save_checkpoint(best_path, net, optimizer, state)
            _save_checkpoint(last_path, net, optimizer, state)
            _write_metrics(run_dir / "metrics.json", state, None)
            logger.info(
                "epoch %d/%d: loss %.4f, %.1f patches/s, %.0f s; held-out %s",
                epoch + 1,
                settings.epochs,
                record["loss"],
                record["patches_per_s"],
                seconds,
                _brief(record["heldout"]),
            )
        state.epoch = epoch + 1
        barrier(ctx)
    digests = gather_objects(ctx, weights_sha256(net))
    if ctx.is_main:
        _write_metrics(run_dir / "metrics.json", state, digests)
    return TrainResult(
        run_dir, state.epoch, state.best_accuracy, state.best_epoch, last_path, best_path if best_path.is_file() else None, digests
    )


def _brief(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if k != "threshold")


def _save_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: _State) -> None:
    save_torch(
        path,
        {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": state.epoch,
            "history": state.history,
            "initial_heldout": state.initial_heldout,
            "best_accuracy": state.best_accuracy,
            "best_epoch": state.best_epoch,
        },
    )


def _load_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> _State:
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    net.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return _State(
        checkpoint["epoch"],
        list(checkpoint["history"]),
        checkpoint["initial_heldout"],
        checkpoint["best_accuracy"],
        checkpoint["best_epoch"],
    )


def _write_metrics(path: Path, state: _State, digests: list[str] | None) -> None:
    write_json(
        path,
        {
            "epochs_done": state.epoch,
            "best_heldout_accuracy": state.best_accuracy,
            "best_epoch": state.best_epoch,
            "train_seconds": round(sum(r["train_seconds"] for r in state.history), 1),
            "initial_heldout": state.initial_heldout,
            "weights_sha256_per_rank": digests,
            "epochs": state.history,
        },
    )
