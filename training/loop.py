"""The training loop of both pipelines (:mod:`training.spleen.train`, :mod:`training.pathology.train`).

A pipeline builds its network, optimizer and data, and hands the loop what differs between them: a
:class:`Pipeline` (this rank's batches of an epoch, the loss of one batch, rank 0's evaluation after
an epoch) and :class:`LoopSettings`. The loop does the rest, the same way for both:

- every step: :func:`training.steps.train_step` at the learning rate ``lr_at`` gives (if any); a step
  whose loss is not finite on some rank is skipped on all of them;
- after every epoch: the scheduler steps (if any); rank 0's batch-norm statistics go to every rank;
  the epoch's record (loss averaged over the ranks, steps, skipped steps, lr, seconds, samples per
  second, step losses) takes rank 0's evaluation; a better score replaces ``checkpoints/best.pt``,
  and ``checkpoints/last.pt`` and ``metrics.json`` are rewritten (rank 0);
- at the end: the weights' SHA-256 on every rank, into ``metrics.json``.

A run folder that holds ``checkpoints/last.pt`` resumes from it (:func:`resume`). :func:`open_run`
checks and writes the run folder's ``config.json``, ``split.json`` and ``environment.json`` first.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from operators.core.device import ComputeDevice
from training.distributed import Distributed, barrier, broadcast_buffers, data_parallel, gather_objects, mean_over_ranks, weights_sha256
from training.provenance import check_resumable, record_session, save_torch, write_json
from training.steps import train_step

logger = logging.getLogger(__name__)

# config.json keys that may differ when a run resumes: how the arithmetic is done, not what is learned
# ("amp" is the name run folders written before "precision" gave to it)
COMPUTE_KEYS = frozenset({"precision", "compute", "amp"})
_OWN_CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "epoch", "history", "best_epoch"})


@dataclass
class LoopState:
    epoch: int = 0  # epochs done
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    best_score: float | None = None
    best_epoch: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # the pipeline's own entries of checkpoints and metrics.json


@dataclass(frozen=True)
class Evaluation:
    entries: dict[str, Any]  # added to the epoch's record
    score: float | None  # higher is better; None: nothing to compare (best.pt stays)


class Pipeline(Protocol):
    def batches(self, epoch: int) -> Iterable[Any]:
        """This rank's batches of ``epoch`` (0-based), drawn from the epoch alone, so that a resumed run draws
        what an uninterrupted one would."""
        ...

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The loss of one batch (forward pass under the run's autocast, the loss in float32)."""
        ...

    def evaluate(self, net: torch.nn.Module, epochs_done: int) -> Evaluation | None:
        """Rank 0's evaluation after ``epochs_done`` epochs; None: none this epoch."""
        ...


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    score_name: str  # the evaluation's score; checkpoints and metrics.json record best_<score_name>
    samples_per_step: int  # samples in one step of all ranks together, for the throughput
    sample_name: str  # what a sample is ("patches", "crops"): the record's <sample_name>_per_s
    lr_at: Callable[[int, int], float] | None = None  # learning rate at (epoch, step), set before every step
    log_every_steps: int | None = None


@dataclass(frozen=True)
class Optimisation:
    net: torch.nn.Module  # the network itself, not its DDP wrapper: checkpoints, evaluation, digests
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # stepped after every epoch


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs_done: int
    score_name: str
    best_score: float | None
    best_epoch: int | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    weights_sha256_per_rank: list[str]


def checkpoint_paths(run_dir: Path) -> tuple[Path, Path]:
    """``checkpoints/last.pt`` and ``checkpoints/best.pt`` of a run folder."""
    return run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"


