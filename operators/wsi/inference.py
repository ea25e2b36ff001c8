"""Tumor probability map of a whole-slide image: patch mode and dense (fully convolutional) mode.

- Patch mode, for parity with the model-zoo bundle: one ``window`` patch centred on every tissue
  cell of the mask grid (stride = the mask's downsample, 64 model pixels for the bundle).
- Dense mode: the network runs on square tiles of ``tile_windows`` x ``tile_windows`` windows
  (224 + 32 * (k - 1) pixels); each output is the logit of one 224 window at a stride of 32 model
  pixels, and pixels shared by neighbouring windows are computed once. Near a window's border the
  features see the real neighbouring tissue where a lone patch sees zero padding, so dense values
  differ slightly from patch values (measured in benchmarks/).

Regions are decoded by worker threads two batches ahead, each thread with its own handle on the
slide the tissue stage resolved (no backend choice or calibration again; the handles are closed when
the map is done); only tiles holding tissue are read, and memory holds a few batches of regions plus
the map (one float per cell), never a whole level.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.core.device import ComputeDevice
from operators.core.timing import StageTimings
from operators.models.output_checks import require_finite
from operators.wsi.classifier import PatchClassifier
from operators.wsi.grid import MapGrid, ProbabilityMap, grid_for_slide, read_model_pixels, tissue_on_grid
from operators.wsi.slide.reader import SlideHandle
from operators.wsi.tissue_mask import SlideTissue

logger = logging.getLogger(__name__)

SlideOpener = Callable[[], SlideHandle]
InferenceMode = Literal["dense", "patch"]


@dataclass(frozen=True)
class InferenceSettings:
    mode: InferenceMode = "dense"
    batch_size: int = 400  # patches per forward pass (patch mode); tiles use batch_size // tile_windows^2 + 1
    tile_windows: int = 32  # dense mode: windows per tile side
    tta: bool = False  # average over the 8 orientations (4 rotations x flip)
    workers: int = 2  # region-decoding threads (0: decode in the calling thread)
    # Patches per network call on the CPU. A batch of 400 224-px patches overflows the CPU caches:
    # chunks of 16 classify 1.24x faster in float32 (56 vs 45 patches/s) and 1.15x in bf16
    # (87 vs 76) on the 2-core EPYC here (benchmarks/wsi_app_vs_monai_reference.py shows the effect).
    cpu_micro_batch: int = 16

    @classmethod
    def from_config(
        cls,
        inference: dict[str, Any],
        mode: InferenceMode | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        workers: int = 2,
    ) -> InferenceSettings:
        """The model config's ``inference`` section, with ``mode`` and ``batch_size`` overriding it when given."""
        return cls(
            mode=mode or inference["mode"],
            batch_size=batch_size or inference["batch_size"],
            tile_windows=inference["dense_tile_windows"],
            tta=tta,
            workers=workers,
        )


class _RegionReader:
    """Reads square regions of a slide in model pixels, with one slide handle per thread, opened on
    the thread's first read; :meth:`close` (or leaving its ``with`` block) closes them all."""

    def __init__(self, open_slide: SlideOpener, origins_xy_level0: np.ndarray, size_model_px: int, level0_px_per_model_px: float):
        self.open_slide = open_slide
        self.origins = origins_xy_level0
        self.size = size_model_px
        self.factor = level0_px_per_model_px
        self._local = threading.local()
        self._handles: list[SlideHandle] = []
        self._handles_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.origins)

    def _thread_slide(self) -> SlideHandle:
        slide = getattr(self._local, "slide", None)
        if slide is None:
            slide = self._local.slide = self.open_slide()
            with self._handles_lock:
                self._handles.append(slide)
        return slide

    def __call__(self, index: int) -> np.ndarray:
        origin = (float(self.origins[index, 0]), float(self.origins[index, 1]))
        return read_model_pixels(self._thread_slide(), origin, self.factor, (self.size, self.size))

    def close(self) -> None:
        """Close every thread's handle (call once no thread reads any more)."""
        with self._handles_lock:
            handles, self._handles = self._handles, []
        for slide in handles:
            slide.close()

    def __enter__(self) -> _RegionReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def to_network_input(regions_nhwc: torch.Tensor, compute: ComputeDevice) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB 0..255 -> float (N, 3, H, W) in -1..1, channels-last on the device."""
    # one float copy scaled in place: half the memory traffic of ``x / 127.5 - 1`` (same values)
    x = regions_nhwc.to(compute.device, non_blocking=True).permute(0, 3, 1, 2)
    return x.to(torch.float32, memory_format=torch.channels_last, copy=True).div_(127.5).sub_(1.0)


def classify_in_chunks(network: torch.nn.Module, regions_nhwc: torch.Tensor, compute: ComputeDevice, chunk: int | None) -> torch.Tensor:
    """``network(to_network_input(regions_nhwc))``, converted and run ``chunk`` regions at a time
    (``None``: all at once), so that a chunk's float input is still in the CPU caches when used.
    Non-finite logits stop the run (:func:`operators.models.output_checks.require_finite`)."""
    if chunk is None or len(regions_nhwc) <= chunk:
        logits = network(to_network_input(regions_nhwc, compute))
    else:
        logits = torch.cat([network(to_network_input(part, compute)) for part in regions_nhwc.split(chunk)])
    return require_finite(logits, "tumor logits")


def dihedral_average(
    network: torch.nn.Module, regions_nhwc: torch.Tensor, compute: ComputeDevice, tta: bool, chunk: int | None = None
) -> torch.Tensor:
    """Sigmoid of the network's (N, 1, h, w) logits for uint8 (N, H, W, 3) regions; with ``tta`` the
    mean over the 8 orientations, each output mapped back to the input's orientation."""
    if not tta:
        return torch.sigmoid(classify_in_chunks(network, regions_nhwc, compute, chunk).float())
    total = torch.zeros(())
    for flip in (False, True):
        flipped = torch.flip(regions_nhwc, dims=(2,)) if flip else regions_nhwc
        for quarter_turns in range(4):
            turned = torch.rot90(flipped, quarter_turns, dims=(1, 2))
            y = torch.sigmoid(classify_in_chunks(network, turned, compute, chunk).float())
            if y.ndim == 4:  # a map of windows (N, 1, h, w): turn it back (an (N, 1) patch output has no orientation)
                y = torch.rot90(y, -quarter_turns, dims=(2, 3))
                y = torch.flip(y, dims=(3,)) if flip else y
            total = total + y
    return total / 8.0


