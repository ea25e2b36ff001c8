"""One optimisation step that leaves the network untouched when the loss or a gradient is not finite."""

from __future__ import annotations

from collections.abc import Callable

import torch

from training.distributed import Distributed, all_true


def finite_step(loss: torch.Tensor, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """Backpropagate and step, unless the loss or a gradient is not finite (then nothing changes).

    One non-finite step would turn every weight into NaN for the rest of the run; the fp16
    GradScaler skips such steps for the same reason, and this does it for bf16 and fp32 too.
    """
    if not torch.isfinite(loss):
        return False
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not all(torch.isfinite(g).all() for g in grads):
        optimizer.zero_grad(set_to_none=True)
        scaler.update()
        return False
    scaler.step(optimizer)
    scaler.update()
    return True


def train_step(
    loss_of: Callable[[torch.nn.Module], torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ctx: Distributed | None = None,
) -> float | None:
    """Zero the gradients, compute ``loss_of(model)`` and take a :func:`finite_step`; the loss, or None when
    the step was skipped (a non-finite gradient, or a non-finite loss on any rank: a rank that left the
    gradient all-reduce would stall the others, so all of them skip together)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(model)
    if ctx is not None and not all_true(ctx, bool(torch.isfinite(loss))):
        return None
    return float(loss.detach()) if finite_step(loss, model, optimizer, scaler) else None
