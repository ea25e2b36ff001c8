from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from operators.core.device import ComputeDevice
from operators.core.errors import ImplausibleResultError
from operators.core.metrics import dice_score
from operators.ct.inference import (
    SlidingWindowSettings,
    body_bounding_box,
    foreground_probability,
    preprocess_ct,
    segment_volume,
    snap_to_window_grid,
    window_starts,
)
from operators.ct.volume import CTVolume
from operators.models.config import load_model_config
from operators.models.loader import LoadedModel
from operators.models.runtime import RuntimeChoice, prepare_network

PREPROCESSING = load_model_config("spleen_ct_segmentation")["preprocessing"]
CPU_FP32 = ComputeDevice(torch.device("cpu"))


class WindowThreshold(torch.nn.Module):
    """Two-class logits that call a voxel foreground when its windowed value exceeds 0.5 (about 54 HU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 40.0


THRESHOLD_MODEL = LoadedModel(torch.jit.script(WindowThreshold()), None, "torchscript", "threshold", "1", "0" * 64)


class BorderSensitive(torch.nn.Module):
    """Logits that depend on where a voxel sits in its window, so any change of tiling changes the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[2]).view(1, 1, -1, 1, 1)
        return torch.cat([0.5 - x, x - 0.5 + ramp], dim=1) * 4.0


BORDER_SENSITIVE_MODEL = LoadedModel(torch.jit.script(BorderSensitive()), None, "torchscript", "ramp", "1", "0" * 64)


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


def affine(spacing_xyz, directions=None, origin=(-100.0, -90.0, 40.0)) -> np.ndarray:
    result = np.eye(4)
    result[:3, :3] = (np.eye(3) if directions is None else directions) * np.asarray(spacing_xyz)
    result[:3, 3] = origin
    return result


def gantry_tilted(tilt_deg: float, axis: str, spacing_xyz=(0.9, 0.9, 2.5)) -> np.ndarray:
    """Tilted image planes with the slice positions stepping straight along z: a sheared affine."""
    t = np.radians(tilt_deg)
    if axis == "x":
        row, column = [1.0, 0.0, 0.0], [0.0, np.cos(t), np.sin(t)]
    else:
        row, column = [np.cos(t), 0.0, -np.sin(t)], [0.0, 1.0, 0.0]
    return affine(spacing_xyz, np.array([row, column, [0.0, 0.0, 1.0]]).T)


GRIDS = {
    "isotropic-1mm": affine((1.0, 1.0, 1.0)),
    "anisotropic-0.8x0.8x3": affine((0.8, 0.8, 3.0)),
    "rows-flipped": affine((0.9, 0.9, 2.5), np.diag([1.0, -1.0, -1.0])),
    "rotated-in-plane": affine((1.0, 1.0, 2.0), np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])),
    "gantry-tilt-10-about-x": gantry_tilted(10, "x"),
    "gantry-tilt-minus-25-about-x": gantry_tilted(-25, "x"),
    "gantry-tilt-25-about-y": gantry_tilted(25, "y"),
}


def small_windows(**overrides) -> SlidingWindowSettings:
    """The model config's sliding window with 32-voxel windows, so the synthetic volumes stay small."""
    return SlidingWindowSettings.from_config(load_model_config("spleen_ct_segmentation")["inference"], roi_size=(32, 32, 32), **overrides)


@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
def test_segment_volume_returns_the_mask_on_the_source_grid(grid):
    affine_lps = GRIDS[grid]
    slices_for_100_mm = int(round(100 / np.linalg.norm(affine_lps[:3, 2])))
    volume, truth = ellipsoid_volume(affine_lps, (slices_for_100_mm, 110, 120))
    mask = segment_volume(volume, THRESHOLD_MODEL.module, PREPROCESSING, small_windows(), CPU_FP32)
    assert mask.shape == truth.shape and mask.dtype == np.uint8
    assert dice_score(mask, truth) > 0.95


@pytest.mark.parametrize("grid", [name for name in GRIDS if "tilt" in name])
def test_a_sheared_volume_reaches_the_network_on_an_orthogonal_grid(grid):
    volume, _ = ellipsoid_volume(GRIDS[grid], (40, 110, 120))
    image, _ = preprocess_ct(volume.hu_zyx, volume.affine_lps, PREPROCESSING)
    directions = image.affine.numpy()[:3, :3] / np.linalg.norm(image.affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0), PREPROCESSING["pixdim_mm"], rtol=1e-6)


