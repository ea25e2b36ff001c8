"""Checks on what a network returns, where it returns it: a broken model or runtime (flipped weight bits,
an overflow in reduced precision) shows as NaN or infinite outputs, which must stop a run, not become
a number in a report."""

from __future__ import annotations

import torch

from operators.core.errors import ImplausibleResultError


def require_finite(outputs: torch.Tensor, what: str) -> torch.Tensor:
    """``outputs`` unchanged when every value is finite; else :class:`ImplausibleResultError` counting the
    NaN and infinite values of ``what`` (e.g. "tumor logits")."""
    finite = torch.isfinite(outputs)
    if bool(finite.all()):
        return outputs
    nan = int(torch.isnan(outputs).sum())
    infinite = int((~finite).sum()) - nan
    raise ImplausibleResultError(
        f"non-finite network outputs: {nan} NaN and {infinite} infinite of {outputs.numel()} {what} "
        "(the model or its runtime is broken); no result written"
    )
