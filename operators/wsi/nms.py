"""Lesion detections from a probability map by the non-maximum suppression of Liu et al. (2017):
repeatedly report the maximum and its position, then zero every cell within radius r of it; stop
when the maximum falls below threshold t."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.core.timing import StageTimings
from operators.wsi.inference import SlideProbability


@dataclass(frozen=True)
class Detection:
    """A lesion: its probability and its position (x, y) in level-0 pixels."""

    probability: float
    x: int
    y: int


def non_maximum_suppression(
    probability_map: np.ndarray,
    map_origin_xy_level0: tuple[float, float],
    map_stride_px_level0: float,
    radius_px_level0: float,
    threshold: float = 0.5,
) -> list[Detection]:
    """Detections in decreasing probability.

    ``probability_map[row, col]`` is the probability of the window centred at level-0
    (x, y) = origin + (col, row) * stride. The radius is in level-0 pixels and is applied on the
    map's grid (Euclidean distance between cell centres).
    """
    remaining = np.array(probability_map, dtype=np.float32, copy=True)
    radius_cells = radius_px_level0 / map_stride_px_level0
    rows, cols = np.ogrid[: remaining.shape[0], : remaining.shape[1]]
    detections: list[Detection] = []
    while remaining.size:
        flat = int(np.argmax(remaining))
        row, col = divmod(flat, remaining.shape[1])
        probability = float(remaining[row, col])
        if probability < threshold:
            break
        x = map_origin_xy_level0[0] + col * map_stride_px_level0
        y = map_origin_xy_level0[1] + row * map_stride_px_level0
        detections.append(Detection(probability, int(round(x)), int(round(y))))
        remaining[(rows - row) ** 2 + (cols - col) ** 2 <= radius_cells**2] = 0.0
    return detections


@dataclass(frozen=True)
class SlideDetections:
    """Lesion detections of a slide and its tumor score (the probability map's maximum, as the paper)."""

    probability: SlideProbability
    detections: tuple[Detection, ...]
    slide_score: float


def nms_parameters(postprocessing: dict[str, Any], radius_um: float | None = None, threshold: float | None = None) -> tuple[float, float]:
    """(radius in micrometres, threshold): the model config's ``postprocessing`` values unless overridden."""
    radius = radius_um or postprocessing["nms_radius_um"]
    return radius, postprocessing["nms_threshold"] if threshold is None else threshold


def detect_lesions(probability: SlideProbability, radius_um: float, threshold: float) -> SlideDetections:
    """The paper's NMS on the slide's map, with the radius given in micrometres."""
    prob_map = probability.probability_map
    radius_px_level0 = radius_um / probability.tissue.mpp
    detections = non_maximum_suppression(
        prob_map.probabilities, prob_map.grid.origin_xy_level0, prob_map.grid.stride_level0_px, radius_px_level0, threshold
    )
    score = float(prob_map.probabilities.max()) if prob_map.probabilities.size else 0.0
    return SlideDetections(probability, tuple(detections), score)


class LesionDetectionOperator(Operator):
    """Finds lesions by non-maximum suppression and scores the slide.

    Named inputs:
        probability: SlideProbability.

    Named outputs:
        detections: SlideDetections, detections as (probability, x, y) level-0 px in decreasing
        probability, and the slide score (maximum probability).
    """

    INPUT_PROBABILITY = "probability"
    OUTPUT_DETECTIONS = "detections"

    def __init__(self, fragment: Fragment, *args, radius_um: float, threshold: float, timings: StageTimings, **kwargs) -> None:
        self.radius_um = radius_um
        self.threshold = threshold
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_PROBABILITY)
        spec.output(self.OUTPUT_DETECTIONS)

    def compute(self, op_input, op_output, context) -> None:
        probability = op_input.receive(self.INPUT_PROBABILITY)
        with self.timings.stage("detections"):
            result = detect_lesions(probability, self.radius_um, self.threshold)
        op_output.emit(result, self.OUTPUT_DETECTIONS)
