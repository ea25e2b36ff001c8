"""Sliding-window segmentation of a CT volume, returned on the source DICOM grid.

Steps, as the model-zoo spleen bundle: orientation RAS, spacing, intensity window (shared with
training in :mod:`operators.ct.preprocessing`); sliding-window inference; softmax; inversion of the
spatial transforms back to the source grid (bilinear on probabilities, as the bundle's Invertd);
argmax.

Two measured departures from the bundle's code path, both optional:
- only the windows of the whole image's sliding-window grid that touch the body's bounding box
  (plus a margin) are run: voxels outside it are air, which the window maps to 0 and the bundle's
  own training crops away. The crop is snapped to that grid, so every voxel of the body gets the
  very windows, and the very average, the whole-image run gives it (a crop tiled with its own grid
  moved window borders, and these weights' output depends on them: benchmarks/README.md);
  ``--no-body-crop`` runs every window;
- with two classes only the foreground probability is resampled, and argmax becomes p > 0.5
  (identical, since p0 = 1 - p1 and linear interpolation preserves that sum), halving the
  largest resampling of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose
from monai.transforms.utils import generate_spatial_bounding_box

from operators.core.device import ComputeDevice
from operators.core.timing import StageTimings
from operators.ct.preprocessing import metatensor_to_volume, spleen_image_transforms, volume_to_metatensor
from operators.ct.volume import CTVolume
from operators.models.output_checks import require_finite
from operators.models.runtime import Network

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlidingWindowSettings:
    """MONAI sliding-window parameters; window, batch and overlap come from the model's config.json
    (``from_config``), never from defaults here."""

    roi_size: tuple[int, int, int]
    sw_batch_size: int
    overlap: float
    crop_to_body: bool = True
    body_margin_voxels: int = 16

    @classmethod
    def from_config(cls, inference: dict[str, Any], **overrides: Any) -> SlidingWindowSettings:
        values = {"roi_size": tuple(inference["roi_size"]), "sw_batch_size": inference["sw_batch_size"], "overlap": inference["overlap"]}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def body_bounding_box(image: torch.Tensor, margin_voxels: int) -> tuple[slice, ...]:
    """Spatial slices of the box around voxels above the window's floor (the body), with a margin."""
    start, end = generate_spatial_bounding_box(image, select_fn=lambda x: x > 0, margin=margin_voxels)
    shape = image.shape[1:]
    if any(e <= s for s, e in zip(start, end, strict=True)):  # nothing above the floor: run on the whole image
        return tuple(slice(0, n) for n in shape)
    return tuple(slice(max(int(s), 0), min(int(e), n)) for s, e, n in zip(start, end, shape, strict=True))


def window_starts(image_length: int, roi_length: int, overlap: float) -> list[int]:
    """Start indices of MONAI's sliding windows along one axis of an image at least ``roi_length`` long.

    The rule of ``monai.inferers.sliding_window_inference`` (``_get_scan_interval`` then
    ``dense_patch_slices``): a step of ``int(roi * (1 - overlap))`` (at least 1), and a last window
    moved back to end at the image's end.
    """
    step = roi_length if roi_length == image_length else max(int(roi_length * (1 - overlap)), 1)
    starts = [0]
    while starts[-1] + roi_length < image_length:
        starts.append(min(starts[-1] + step, image_length - roi_length))
    return starts


def snap_to_window_grid(
    box: tuple[slice, ...], image_shape: tuple[int, ...], roi_size: tuple[int, ...], overlap: float
) -> tuple[slice, ...]:
    """The smallest union of whole-image windows that covers ``box``, per axis.

    Run with the same roi and overlap, MONAI's sliding window over the returned region visits
    exactly those windows of the whole-image grid, so inside ``box`` its output equals the
    whole-image output. An axis no longer than the roi is left whole (MONAI pads it).
    """
    snapped = []
    for axis_box, length, roi in zip(box, image_shape, roi_size, strict=True):
        if length <= roi:
            snapped.append(slice(0, length))
            continue
        touching = [s for s in window_starts(length, roi, overlap) if s < axis_box.stop and s + roi > axis_box.start]
        snapped.append(slice(touching[0], touching[-1] + roi))
    return tuple(snapped)