def open_run(
    ctx: Distributed,
    run_dir: Path,
    config: dict[str, Any],
    resumable_keys: frozenset[str],
    compute: ComputeDevice,
    split: Any,
    **session: Any,
) -> dict[str, Any]:
    """Refuse a run folder whose recorded settings differ in a key other than ``resumable_keys`` (and the
    compute keys), then write ``config.json`` (with the resolved device and precision under ``compute``),
    ``split.json`` and this session's ``environment.json`` entry (rank 0); returns the recorded config."""
    config = {**config, "compute": compute.as_json()}
    check_resumable(run_dir / "config.json", config, resumable_keys | COMPUTE_KEYS)  # every rank, so that all of them stop
    barrier(ctx)
    if ctx.is_main:
        write_json(run_dir / "config.json", config)
        write_json(run_dir / "split.json", split)
        record_session(run_dir / "environment.json", compute.device, compute.precision, **session)
    barrier(ctx)
    return config


def resume(run_dir: Path, parts: Optimisation, device: torch.device, score_name: str) -> LoopState:
    """The state of ``checkpoints/last.pt`` (its weights, optimizer and scheduler loaded into ``parts``), or a fresh one."""
    last, _ = checkpoint_paths(run_dir)
    if not last.is_file():
        return LoopState()
    checkpoint = torch.load(last, map_location=device, weights_only=True)
    parts.net.load_state_dict(checkpoint["model"])
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    if parts.scheduler is not None:
        parts.scheduler.load_state_dict(checkpoint["scheduler"])
    best_key = f"best_{score_name}"
    logger.info("resumed from %s at epoch %d", last, checkpoint["epoch"])
    return LoopState(
        epoch=checkpoint["epoch"],
        history=list(checkpoint["history"]),
        best_score=checkpoint.get(best_key),
        best_epoch=checkpoint["best_epoch"],
        extras={k: v for k, v in checkpoint.items() if k not in _OWN_CHECKPOINT_KEYS | {best_key}},
    )


def run_epochs(
    ctx: Distributed, run_dir: Path, parts: Optimisation, pipeline: Pipeline, state: LoopState, settings: LoopSettings
) -> TrainResult:
    """Train from ``state.epoch`` to ``settings.epochs`` (module docstring); then :func:`finish`."""
    model = data_parallel(ctx, parts.net)
    for epoch in range(state.epoch, settings.epochs):
        record = _train_epoch(ctx, model, parts, pipeline, settings, epoch)
        evaluation = _evaluate(parts.net, pipeline, epoch + 1, record) if ctx.is_main else None
        state.epoch = epoch + 1
        state.history.append(record)
        if ctx.is_main:
            _keep(run_dir, parts, state, settings.score_name, evaluation)
            _log_epoch(record, state, settings, None if evaluation is None else evaluation.score)
        barrier(ctx)
    return finish(ctx, run_dir, parts.net, state, settings.score_name)


def finish(ctx: Distributed, run_dir: Path, net: torch.nn.Module, state: LoopState, score_name: str) -> TrainResult:
    """Gather the weights' SHA-256 of every rank into ``metrics.json``; the run's result."""
    digests = gather_objects(ctx, weights_sha256(net))
    if ctx.is_main:
        _write_metrics(run_dir / "metrics.json", state, score_name, digests)
    last, best = checkpoint_paths(run_dir)
    return TrainResult(
        run_dir, state.epoch, score_name, state.best_score, state.best_epoch, last, best if best.is_file() else None, digests
    )