def test_body_crop_gives_the_same_mask_as_the_whole_volume():
    volume, _ = ellipsoid_volume(GRIDS["anisotropic-0.8x0.8x3"], (40, 110, 120))
    settings = small_windows()
    cropped = segment_volume(volume, THRESHOLD_MODEL.module, PREPROCESSING, settings, CPU_FP32)
    whole = segment_volume(volume, THRESHOLD_MODEL.module, PREPROCESSING, small_windows(crop_to_body=False), CPU_FP32)
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


@pytest.mark.parametrize(
    ("length", "roi", "overlap"),
    [(96, 96, 0.5), (100, 96, 0.5), (256, 96, 0.5), (257, 96, 0.25), (500, 96, 0.5), (130, 32, 0.0), (40, 32, 0.9), (33, 32, 0.99)],
)
def test_window_starts_match_monai_sliding_window_grid(length, roi, overlap):
    interval = _get_scan_interval((length,), (roi,), 1, (overlap,))
    expected = [s[0].start for s in dense_patch_slices((length,), (roi,), interval)]
    assert window_starts(length, roi, overlap) == expected


@pytest.mark.parametrize(
    ("box", "shape", "expected"),
    [
        ((slice(50, 60),), (256,), (slice(0, 144),)),  # windows at 0 and 48 touch 50..60
        ((slice(100, 110),), (256,), (slice(48, 192),)),
        ((slice(150, 256),), (256,), (slice(96, 256),)),  # includes the last window, moved back to 160
        ((slice(0, 256),), (256,), (slice(0, 256),)),
        ((slice(10, 20),), (80,), (slice(0, 80),)),  # an axis shorter than the roi stays whole
    ],
    ids=["start", "middle", "end", "whole", "short-axis"],
)
def test_snap_to_window_grid(box, shape, expected):
    assert snap_to_window_grid(box, shape, (96,), 0.5) == expected


def test_body_crop_keeps_the_whole_image_probability_inside_the_body_for_a_tiling_sensitive_model():
    image = MetaTensor(torch.zeros(1, 150, 140, 60))
    image[:, 70:110, 40:100, 10:50] = 0.6  # the body, off-centre so an unsnapped crop would re-tile it
    body = body_bounding_box(image, 4)
    settings = small_windows()
    cropped = foreground_probability(image, BORDER_SENSITIVE_MODEL.module, settings, CPU_FP32)
    whole = foreground_probability(image, BORDER_SENSITIVE_MODEL.module, small_windows(crop_to_body=False), CPU_FP32)
    torch.testing.assert_close(cropped[(slice(None), *body)], whole[(slice(None), *body)], rtol=0, atol=1e-6)


class NanAboveThreshold(torch.nn.Module):
    """A broken network: NaN logits wherever the windowed value exceeds 0.5, as flipped weight bits can give."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([0.5 - x, x - 0.5], dim=1)
        return torch.where(x > 0.5, torch.nan, logits)


def test_non_finite_spleen_logits_stop_the_run_instead_of_becoming_a_mask():
    image = MetaTensor(torch.zeros(1, 40, 40, 40))
    assert torch.isfinite(foreground_probability(image, NanAboveThreshold(), small_windows(), CPU_FP32)).all()  # no NaN made
    image[:, 10:20, 10:20, 10:20] = 0.9
    with pytest.raises(ImplausibleResultError, match=r"[1-9]\d* NaN and 0 infinite of \d+ spleen logits"):
        foreground_probability(image, NanAboveThreshold(), small_windows(), CPU_FP32)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_the_mask_is_the_same_in_every_fp32_runtime(backend: str, tmp_path, monkeypatch):
    monkeypatch.setenv("CLINICAL_AI_RUNTIME_CACHE", str(tmp_path))
    volume, truth = ellipsoid_volume(GRIDS["anisotropic-0.8x0.8x3"], (40, 110, 120))
    settings = small_windows()
    network = prepare_network(
        THRESHOLD_MODEL.module,
        RuntimeChoice(backend, CPU_FP32, "avx512f"),
        torch.zeros(settings.sw_batch_size, 1, *settings.roi_size),
        THRESHOLD_MODEL.sha256,
        batch_size=settings.sw_batch_size,
    )
    assert network.backend == backend
    reference = segment_volume(volume, THRESHOLD_MODEL.module, PREPROCESSING, settings, CPU_FP32)
    np.testing.assert_array_equal(segment_volume(volume, network, PREPROCESSING, settings, CPU_FP32), reference)
