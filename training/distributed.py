"""torchrun (DDP) process groups for the training pipelines: NCCL on GPUs, gloo on CPUs.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) everything runs in one process and the
collective helpers return their input.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from operators.core.device import resolve_device
from training.provenance import attach_log_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(requested_device: str = "auto") -> Distributed:
    """Join torchrun's process group (if any) and pick this process's device.

    ``requested_device``: as :func:`operators.core.device.resolve_device` takes it (``auto``, ``cpu``,
    ``cuda``, or ``cuda:N`` in a single process); under torchrun rank r takes GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, torch.cuda.is_available(), local_rank if world_size > 1 else None)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        logger.info("rank %d of %d (local %d) on %s, backend %s", rank, world_size, local_rank, device, dist.get_backend())
    return Distributed(rank, world_size, local_rank, device)


def data_parallel(ctx: Distributed, net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in DistributedDataParallel under torchrun (which gives every rank rank 0's weights), else ``net``."""
    if not ctx.active:
        return net
    return DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def shutdown(ctx: Distributed) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def training_process(run_dir: Path, requested_device: str) -> Iterator[Distributed]:
    """One training process's stay in ``run_dir``: joins torchrun's group (if any); on rank 0 creates
    ``run_dir/checkpoints`` and copies the log to ``run_dir/train.log``; undoes both on exit."""
    ctx = init_distributed(requested_device)
    handler = None
    if ctx.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        handler = attach_log_file(run_dir / "train.log")
    try:
        yield ctx
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        shutdown(ctx)


def barrier(ctx: Distributed) -> None:
    if ctx.active:
        dist.barrier()


def all_true(ctx: Distributed, flag: bool) -> bool:
    """Whether ``flag`` holds on every rank."""
    if not ctx.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0)


def mean_over_ranks(ctx: Distributed, value: float) -> float:
    if not ctx.active:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def gather_objects(ctx: Distributed, value: Any) -> list[Any]:
    """``value`` of every rank, in rank order."""
    if not ctx.active:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def broadcast_buffers(ctx: Distributed, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics, which DDP does not keep equal after a step)."""
    if ctx.active:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``module``, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