def _train_epoch(
    ctx: Distributed, model: torch.nn.Module, parts: Optimisation, pipeline: Pipeline, settings: LoopSettings, epoch: int
) -> dict[str, Any]:
    model.train()
    started, losses, skipped = time.monotonic(), [], 0
    for step, batch in enumerate(pipeline.batches(epoch)):
        if settings.lr_at is not None:
            for group in parts.optimizer.param_groups:
                group["lr"] = settings.lr_at(epoch, step)
        loss = train_step(functools.partial(pipeline.loss, batch=batch), model, parts.optimizer, parts.scaler, ctx)
        if loss is None:
            skipped += 1
            continue
        losses.append(loss)
        if settings.log_every_steps and (step + 1) % settings.log_every_steps == 0:
            _log_progress(epoch, step, losses[-settings.log_every_steps :], parts.optimizer, settings, time.monotonic() - started)
    if parts.scheduler is not None:
        parts.scheduler.step()
    broadcast_buffers(ctx, parts.net)  # DDP keeps the weights equal, not the batch-norm statistics
    seconds = time.monotonic() - started
    if skipped:
        logger.warning("epoch %d: skipped %d step(s) with a non-finite loss or gradient", epoch + 1, skipped)
    return {
        "epoch": epoch + 1,
        "loss": mean_over_ranks(ctx, sum(losses) / len(losses) if losses else float("nan")),
        "steps": len(losses),
        "skipped_steps": skipped,
        "lr": parts.optimizer.param_groups[0]["lr"],
        "train_seconds": round(seconds, 2),
        f"{settings.sample_name}_per_s": round(len(losses) * settings.samples_per_step / max(seconds, 1e-9), 2),
        "step_losses": [round(v, 5) for v in losses],
    }


def _evaluate(net: torch.nn.Module, pipeline: Pipeline, epochs_done: int, record: dict[str, Any]) -> Evaluation | None:
    started = time.monotonic()
    evaluation = pipeline.evaluate(net, epochs_done)
    if evaluation is not None:
        record.update(evaluation.entries)
        record["val_seconds"] = round(time.monotonic() - started, 2)
    return evaluation


def _keep(run_dir: Path, parts: Optimisation, state: LoopState, score_name: str, evaluation: Evaluation | None) -> None:
    last, best = checkpoint_paths(run_dir)
    score = None if evaluation is None else evaluation.score
    if score is not None and (state.best_score is None or score > state.best_score):
        state.best_score, state.best_epoch = score, state.epoch
        _save_checkpoint(best, parts, state, score_name)
    _save_checkpoint(last, parts, state, score_name)
    _write_metrics(run_dir / "metrics.json", state, score_name, None)


def _save_checkpoint(path: Path, parts: Optimisation, state: LoopState, score_name: str) -> None:
    save_torch(
        path,
        {
            "model": parts.net.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            **({} if parts.scheduler is None else {"scheduler": parts.scheduler.state_dict()}),
            "epoch": state.epoch,
            "history": state.history,
            f"best_{score_name}": state.best_score,
            "best_epoch": state.best_epoch,
            **state.extras,
        },
    )


def _write_metrics(path: Path, state: LoopState, score_name: str, digests: list[str] | None) -> None:
    write_json(
        path,
        {
            "epochs_done": state.epoch,
            f"best_{score_name}": state.best_score,
            "best_epoch": state.best_epoch,
            "train_seconds": round(sum(r["train_seconds"] + r.get("val_seconds", 0.0) for r in state.history), 1),
            **state.extras,
            "weights_sha256_per_rank": digests,
            "epochs": state.history,
        },
    )


def _log_progress(
    epoch: int, step: int, recent: list[float], optimizer: torch.optim.Optimizer, settings: LoopSettings, seconds: float
) -> None:
    logger.info(
        "epoch %d step %d: loss %.4f, lr %.3g, %.1f %s/s",
        epoch + 1,
        step + 1,
        sum(recent) / max(len(recent), 1),
        optimizer.param_groups[0]["lr"],
        (step + 1) * settings.samples_per_step / max(seconds, 1e-9),
        settings.sample_name,
    )


def _log_epoch(record: dict[str, Any], state: LoopState, settings: LoopSettings, score: float | None) -> None:
    logger.info(
        "epoch %d/%d: loss %.4f, %d steps (%d skipped), lr %.3g, %.1f %s/s, %.0f s%s",
        record["epoch"],
        settings.epochs,
        record["loss"],
        record["steps"],
        record["skipped_steps"],
        record["lr"],
        record[f"{settings.sample_name}_per_s"],
        settings.sample_name,
        record["train_seconds"] + record.get("val_seconds", 0.0),
        "" if score is None else f"; {settings.score_name} {score:.4f} (best {state.best_score:.4f} at epoch {state.best_epoch})",
    )
