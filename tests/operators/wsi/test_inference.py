from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.core.device import ComputeDevice
from operators.core.errors import ImplausibleResultError
from operators.wsi.grid import grid_for_slide, tissue_on_grid
from operators.wsi.inference import (
    InferenceSettings,
    classify_in_chunks,
    dense_probability_map,
    dihedral_average,
    patch_probability_map,
    to_network_input,
)
from operators.wsi.slide.reader import SlideHandle, open_slide
from tests.wsi_factories import write_pyramid

CPU = ComputeDevice(torch.device("cpu"))
WINDOW = 224


class WindowMeanRed(torch.nn.Module):
    """Fully convolutional like the classifier (224 window, output stride 32, no padding):
    the logit of a window is 8 * (mean red in -1..1), so its probability is known in closed form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * torch.nn.functional.avg_pool2d(x[:, :1], kernel_size=WINDOW, stride=32)


def expected_probability(image: np.ndarray, centre_xy: tuple[float, float]) -> float:
    """The analytic model's output for the 224 window centred at ``centre_xy`` (white outside the image)."""
    x0, y0 = int(round(centre_xy[0] - WINDOW / 2)), int(round(centre_xy[1] - WINDOW / 2))
    padded = np.pad(image[..., 0].astype(np.float64), WINDOW, constant_values=255)
    red = padded[y0 + WINDOW : y0 + 2 * WINDOW, x0 + WINDOW : x0 + 2 * WINDOW].mean()
    return float(1 / (1 + np.exp(-8 * (red / 127.5 - 1))))


class RecordsCallSizes(torch.nn.Module):
    """A per-sample network (a different logit for each sample) that records its batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return (x * torch.linspace(-1, 1, x.shape[-1])).mean(dim=(1, 2, 3)).reshape(-1, 1) * 3.0


@pytest.mark.parametrize(
    ("samples", "chunk", "expected_calls"),
    [
        (10, None, [10]),
        (10, 16, [10]),
        (10, 4, [4, 4, 2]),
        (16, 16, [16]),
        (17, 16, [16, 1]),
    ],
)
def test_classify_in_chunks_splits_the_batch_and_keeps_the_order(samples, chunk, expected_calls):
    regions = torch.randint(0, 256, (samples, 8, 8, 3), dtype=torch.uint8)
    network = RecordsCallSizes()
    out = classify_in_chunks(network, regions, CPU, chunk)
    assert network.calls == expected_calls
    torch.testing.assert_close(out, RecordsCallSizes()(to_network_input(regions, CPU)))


class NanForRedRegions(torch.nn.Module):
    """A broken network: NaN logits for regions whose red channel is high, finite ones elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.mean(dim=(1, 2, 3)).reshape(-1, 1)
        return torch.where(x[:, :1].mean(dim=(1, 2, 3)).reshape(-1, 1) > 0.5, torch.nan, logits)


@pytest.mark.parametrize("chunk", [None, 2])
def test_non_finite_logits_stop_the_map_where_the_network_makes_them(chunk):
    regions = torch.zeros((5, 8, 8, 3), dtype=torch.uint8)
    regions[3, ..., 0] = 255  # one region gives NaN
    with pytest.raises(ImplausibleResultError, match="1 NaN and 0 infinite of 5 tumor logits"):
        classify_in_chunks(NanForRedRegions(), regions, CPU, chunk)
    assert torch.isfinite(classify_in_chunks(NanForRedRegions(), regions[:3], CPU, chunk)).all()


def test_network_input_is_scaled_to_minus_one_one_channels_last_and_leaves_the_regions_alone():
    regions = torch.tensor([[[[0, 255, 127]]]], dtype=torch.uint8).expand(2, 4, 5, 3).contiguous()
    x = to_network_input(regions, CPU)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 1.0, 127 / 127.5 - 1.0]))
    assert regions.dtype == torch.uint8 and int(regions[0, 0, 0, 1]) == 255


