from __future__ import annotations

import math

import pytest
import torch

from operators.core.errors import ImplausibleResultError
from operators.models.output_checks import require_finite


def test_finite_outputs_pass_unchanged():
    outputs = torch.tensor([[-30.0, 0.0, 12.5]])
    assert require_finite(outputs, "logits") is outputs


@pytest.mark.parametrize(
    ("values", "counts"), [([math.nan, 1.0], "1 NaN and 0 infinite"), ([math.inf, -math.inf, math.nan], "1 NaN and 2 infinite")]
)
def test_non_finite_outputs_stop_the_run_counting_them(values, counts):
    with pytest.raises(ImplausibleResultError, match=f"{counts} of {len(values)} tumor logits"):
        require_finite(torch.tensor(values), "tumor logits")