class _Progress:
    """Logs windows done, windows per second and ETA every ``every_s`` seconds."""

    def __init__(self, total_windows: int, every_s: float = 10.0) -> None:
        self.total, self.done, self.every = total_windows, 0, every_s
        self.start = self.last = time.perf_counter()

    def add(self, windows: int) -> None:
        self.done += windows
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            logger.info(
                "%d/%d windows (%.0f%%), %.1f windows/s, ETA %.0f s", self.done, self.total, 100 * self.done / max(self.total, 1), rate, eta
            )
            self.last = now

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)


def _batches(reader: _RegionReader, batch_size: int, workers: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(indices, uint8 (N, H, W, 3) regions) in order, decoded by ``workers`` threads two batches ahead.

    Threads, not processes: the decoders (OpenSlide, cuCIM, libjpeg via imagecodecs/Pillow) release
    the GIL, start instantly, and cuCIM crashes in forked worker processes.
    """
    starts = range(0, len(reader), batch_size)
    if workers == 0:
        for start in starts:
            indices = np.arange(start, min(start + batch_size, len(reader)))
            yield indices, torch.from_numpy(np.stack([reader(int(i)) for i in indices]))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wsi-read") as pool:
        pending: deque[tuple[np.ndarray, list[Future]]] = deque()
        for start in starts:
            indices = np.arange(start, min(start + batch_size, len(reader)))
            pending.append((indices, [pool.submit(reader, int(i)) for i in indices]))
            if len(pending) > 2:
                done_indices, futures = pending.popleft()
                yield done_indices, torch.from_numpy(np.stack([f.result() for f in futures]))
        while pending:
            done_indices, futures = pending.popleft()
            yield done_indices, torch.from_numpy(np.stack([f.result() for f in futures]))


def patch_probability_map(
    open_slide: SlideOpener,
    grid: MapGrid,
    tissue: np.ndarray,
    network: torch.nn.Module,
    compute: ComputeDevice,
    settings: InferenceSettings,
) -> tuple[np.ndarray, float]:
    """(rows, cols) float32 probabilities on ``grid`` (0 off tissue), and windows per second."""
    cells = np.argwhere(tissue)
    origins = np.array([grid.window_origin_xy_level0(r, c) for r, c in cells], dtype=np.float64).reshape(-1, 2)
    probabilities = np.zeros(grid.shape_rows_cols, dtype=np.float32)
    progress = _Progress(len(cells))
    chunk = settings.cpu_micro_batch if compute.device.type == "cpu" else None
    with (
        _RegionReader(open_slide, origins, grid.window_model_px, grid.level0_px_per_model_px) as reader,
        closing(_batches(reader, settings.batch_size, settings.workers)) as batches,
        torch.inference_mode(),
        compute.autocast(),
    ):
        for indices, regions in batches:
            values = dihedral_average(network, regions, compute, settings.tta, chunk).reshape(len(indices), -1)[:, 0]
            chosen = cells[indices]
            probabilities[chosen[:, 0], chosen[:, 1]] = values.cpu().numpy()
            progress.add(len(indices))
    return probabilities, progress.rate


def dense_probability_map(
    open_slide: SlideOpener,
    grid: MapGrid,
    tissue: np.ndarray,
    network: torch.nn.Module,
    compute: ComputeDevice,
    settings: InferenceSettings,
    output_stride_model_px: int,
) -> tuple[np.ndarray, float]:
    """Like :func:`patch_probability_map`, with the network run on tiles of k x k windows.

    ``grid.stride_model_px`` must be a multiple of the network's output stride
    (``output_stride_model_px``, 32 for the bundle's network): a coarser grid keeps every m-th
    output of each tile.
    """
    if grid.stride_model_px % output_stride_model_px:
        raise ValueError(f"dense stride {grid.stride_model_px} is not a multiple of the network's output stride {output_stride_model_px}")
    step = grid.stride_model_px // output_stride_model_px
    k = settings.tile_windows
    tile_px = grid.window_model_px + (k * step - 1) * output_stride_model_px
    rows, cols = grid.shape_rows_cols
    tiles = [(tr, tc) for tr in range(0, rows, k) for tc in range(0, cols, k) if tissue[tr : tr + k, tc : tc + k].any()]
    origins = np.array([grid.window_origin_xy_level0(tr, tc) for tr, tc in tiles], dtype=np.float64).reshape(-1, 2)
    probabilities = np.zeros(grid.shape_rows_cols, dtype=np.float32)
    progress = _Progress(int(tissue.sum()))
    tiles_per_batch = max(1, settings.batch_size // (k * k))
    with (
        _RegionReader(open_slide, origins, tile_px, grid.level0_px_per_model_px) as reader,
        closing(_batches(reader, tiles_per_batch, settings.workers)) as batches,
        torch.inference_mode(),
        compute.autocast(),
    ):
        for indices, regions in batches:
            maps = dihedral_average(network, regions, compute, settings.tta)[:, 0, ::step, ::step].cpu().numpy()
            for index, tile_map in zip(indices.tolist(), maps, strict=True):
                tr, tc = tiles[index]
                block = probabilities[tr : tr + k, tc : tc + k]
                block[...] = tile_map[: block.shape[0], : block.shape[1]]
                progress.add(int(tissue[tr : tr + k, tc : tc + k].sum()))
    probabilities[~tissue] = 0.0
    return probabilities, progress.rate


@dataclass(frozen=True)
class SlideProbability:
    """The probability map of a slide, how it was made, and its speed."""

    tissue: SlideTissue
    probability_map: ProbabilityMap
    mode: InferenceMode
    windows_per_s: float


def slide_probability_map(
    tissue: SlideTissue,
    classifier: PatchClassifier,
    compute: ComputeDevice,
    settings: InferenceSettings,
    dense_stride_model_px: int,
) -> SlideProbability:
    """Patch mode on the mask grid, or dense mode on a finer grid sharing the mask grid's origin.

    The slide is re-opened from ``tissue.slide`` (what the tissue stage resolved), once per
    decoding thread. Dense mode falls back to patch mode, with a warning, for a classifier that is
    not fully convolutional.
    """
    opener = tissue.slide.open
    mode: InferenceMode = settings.mode
    if mode == "dense" and classifier.output_stride_px is None:
        logger.warning("Model '%s' is not declared fully convolutional: patch mode instead of dense", classifier.model.name)
        mode = "patch"
    mask_grid = tissue.mask_grid
    if mode == "patch":
        probabilities, rate = patch_probability_map(opener, mask_grid, tissue.mask, classifier.network, compute, settings)
        grid = mask_grid
    else:
        grid = grid_for_slide(
            tissue.size_xy, tissue.mpp, mask_grid.model_mpp, dense_stride_model_px, mask_grid.window_model_px, mask_grid.origin_model_px
        )
        probabilities, rate = dense_probability_map(
            opener,
            grid,
            tissue_on_grid(tissue.mask, mask_grid.stride_model_px, grid),
            classifier.network,
            compute,
            settings,
            classifier.output_stride_px,
        )
    logger.info(
        "%s: %s mode, %.1f windows/s, map %d x %d at %.2f um/cell",
        tissue.source.name,
        mode,
        rate,
        grid.shape_rows_cols[1],
        grid.shape_rows_cols[0],
        grid.map_mpp,
    )
    return SlideProbability(tissue, ProbabilityMap(probabilities, grid), mode, rate)


class ProbabilityMapOperator(Operator):
    """Classifies every tissue window of the slide (patch or dense mode).

    Named inputs:
        tissue: SlideTissue.

    Named outputs:
        probability: SlideProbability, whose ProbabilityMap is (rows, cols) float32 tumor
        probability per window, placed on level 0 by its MapGrid (origin and stride in level-0 px).
    """

    INPUT_TISSUE = "tissue"
    OUTPUT_PROBABILITY = "probability"

    def __init__(
        self,
        fragment: Fragment,
        *args,
        classifier: PatchClassifier,
        compute: ComputeDevice,
        settings: InferenceSettings,
        dense_stride_model_px: int,
        timings: StageTimings,
        **kwargs,
    ) -> None:
        self.classifier = classifier
        self.compute_device = compute
        self.settings = settings
        self.dense_stride_model_px = dense_stride_model_px
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_TISSUE)
        spec.output(self.OUTPUT_PROBABILITY)

    def compute(self, op_input, op_output, context) -> None:
        tissue = op_input.receive(self.INPUT_TISSUE)
        with self.timings.stage("probability_map"):
            result = slide_probability_map(tissue, self.classifier, self.compute_device, self.settings, self.dense_stride_model_px)
        op_output.emit(result, self.OUTPUT_PROBABILITY)
