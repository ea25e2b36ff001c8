from __future__ import annotations

import numpy as np
import pytest

from operators.ct.postprocessing import keep_largest_component


def blobs(*boxes) -> np.ndarray:
    mask = np.zeros((10, 20, 20), np.uint8)
    for box in boxes:
        mask[box] = 1
    return mask


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (
            blobs((slice(1, 5), slice(1, 9), slice(1, 9)), (slice(6, 8), slice(12, 14), slice(12, 14))),
            blobs((slice(1, 5), slice(1, 9), slice(1, 9))),
        ),
        (blobs(), blobs()),
        (
            blobs((slice(1, 3), slice(1, 3), slice(1, 3)), (slice(3, 5), slice(3, 5), slice(3, 5))),
            blobs((slice(1, 3), slice(1, 3), slice(1, 3)), (slice(3, 5), slice(3, 5), slice(3, 5))),
        ),
    ],
    ids=["drops-the-small-island", "empty-stays-empty", "corner-touching-is-one-component"],
)
def test_keep_largest_component(mask, expected):
    result = keep_largest_component(mask)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)
