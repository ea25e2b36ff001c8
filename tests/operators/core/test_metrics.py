from __future__ import annotations

import numpy as np
import pytest

from operators.core.metrics import dice_score

EMPTY = np.zeros((4, 6, 6), np.uint8)
FULL = np.ones((4, 6, 6), np.uint8)


def box(z: slice, y: slice, x: slice, value: int = 1) -> np.ndarray:
    mask = EMPTY.copy()
    mask[z, y, x] = value
    return mask


# 16 voxels each, 8 shared: 2 * 8 / 32
HALF_OVERLAP = (box(slice(0, 2), slice(0, 2), slice(0, 4)), box(slice(1, 3), slice(0, 2), slice(0, 4)))
# labels 1 and 2 side by side in one map; the prediction has label 2 only in half of its place
LABEL_MAP_TRUTH = box(slice(0, 4), slice(0, 3), slice(0, 6), 1) + box(slice(0, 4), slice(3, 6), slice(0, 6), 2)
LABEL_MAP_PRED = box(slice(0, 4), slice(0, 3), slice(0, 6), 1) + box(slice(0, 2), slice(3, 6), slice(0, 6), 2)


@pytest.mark.parametrize(
    ("pred", "truth", "label", "expected"),
    [
        (EMPTY, EMPTY, None, 1.0),
        (EMPTY, FULL, None, 0.0),
        (FULL, EMPTY, None, 0.0),
        (FULL, FULL, None, 1.0),
        (*HALF_OVERLAP, None, 0.5),
        (HALF_OVERLAP[0].astype(bool), HALF_OVERLAP[1].astype(np.float32), None, 0.5),
        (LABEL_MAP_PRED, LABEL_MAP_TRUTH, None, 2 * 108 / (108 + 144)),
        (LABEL_MAP_PRED, LABEL_MAP_TRUTH, 1, 1.0),
        (LABEL_MAP_PRED, LABEL_MAP_TRUTH, 2, 2 * 36 / (36 + 72)),
        (LABEL_MAP_PRED, LABEL_MAP_TRUTH, 3, 1.0),
    ],
    ids=[
        "empty-empty",
        "empty-full",
        "full-empty",
        "full-full",
        "half-overlap",
        "bool-vs-float",
        "label-map-as-foreground",
        "label-1",
        "label-2",
        "label-absent-from-both",
    ],
)
def test_dice_score(pred, truth, label, expected):
    assert dice_score(pred, truth, label) == pytest.approx(expected)


def test_dice_score_is_symmetric():
    assert dice_score(*HALF_OVERLAP) == dice_score(*HALF_OVERLAP[::-1])


def test_dice_score_refuses_masks_of_different_shapes():
    with pytest.raises(ValueError, match="shapes"):
        dice_score(EMPTY, np.zeros((4, 6, 5), np.uint8))
