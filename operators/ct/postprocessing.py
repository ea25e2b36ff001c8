"""Postprocessing of a binary organ mask: keep the largest connected component."""

from __future__ import annotations

import numpy as np
import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.transforms import KeepLargestConnectedComponent

from operators.core.timing import StageTimings


def keep_largest_component(mask_zyx: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask (uint8, any 3D shape); empty stays empty."""
    if not mask_zyx.any():
        return mask_zyx
    keep = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=3)
    return np.asarray(keep(torch.from_numpy(mask_zyx[None]))[0], dtype=np.uint8)


class MaskPostprocessingOperator(Operator):
    """Keeps the largest connected component of the mask (switchable).

    Named inputs:
        mask: numpy uint8 (z, y, x), 1 = organ.

    Named outputs:
        mask: numpy uint8 (z, y, x), same grid, only the largest 26-connected component when enabled.
    """

    INPUT_MASK = "mask"
    OUTPUT_MASK = "mask"

    def __init__(self, fragment: Fragment, *args, largest_component: bool, timings: StageTimings, **kwargs) -> None:
        self.largest_component = largest_component
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_MASK)
        spec.output(self.OUTPUT_MASK)

    def compute(self, op_input, op_output, context) -> None:
        mask = op_input.receive(self.INPUT_MASK)
        with self.timings.stage("postprocessing"):
            result = keep_largest_component(mask) if self.largest_component else mask
        op_output.emit(result, self.OUTPUT_MASK)
