from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.compute_device import ComputeDevice
from operators.ct_segmentation_inference import SlidingWindowSettings, body_bounding_box, segment_volume
from operators.ct_volume import CTVolume
from operators.model_config import load_model_config
from operators.model_loader import LoadedModel

PREPROCESSING = load_model_config("spleen_ct_segmentation")["preprocessing"]
CPU_FP32 = ComputeDevice(torch.device("cpu"), None)


class WindowThreshold(torch.nn.Module):
    """Two-class logits that call a voxel foreground when its windowed value exceeds 0.5 (about 54 HU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 40.0


THRESHOLD_MODEL = LoadedModel(torch.jit.script(WindowThreshold()), None, "torchscript", "threshold", "1", "0" * 64)


def ellipsoid_volume(affine_lps: np.ndarray, shape_zyx: tuple[int, int, int]) -> tuple[CTVolume, np.ndarray]:
    """Air with a 200 HU body-sized box and a 300 HU ellipsoid (the truth) centred in LPS space."""
    z, y, x = np.indices(shape_zyx)
    points = np.stack([x, y, z, np.ones_like(x)], axis=-1) @ affine_lps.T
    centre = affine_lps @ [shape_zyx[2] / 2, shape_zyx[1] / 2, shape_zyx[0] / 2, 1]
    d = points[..., :3] - centre[:3]
    truth = ((d[..., 0] / 40) ** 2 + (d[..., 1] / 25) ** 2 + (d[..., 2] / 30) ** 2) <= 1
    hu = np.full(shape_zyx, -1000.0, np.float32)
    hu[:, 8:-8, 8:-8] = -20.0
    hu[truth] = 300.0
    return CTVolume(hu, affine_lps, ()), truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def affine(spacing_xyz, directions=None, origin=(-100.0, -90.0, 40.0)) -> np.ndarray:
    result = np.eye(4)
    result[:3, :3] = (np.eye(3) if directions is None else directions) * np.asarray(spacing_xyz)
    result[:3, 3] = origin
    return result


GRIDS = {
    "isotropic-1mm": affine((1.0, 1.0, 1.0)),
    "anisotropic-0.8x0.8x3": affine((0.8, 0.8, 3.0)),
    "rows-flipped": affine((0.9, 0.9, 2.5), np.diag([1.0, -1.0, -1.0])),
    "rotated-in-plane": affine((1.0, 1.0, 2.0), np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])),
}


@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
def test_segment_volume_returns_the_mask_on_the_source_grid(grid):
    affine_lps = GRIDS[grid]
    slices_for_100_mm = int(round(100 / np.linalg.norm(affine_lps[:3, 2])))
    volume, truth = ellipsoid_volume(affine_lps, (slices_for_100_mm, 110, 120))
    mask = segment_volume(volume, THRESHOLD_MODEL, PREPROCESSING, SlidingWindowSettings(roi_size=(32, 32, 32)), CPU_FP32)
    assert mask.shape == truth.shape and mask.dtype == np.uint8
    assert dice(mask > 0, truth) > 0.95


def test_body_crop_gives_the_same_mask_as_the_whole_volume():
    volume, _ = ellipsoid_volume(GRIDS["anisotropic-0.8x0.8x3"], (40, 110, 120))
    settings = SlidingWindowSettings(roi_size=(32, 32, 32))
    cropped = segment_volume(volume, THRESHOLD_MODEL, PREPROCESSING, settings, CPU_FP32)
    whole = segment_volume(volume, THRESHOLD_MODEL, PREPROCESSING, SlidingWindowSettings(roi_size=(32, 32, 32), crop_to_body=False), CPU_FP32)
    np.testing.assert_array_equal(cropped, whole)


@pytest.mark.parametrize(
    ("filled", "margin", "expected"),
    [
        ((slice(10, 20), slice(5, 15), slice(0, 30)), 0, (slice(10, 20), slice(5, 15), slice(0, 30))),
        ((slice(10, 20), slice(5, 15), slice(0, 30)), 8, (slice(2, 28), slice(0, 23), slice(0, 30))),
        (None, 8, (slice(0, 40), slice(0, 40), slice(0, 30))),
    ],
    ids=["tight", "margin-clipped-to-image", "empty-image-uses-all"],
)
def test_body_bounding_box(filled, margin, expected):
    image = torch.zeros(1, 40, 40, 30)
    if filled is not None:
        image[(slice(None), *filled)] = 0.5
    assert body_bounding_box(image, margin) == expected
