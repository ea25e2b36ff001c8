"""Base of the operators that turn a volume and its mask into one file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.core.timing import StageTimings
from operators.ct.volume import CTVolume


class VolumeMaskFileWriter(Operator):
    """Receives a volume and a mask on its grid, writes one file, emits its path.

    Subclasses set ``OUTPUT_PATH`` (the output port's name) and ``STAGE`` (the timing's name) and
    implement :meth:`write`, which calls the module's pure function.

    Named inputs:
        volume: CTVolume; mask: numpy uint8 (z, y, x) on the volume's grid.

    Named outputs:
        <OUTPUT_PATH>: pathlib.Path of the written file, or None when nothing was written.
    """

    INPUT_VOLUME = "volume"
    INPUT_MASK = "mask"
    OUTPUT_PATH = "path"
    STAGE = "write"

    def __init__(self, fragment: Fragment, *args, output_path: Path, timings: StageTimings, **kwargs) -> None:
        self.output_path = Path(output_path)
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_VOLUME)
        spec.input(self.INPUT_MASK)
        spec.output(self.OUTPUT_PATH)

    def compute(self, op_input, op_output, context) -> None:
        volume: CTVolume = op_input.receive(self.INPUT_VOLUME)
        mask = op_input.receive(self.INPUT_MASK)
        with self.timings.stage(self.STAGE):
            path = self.write(volume, mask)
        op_output.emit(path, self.OUTPUT_PATH)

    def write(self, volume: CTVolume, mask: np.ndarray) -> Path | None:
        raise NotImplementedError
