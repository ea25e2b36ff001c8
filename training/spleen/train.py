"""Stage ``train``: the bundle's UNet on an MSD-layout dataset, into a self-describing run folder.

The run folder holds ``config.json`` (resolved settings and the model config), ``environment.json``
(git commit, package versions, device and precision of each session), ``split.json``,
``metrics.json`` (per-epoch loss, validation Dice, timing, best), ``train.log`` and
``checkpoints/{last,best}.pt``. Calling ``train`` again on the same folder resumes from
``last.pt``; the random crops of each epoch are seeded by (seed, epoch), so a resumed run draws the
same crops as an uninterrupted one.

Under torchrun each process trains on its share of the training cases (equal shares, so every rank
takes the same number of steps) with DDP (NCCL on GPUs, gloo on CPUs) and its own random crops
(seeded by seed, epoch and rank); rank 0 validates and writes the run folder, and ``metrics.json``
records the weights' SHA-256 on every rank at the end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.optimizers import Novograd
from monai.transforms import Compose
from monai.utils import set_determinism
from torch.nn.parallel import DistributedDataParallel

from operators.core.metrics import dice_score
from operators.ct.inference import SlidingWindowSettings, foreground_probability
from operators.models.config import load_model_config
from operators.models.loader import load_state_dict
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
from training.provenance import check_resumable, record_session, save_torch, write_json
from training.spleen import data
from training.spleen.engine import Precision, build_network, choose_precision
from training.spleen.settings import RESUMABLE_CHANGES, TrainSettings, resolve
from training.steps import finite_step

logger = logging.getLogger(__name__)
RANK_SEED_STRIDE = 7919  # keeps the crop seeds of different ranks apart


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_val_dice: float | None
    best_epoch: int | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    epochs_done: int
    weights_sha256_per_rank: list[str]


@dataclass
class _State:
    epoch: int = 0
    history: list[dict[str, Any]] | None = None
    best_val_dice: float | None = None
    best_epoch: int | None = None


def train(settings: TrainSettings) -> TrainResult:
    run_dir = Path(settings.run_dir)
    with training_process(run_dir, settings.device) as ctx:
        return _train(settings, run_dir, ctx)


def _train(settings: TrainSettings, run_dir: Path, ctx: Distributed) -> TrainResult:
    model_config = load_model_config(settings.model_name)
    config = resolve(settings, model_config)
    check_resumable(run_dir / "config.json", config, RESUMABLE_CHANGES)  # every rank, so that all of them stop
    set_determinism(seed=settings.seed)
    device = ctx.device
    precision = choose_precision(device, settings.amp)
    split = data.split_datalist(data.load_datalist(settings.data_dir), config["val_cases"], settings.train_cases)
    if ctx.is_main:
        write_json(run_dir / "config.json", config)
        record_session(run_dir / "environment.json", device, precision.name)
        write_json(run_dir / "split.json", split.as_json())
    barrier(ctx)
    share = len(split.train) // ctx.world_size
    if share == 0:
        raise ValueError(f"{len(split.train)} training cases cannot be shared by {ctx.world_size} processes")
    train_items = split.train[ctx.rank :: ctx.world_size][:share]
    logger.info(
        "run %s: %d train / %d val cases (%d on rank %d of %d), device %s, precision %s, crop %s x%d",
        run_dir,
        len(split.train),
        len(split.val),
        len(train_items),
        ctx.rank,
        ctx.world_size,
        device,
        precision.name,
        config["crop_size"],
        config["num_samples"],
    )

    net = build_network(model_config).to(device)
    model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if ctx.active else net
    optimizer = _optimizer(config, net)
    scheduler = _scheduler(config, optimizer)
    scaler = precision.grad_scaler()
    state = _State(history=[])
    last_path, best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    if last_path.is_file():
        state = _load_checkpoint(last_path, net, optimizer, scheduler, device)
        logger.info("resumed from %s at epoch %d", last_path, state.epoch)
    elif settings.init_weights is not None:
        net.load_state_dict(load_state_dict(Path(settings.init_weights)))
        logger.info("fine-tuning from the weights in %s", settings.init_weights)
    if state.epoch >= settings.epochs:
        logger.info("nothing to do: %d of %d epochs done", state.epoch, settings.epochs)
        return _result(run_dir, state, last_path, best_path, [weights_sha256(net)])

    preprocessing = model_config["preprocessing"]
    random_part = data.random_transforms(
        config["crop_size"], config["num_samples"], config["pos"], config["neg"], settings.intensity_augmentation
    )
    # flat, so that CacheDataset caches everything up to the first random transform (a nested Compose
    # counts as random); the random transforms are the objects of ``random_part``, reseeded every epoch
    # the training cache may live on the device (read every step); validation's stays on the CPU, as
    # its sliding window moves each body region to the device itself
    cache_device = device if settings.cache_device == "device" else None
    cached_part = data.deterministic_transforms(preprocessing, pad_to=config["crop_size"], with_indices=True, device=cache_device)
    train_transforms = Compose([*cached_part.transforms, *random_part.transforms])
    started = time.monotonic()
    # copy_cache=False: the random transforms make new crops and never modify the cached volumes
    train_ds = CacheDataset(
        train_items, transform=train_transforms, cache_rate=1.0, copy_cache=False, num_workers=settings.cache_workers, progress=False
    )
    val_ds = CacheDataset(
        split.val if ctx.is_main else [],
        transform=data.deterministic_transforms(preprocessing),
        cache_rate=1.0,
        num_workers=settings.cache_workers,
        progress=False,
    )
    logger.info(
        "cached %d + %d cases in %.0f s (training cases in %s memory)",
        len(train_ds),
        len(val_ds),
        time.monotonic() - started,
        (cache_device or torch.device("cpu")).type,
    )

    # as the model-zoo bundle: Dice over the whole batch, so crops without spleen still steer it
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True)
    for epoch in range(state.epoch, settings.epochs):
        epoch_started = time.monotonic()
        epoch_seed = settings.seed * 1000 + epoch + RANK_SEED_STRIDE * ctx.rank  # rank 0: as a single process
        random_part.set_random_state(seed=epoch_seed)
        loader = DataLoader(
            train_ds, batch_size=settings.batch_size, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(epoch_seed)
        )
        model.train()
        losses = []
        skipped = 0
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                logits = model(batch["image"].to(device))
            loss = loss_fn(logits.float(), batch["label"].to(device))
            # a rank with a non-finite loss would not join the gradient all-reduce: all ranks skip together
            if not all_true(ctx, bool(torch.isfinite(loss))) or not finite_step(loss, model, optimizer, scaler):
                skipped += 1
                continue
            losses.append(float(loss.detach()))
        scheduler.step()
        broadcast_buffers(ctx, net)  # DDP keeps the weights equal, not the batch-norm statistics
        if skipped:
            logger.warning("epoch %d: skipped %d step(s) with a non-finite loss or gradient", epoch + 1, skipped)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": mean_over_ranks(ctx, sum(losses) / len(losses) if losses else float("nan")),
            "steps": len(losses),
            "skipped_steps": skipped,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(time.monotonic() - epoch_started, 2),
        }
        validate = (epoch + 1) % settings.val_interval == 0 or epoch + 1 == settings.epochs
        if validate and ctx.is_main:
            record.update(_validate(net, val_ds, model_config["inference"], precision, config["val_overlap"]))
            if state.best_val_dice is None or record["val_dice"] > state.best_val_dice:
                state.best_val_dice, state.best_epoch = record["val_dice"], epoch + 1
                _save_checkpoint(best_path, net, optimizer, scheduler, state, epoch + 1)
        state.epoch = epoch + 1
        state.history.append(record)
        if ctx.is_main:
            _save_checkpoint(last_path, net, optimizer, scheduler, state, epoch + 1)
            _write_metrics(run_dir / "metrics.json", state)
        barrier(ctx)
        logger.info(
            "epoch %d/%d %s",
            epoch + 1,
            settings.epochs,
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k not in ("epoch", "val_per_case")
            ),
        )
    digests = gather_objects(ctx, weights_sha256(net))
    if ctx.is_main:
        _write_metrics(run_dir / "metrics.json", state, digests)
    return _result(run_dir, state, last_path, best_path, digests)


def _validate(
    net: torch.nn.Module, val_ds: CacheDataset, inference: dict[str, Any], precision: Precision, overlap: float
) -> dict[str, Any]:
    started = time.monotonic()
    net.eval()
    per_case = {}
    settings = SlidingWindowSettings.from_config(inference, overlap=overlap)
    for item in val_ds:
        probability = foreground_probability(item["image"], net, settings, precision.compute_device())
        per_case[Path(item["image"].meta["filename_or_obj"]).name] = dice_score(
            (probability > 0.5).numpy(), item["label"].as_tensor().cpu().numpy()
        )
    net.train()
    mean = sum(per_case.values()) / len(per_case)
    return {"val_dice": mean, "val_seconds": round(time.monotonic() - started, 2), "val_per_case": per_case}


def _optimizer(config: dict[str, Any], net: torch.nn.Module) -> torch.optim.Optimizer:
    if config["optimizer"] == "novograd":
        return Novograd(net.parameters(), lr=config["learning_rate"])
    return torch.optim.Adam(net.parameters(), lr=config["learning_rate"])


def _scheduler(config: dict[str, Any], optimizer: torch.optim.Optimizer):
    if config["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"], eta_min=config["learning_rate"] * 0.01)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _save_checkpoint(path: Path, net, optimizer, scheduler, state: _State, epoch: int) -> None:
    save_torch(
        path,
        {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "history": state.history,
            "best_val_dice": state.best_val_dice,
            "best_epoch": state.best_epoch,
        },
    )


def _load_checkpoint(path: Path, net, optimizer, scheduler, device: torch.device) -> _State:
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    net.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    return _State(
        epoch=checkpoint["epoch"],
        history=list(checkpoint["history"]),
        best_val_dice=checkpoint["best_val_dice"],
        best_epoch=checkpoint["best_epoch"],
    )


def _write_metrics(path: Path, state: _State, weights_sha256_per_rank: list[str] | None = None) -> None:
    write_json(
        path,
        {
            "best_val_dice": state.best_val_dice,
            "best_epoch": state.best_epoch,
            "epochs_done": state.epoch,
            "weights_sha256_per_rank": weights_sha256_per_rank,
            "train_seconds": round(sum(r["train_seconds"] + r.get("val_seconds", 0.0) for r in state.history), 1),
            "epochs": state.history,
        },
    )


def _result(run_dir: Path, state: _State, last_path: Path, best_path: Path, digests: list[str]) -> TrainResult:
    return TrainResult(
        run_dir=run_dir,
        best_val_dice=state.best_val_dice,
        best_epoch=state.best_epoch,
        last_checkpoint=last_path,
        best_checkpoint=best_path if best_path.is_file() else None,
        epochs_done=state.epoch,
        weights_sha256_per_rank=digests,
    )
