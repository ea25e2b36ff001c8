"""One optimisation step that leaves the network untouched when the loss or a gradient is not finite."""

from __future__ import annotations

import torch


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