def test_tta_in_chunks_equals_tta_in_one_call_and_differs_from_one_orientation():
    regions = torch.randint(0, 256, (7, 8, 8, 3), dtype=torch.uint8)
    in_chunks = dihedral_average(RecordsCallSizes(), regions, CPU, tta=True, chunk=3)
    torch.testing.assert_close(in_chunks, dihedral_average(RecordsCallSizes(), regions, CPU, tta=True))
    assert not torch.allclose(in_chunks, dihedral_average(RecordsCallSizes(), regions, CPU, tta=False))


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.full((1536, 2048, 3), 240, np.uint8)
    image[200:1300, 300:1800] = rng.integers(0, 256, (1100, 1500, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("wsi") / "slide.tif"
    write_pyramid(path, image, levels=3, mpp=0.243)
    return path, image


def opener_of(path: Path, mpp_override: float | None = None) -> Callable[[], SlideHandle]:
    """What the probability map stage gets: re-opening the slide the tissue stage resolved."""
    with open_slide(path, mpp_override) as handle:
        return handle.resolved.open


@pytest.mark.parametrize("workers", [0, 2])
def test_patch_and_dense_maps_agree_and_match_the_windows(slide, workers):
    path, image = slide
    opener = opener_of(path)
    network = WindowMeanRed()
    patch_grid = grid_for_slide((2048, 1536), 0.243, 0.243, 64, WINDOW)
    tissue = np.zeros(patch_grid.shape_rows_cols, bool)
    tissue[4:18, 6:27] = True
    patch_map, _ = patch_probability_map(
        opener, patch_grid, tissue, network, CPU, InferenceSettings(mode="patch", batch_size=50, workers=workers)
    )
    dense_grid = grid_for_slide((2048, 1536), 0.243, 0.243, 32, WINDOW, origin_model_px=32)
    dense_tissue = tissue_on_grid(tissue, 64, dense_grid)
    dense_map, _ = dense_probability_map(
        opener, dense_grid, dense_tissue, network, CPU, InferenceSettings(tile_windows=8, workers=workers), 32
    )
    np.testing.assert_allclose(dense_map[::2, ::2], patch_map, atol=1e-5)
    for row, col in [(4, 6), (10, 20), (17, 26)]:
        centre = ((col + 0.5) * 64, (row + 0.5) * 64)
        assert patch_map[row, col] == pytest.approx(expected_probability(image, centre), abs=1e-5)
    assert patch_map[0, 0] == 0 and dense_map[~dense_tissue].max() == 0


@pytest.mark.parametrize(("mode", "workers"), [("patch", 0), ("patch", 2), ("dense", 2)])
def test_each_decoding_thread_opens_the_slide_once_and_every_handle_is_closed_at_the_end(slide, mode, workers):
    path, _ = slide
    reopen = opener_of(path)
    opened: list[SlideHandle] = []

    def opener() -> SlideHandle:
        opened.append(reopen())
        return opened[-1]

    grid = grid_for_slide((2048, 1536), 0.243, 0.243, 64 if mode == "patch" else 32, WINDOW)
    tissue = np.zeros(grid.shape_rows_cols, bool)
    tissue[4:18, 6:27] = True
    settings = InferenceSettings(mode=mode, batch_size=20, tile_windows=4, workers=workers)
    if mode == "patch":
        patch_probability_map(opener, grid, tissue, WindowMeanRed(), CPU, settings)
    else:
        dense_probability_map(opener, grid, tissue, WindowMeanRed(), CPU, settings, 32)
    assert 1 <= len(opened) <= max(workers, 1)
    assert all(handle.closed for handle in opened)


def test_tta_of_a_rotation_invariant_model_changes_nothing(slide):
    path, _ = slide
    grid = grid_for_slide((2048, 1536), 0.243, 0.243, 32, WINDOW)
    tissue = np.zeros(grid.shape_rows_cols, bool)
    tissue[10:20, 10:30] = True
    network = WindowMeanRed()
    plain, _ = dense_probability_map(opener_of(path), grid, tissue, network, CPU, InferenceSettings(tile_windows=8, workers=0), 32)
    tta, _ = dense_probability_map(opener_of(path), grid, tissue, network, CPU, InferenceSettings(tile_windows=8, workers=0, tta=True), 32)
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_a_slide_scanned_at_half_the_resolution_is_read_at_the_model_scale(slide):
    path, image = slide
    grid = grid_for_slide((2048, 1536), 0.486, 0.243, 64, WINDOW)  # the slide claims 0.486 um/px
    assert grid.level0_px_per_model_px == pytest.approx(0.5) and grid.stride_level0_px == pytest.approx(32)
    opener = opener_of(path, 0.486)
    tissue = np.zeros(grid.shape_rows_cols, bool)
    tissue[20, 30] = True
    result, _ = patch_probability_map(opener, grid, tissue, WindowMeanRed(), CPU, InferenceSettings(mode="patch", workers=0))
    window_red = image[
        20 * 32 + 16 - 56 : 20 * 32 + 16 + 56, 30 * 32 + 16 - 56 : 30 * 32 + 16 + 56, 0
    ].mean()  # 112 level-0 px = 224 model px
    assert result[20, 30] == pytest.approx(1 / (1 + np.exp(-8 * (window_red / 127.5 - 1))), abs=0.02)


@pytest.mark.parametrize(
    ("stride", "origin", "size", "expected_cells"),
    [(64, None, 2048, 32), (64, None, 2050, 33), (32, 32, 2048, 64), (32, 16, 2048, 64)],
)
def test_grid_covers_the_slide(stride, origin, size, expected_cells):
    grid = grid_for_slide((size, size), 0.243, 0.243, stride, WINDOW, origin)
    assert grid.shape_rows_cols == (expected_cells, expected_cells)


def test_tissue_on_a_finer_grid_follows_the_mask_pixel_of_each_window_centre():
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True  # model pixels x 128..191, y 64..127
    grid = grid_for_slide((256, 256), 0.243, 0.243, 32, WINDOW, origin_model_px=32)  # centres 32, 64, 96, ...
    on_grid = tissue_on_grid(mask, 64, grid)
    assert sorted(map(tuple, np.argwhere(on_grid))) == [(1, 3), (1, 4), (2, 3), (2, 4)]  # centres 64/96 x 128/160


@pytest.mark.parametrize(
    ("overrides", "expected_mode", "expected_batch"),
    [
        ({}, "dense", 400),
        ({"mode": "patch"}, "patch", 400),
        ({"batch_size": 64}, "dense", 64),
    ],
)
def test_inference_settings_take_the_config_unless_overridden(overrides, expected_mode, expected_batch):
    settings = InferenceSettings.from_config(
        {"mode": "dense", "batch_size": 400, "dense_tile_windows": 24}, tta=True, workers=0, **overrides
    )
    assert (settings.mode, settings.batch_size, settings.tile_windows, settings.tta, settings.workers) == (
        expected_mode,
        expected_batch,
        24,
        True,
        0,
    )
