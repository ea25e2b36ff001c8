"""Stage ``train``: the bundle's UNet on an MSD-layout dataset, into a self-describing run folder.

The run folder holds ``config.json`` (resolved settings, the resolved device and precision, the
model config), ``environment.json`` (git commit, package versions, device and precision of each
session), ``split.json``, ``metrics.json`` (per-epoch loss, validation Dice, timing, best),
``train.log`` and ``checkpoints/{last,best}.pt``. Calling ``train`` again on the same folder resumes
from ``last.pt``; the random crops of each epoch are seeded by (seed, epoch), so a resumed run draws
the same crops as an uninterrupted one.

Under torchrun each process trains on its share of the training cases (equal shares, so every rank
takes the same number of steps) with DDP (NCCL on GPUs, gloo on CPUs) and its own random crops
(seeded by seed, epoch and rank); rank 0 validates and writes the run folder, and ``metrics.json``
records the weights' SHA-256 on every rank at the end. The loop itself is :mod:`training.loop`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.optimizers import Novograd
from monai.transforms import Compose, Randomizable
from monai.utils import set_determinism

from operators.core.device import ComputeDevice, compute_on
from operators.core.metrics import dice_score
from operators.ct.inference import SlidingWindowSettings, foreground_probability
from operators.models.config import load_model_config
from operators.models.loader import load_state_dict
from training.distributed import Distributed, training_process
from training.loop import Evaluation, LoopSettings, Optimisation, TrainResult, finish, open_run, resume, run_epochs
from training.spleen import data
from training.spleen.network import build_network
from training.spleen.settings import RESUMABLE_CHANGES, TrainSettings, resolve

logger = logging.getLogger(__name__)
RANK_SEED_STRIDE = 7919  # keeps the crop seeds of different ranks apart
SCORE = "val_dice"


@dataclass(frozen=True)
class SpleenEpochs:
    """What the training loop asks of the spleen pipeline (:class:`training.loop.Pipeline`)."""

    train_ds: CacheDataset
    val_ds: CacheDataset
    random_part: Randomizable  # the random crops and intensity changes, reseeded every epoch
    compute: ComputeDevice
    settings: TrainSettings
    config: dict[str, Any]
    rank: int
    # as the model-zoo bundle: Dice over the whole batch, so crops without spleen still steer it
    loss_fn: DiceCELoss = field(default_factory=lambda: DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True))

    def batches(self, epoch: int) -> DataLoader:
        epoch_seed = self.settings.seed * 1000 + epoch + RANK_SEED_STRIDE * self.rank  # rank 0: as a single process
        self.random_part.set_random_state(seed=epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        return DataLoader(self.train_ds, batch_size=self.settings.batch_size, shuffle=True, num_workers=0, generator=generator)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.compute.autocast():
            logits = model(batch["image"].to(self.compute.device))
        return self.loss_fn(logits.float(), batch["label"].to(self.compute.device))

    def evaluate(self, net: torch.nn.Module, epochs_done: int) -> Evaluation | None:
        if epochs_done % self.settings.val_interval and epochs_done != self.settings.epochs:
            return None
        window = SlidingWindowSettings.from_config(self.config["model_config"]["inference"], overlap=self.config["val_overlap"])
        entries = validate(net, self.val_ds, window, self.compute)
        return Evaluation(entries, entries[SCORE])


def train(settings: TrainSettings) -> TrainResult:
    run_dir = Path(settings.run_dir)
    with training_process(run_dir, settings.device) as ctx:
        return _train(settings, run_dir, ctx)


def _train(settings: TrainSettings, run_dir: Path, ctx: Distributed) -> TrainResult:
    model_config = load_model_config(settings.model_name)
    resolved = resolve(settings, model_config)
    compute = compute_on(ctx.device, settings.precision)
    split = data.split_datalist(data.load_datalist(settings.data_dir), resolved["val_cases"], settings.train_cases)
    config = open_run(ctx, run_dir, resolved, RESUMABLE_CHANGES, compute, split.as_json())
    set_determinism(seed=settings.seed)
    share = len(split.train) // ctx.world_size
    if share == 0:
        raise ValueError(f"{len(split.train)} training cases cannot be shared by {ctx.world_size} processes")
    train_items = split.train[ctx.rank :: ctx.world_size][:share]
    logger.info(
        "run %s: %d train / %d val cases (%d on rank %d of %d), %s, crop %s x%d",
        run_dir,
        len(split.train),
        len(split.val),
        len(train_items),
        ctx.rank,
        ctx.world_size,
        compute.describe(),
        config["crop_size"],
        config["num_samples"],
    )

    net = build_network(model_config).to(ctx.device)
    optimizer = _optimizer(config, net)
    parts = Optimisation(net, optimizer, compute.grad_scaler(), _scheduler(config, optimizer))
    state = resume(run_dir, parts, ctx.device, SCORE)
    if not state.epoch and settings.init_weights is not None:
        net.load_state_dict(load_state_dict(Path(settings.init_weights)))
        logger.info("fine-tuning from the weights in %s", settings.init_weights)
    if state.epoch >= settings.epochs:
        logger.info("nothing to do: %d of %d epochs done", state.epoch, settings.epochs)
        return finish(ctx, run_dir, net, state, SCORE)
    epochs = _spleen_epochs(settings, config, train_items, split.val if ctx.is_main else [], compute, ctx.rank)
    crops_per_step = settings.batch_size * config["num_samples"] * ctx.world_size
    return run_epochs(ctx, run_dir, parts, epochs, state, LoopSettings(settings.epochs, SCORE, crops_per_step, "crops"))


def _spleen_epochs(
    settings: TrainSettings,
    config: dict[str, Any],
    train_items: list[dict[str, str]],
    val_items: list[dict[str, str]],
    compute: ComputeDevice,
    rank: int,
) -> SpleenEpochs:
    """Cache the preprocessed training and validation cases (the slow part of starting a run)."""
    preprocessing = config["model_config"]["preprocessing"]
    random_part = data.random_transforms(
        config["crop_size"], config["num_samples"], config["pos"], config["neg"], settings.intensity_augmentation
    )
    # flat, so that CacheDataset caches everything up to the first random transform (a nested Compose
    # counts as random); the random transforms are the objects of ``random_part``, reseeded every epoch
    # the training cache may live on the device (read every step); validation's stays on the CPU, as
    # its sliding window moves each body region to the device itself
    cache_device = compute.device if settings.cache_device == "device" else None
    cached_part = data.deterministic_transforms(preprocessing, pad_to=config["crop_size"], with_indices=True, device=cache_device)
    started = time.monotonic()
    # copy_cache=False: the random transforms make new crops and never modify the cached volumes
    train_ds = CacheDataset(
        train_items,
        transform=Compose([*cached_part.transforms, *random_part.transforms]),
        cache_rate=1.0,
        copy_cache=False,
        num_workers=settings.cache_workers,
        progress=False,
    )
    val_ds = CacheDataset(
        val_items,
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
    return SpleenEpochs(train_ds, val_ds, random_part, compute, settings, config, rank)


def validate(net: torch.nn.Module, val_ds: CacheDataset, window: SlidingWindowSettings, compute: ComputeDevice) -> dict[str, Any]:
    """Mean and per-case Dice of probability > 0.5 on the cached validation cases (network in eval mode, then train mode)."""
    net.eval()
    per_case = {}
    for item in val_ds:
        probability = foreground_probability(item["image"], net, window, compute)
        per_case[Path(item["image"].meta["filename_or_obj"]).name] = dice_score(
            (probability > 0.5).numpy(), item["label"].as_tensor().cpu().numpy()
        )
    net.train()
    return {SCORE: sum(per_case.values()) / len(per_case), "val_per_case": per_case}


def _optimizer(config: dict[str, Any], net: torch.nn.Module) -> torch.optim.Optimizer:
    if config["optimizer"] == "novograd":
        return Novograd(net.parameters(), lr=config["learning_rate"])
    return torch.optim.Adam(net.parameters(), lr=config["learning_rate"])


def _scheduler(config: dict[str, Any], optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if config["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"], eta_min=config["learning_rate"] * 0.01)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