def foreground_probability(
    image: MetaTensor, network: Callable[[torch.Tensor], torch.Tensor], settings: SlidingWindowSettings, compute: ComputeDevice
) -> torch.Tensor:
    """Spleen probability (1, x, y, z) on the preprocessed grid of ``image`` (1, x, y, z, values 0..1).

    ``network`` maps (N, 1, *roi) to two-class logits: a prepared runtime network
    (operators.models.runtime) or a torch module in eval mode (run under ``compute``'s autocast).
    """
    shape = tuple(image.shape[1:])
    box = tuple(slice(0, n) for n in shape)
    if settings.crop_to_body:
        box = snap_to_window_grid(body_bounding_box(image, settings.body_margin_voxels), shape, settings.roi_size, settings.overlap)
    region = image.as_tensor()[(slice(None), *box)][None].to(compute.device)
    inferer = SlidingWindowInferer(roi_size=settings.roi_size, sw_batch_size=settings.sw_batch_size, overlap=settings.overlap)
    logger.info("Sliding window over %s of %s preprocessed voxels", tuple(region.shape[2:]), shape)
    with torch.inference_mode(), compute.autocast():
        logits = inferer(region, network)
    probability = torch.softmax(require_finite(logits, "spleen logits").float(), dim=1)[0, 1:2].cpu()
    full = torch.zeros(image.shape, dtype=torch.float32)
    full[(slice(None), *box)] = probability
    return full


def preprocess_ct(hu_zyx: np.ndarray, affine_lps: np.ndarray, preprocessing: dict[str, Any]) -> tuple[MetaTensor, Compose]:
    """The network's input (1, x, y, z) and the transforms that made it (whose ``inverse`` undoes them)."""
    transforms = spleen_image_transforms(preprocessing)
    return transforms(volume_to_metatensor(hu_zyx, affine_lps)), transforms


def probability_to_source_mask(probability: torch.Tensor, image: MetaTensor, transforms: Compose) -> np.ndarray:
    """Binary mask (uint8, z, y, x) on the source grid, from a probability on the grid of ``image``."""
    on_grid = MetaTensor(probability, affine=image.affine)
    on_grid.applied_operations = list(image.applied_operations)  # inverse pops from it; keep image's intact
    return (metatensor_to_volume(transforms.inverse(on_grid)) > 0.5).astype(np.uint8)


def segment_volume(
    volume: CTVolume, network: Network, preprocessing: dict[str, Any], settings: SlidingWindowSettings, compute: ComputeDevice
) -> np.ndarray:
    """Binary spleen mask (uint8, z, y, x) on the source grid of ``volume``."""
    image, transforms = preprocess_ct(volume.hu_zyx, volume.affine_lps, preprocessing)
    return probability_to_source_mask(foreground_probability(image, network, settings, compute), image, transforms)


class CTSegmentationInferenceOperator(Operator):
    """Segments a CT volume with a sliding-window 3D network and returns the mask on the source grid.

    Named inputs:
        volume: CTVolume, float32 HU (z, y, x) with its LPS affine.

    Named outputs:
        mask: numpy uint8 (z, y, x), 1 = spleen, on the same grid as the input volume.
    """

    INPUT_VOLUME = "volume"
    OUTPUT_MASK = "mask"

    def __init__(
        self,
        fragment: Fragment,
        *args,
        network: Network,
        preprocessing: dict[str, Any],
        settings: SlidingWindowSettings,
        compute: ComputeDevice,
        timings: StageTimings,
        **kwargs,
    ) -> None:
        self.network = network
        self.preprocessing = preprocessing
        self.settings = settings
        self.compute_device = compute
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_VOLUME)
        spec.output(self.OUTPUT_MASK)

    def compute(self, op_input, op_output, context) -> None:
        volume = op_input.receive(self.INPUT_VOLUME)
        with self.timings.stage("inference"):
            mask = segment_volume(volume, self.network, self.preprocessing, self.settings, self.compute_device)
        op_output.emit(mask, self.OUTPUT_MASK)
