"""Tiled, pyramidal TIFF writers for synthetic whole-slide images and their tumour masks.

Layout (what OpenSlide's generic-tiff driver and cuCIM both read; verified with OpenSlide 4.0.1 and
cuCIM 23.10): one TIFF page per pyramid level in the main IFD chain, level 0 first (NewSubfileType
0, carrying the ImageDescription), then levels downsampled by 2, 4, ... (NewSubfileType 1, reduced
resolution). Tiles are 256 x 256. Slides are JPEG (quality 90, YCbCr 4:2:0, as Aperio and most
scanners); masks are uint8 deflate. Every page carries ResolutionUnit CENTIMETER and
X/YResolution = 1e4 / (mpp x downsample) pixels per cm, from which OpenSlide reports
``openslide.mpp-x``. Pyramid levels stored as SubIFDs instead are NOT seen by OpenSlide 4.0.1
or cuCIM 23.10 (both report a single level), hence separate pages.

Writing is streamed tile by tile from generators, so memory stays bounded whatever the slide
size: only a few tiles are in flight. Tiles without tissue are not rendered: they are one
pre-encoded glass tile (slides) or zero tile (masks), reused.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from training.pathology.annotations import rasterize_polygons

from .wsi_scene import CAMELYON_MPP, SlideScene
from .wsi_texture import tune_malloc

logger = logging.getLogger(__name__)

MIN_LEVEL_SIDE = 1024
"""Pyramids go down by factors of 2 until the longer side of the last level is below this."""

MASK_MIN_LEVELS = 7
"""Masks always have levels 0-6: Camelyon16's official FROC reads level 5, the model-zoo bundle level 6."""

_SOFTWARE = "training.synthetic.wsi_slide"


def level_sizes(
    size_xy_level0: tuple[int, int], pyramid: bool = True, min_side: int = MIN_LEVEL_SIDE, min_levels: int = 1
) -> list[tuple[int, int]]:
    """(width, height) of each level: level k is ceil(size / 2^k), down until the longer side < ``min_side``.

    ``min_levels`` adds levels past that rule (never below 1 x 1). Without ``pyramid``, level 0 only.
    """
    W, H = int(size_xy_level0[0]), int(size_xy_level0[1])
    sizes = [(W, H)]
    if not pyramid:
        return sizes
    while max(sizes[-1]) >= min_side or len(sizes) < min_levels:
        d = 2 ** len(sizes)
        nxt = (max(1, math.ceil(W / d)), max(1, math.ceil(H / d)))
        if nxt == sizes[-1]:
            break
        sizes.append(nxt)
    return sizes


def _ordered_map(fn: Callable[[tuple[int, int, int]], bytes], items: Iterator[tuple[int, int, int]], workers: int) -> Iterator[bytes]:
    """``map(fn, items)`` in order, on ``workers`` threads with a bounded window of tiles in flight."""
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    window = 4 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="wsi-tile") as ex:
        pending: deque = deque()
        for it in items:
            pending.append(ex.submit(fn, it))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _tile_grid(level: int, size_xy: tuple[int, int], tile: int) -> Iterator[tuple[int, int, int]]:
    """(level, tile column, tile row) in TIFF order (row-major)."""
    w, h = size_xy
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            yield level, tx, ty


def _write_pyramid(
    path: Path,
    sizes: Sequence[tuple[int, int]],
    tile: int,
    samples: int,
    mpp: float,
    encode_tile: Callable[[tuple[int, int, int]], bytes],
    workers: int,
    description: str,
    tiff_kwargs: dict,
) -> None:
    """Write pages for ``sizes`` with tiles from ``encode_tile((level, tx, ty))`` (already encoded bytes)."""
    W, H = sizes[0]
    # classic TIFF offsets are 32-bit: BigTIFF when the data could come near 4 GB
    bigtiff = W * H * samples * 4 // 3 > 2**31
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
        for level, (w, h) in enumerate(sizes):
            res = 1e4 / (mpp * 2**level)
            tw.write(
                _ordered_map(encode_tile, _tile_grid(level, (w, h), tile), workers),
                shape=(h, w, samples) if samples > 1 else (h, w),
                dtype=np.uint8,
                tile=(tile, tile),
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                description=description if level == 0 else None,
                software=_SOFTWARE if level == 0 else None,
                metadata=None,
                **tiff_kwargs,
            )


def _default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))


def write_slide(
    scene: SlideScene,
    path: str | Path,
    tile_size: int = 256,
    pyramid: bool = True,
    jpeg_quality: int = 90,
    workers: int | None = None,
    min_levels: int = 1,
) -> Path:
    """Render ``scene`` into a tiled JPEG TIFF at ``scene.mpp``; returns the path.

    Args:
        tile_size: tile edge (multiple of 16).
        pyramid: write levels by factors of 2 down to < 1024 px (else level 0 only, for testing
            readers that downsample on the fly).
        jpeg_quality: libjpeg quality of every tile.
        workers: render threads (default: the usable CPUs, at most 4).
        min_levels: write at least this many levels (with ``pyramid``).
    """
    if tile_size % 16:
        raise ValueError(f"tile_size {tile_size} must be a multiple of 16 (JPEG 4:2:0 MCUs)")
    path = Path(path)
    tune_malloc()
    sizes = level_sizes(scene.size_xy, pyramid, min_levels=min_levels)
    glass = np.broadcast_to(scene.glass_rgb_u8, (tile_size, tile_size, 3)).copy()
    jpeg_args = {"level": jpeg_quality, "colorspace": "RGB", "outcolorspace": "YCBCR", "subsampling": (2, 2)}
    glass_bytes = imagecodecs.jpeg8_encode(glass, **jpeg_args)
    counts: Counter = Counter()
    lock = threading.Lock()

    def encode(item: tuple[int, int, int]) -> bytes:
        level, tx, ty = item
        d = float(2**level)
        x0, y0 = tx * tile_size * d, ty * tile_size * d
        tissue = scene.has_tissue((x0, y0), (tile_size * d, tile_size * d), d)
        with lock:
            counts["rendered" if tissue else "glass"] += 1
        if not tissue:
            return glass_bytes
        return imagecodecs.jpeg8_encode(scene.render((x0, y0), (tile_size, tile_size), d), **jpeg_args)

    W, H = scene.size_xy
    description = f"Synthetic H&E lymph node slide ({_SOFTWARE}) seed={scene.seed} size={W}x{H} mpp={scene.mpp} tumors={len(scene.tumors)}"
    _write_pyramid(
        path,
        sizes,
        tile_size,
        3,
        scene.mpp,
        encode,
        workers or _default_workers(),
        description,
        {"compression": "jpeg", "photometric": "rgb", "subsampling": (2, 2)},
    )
    logger.info("Wrote %s: %d levels %s, %d tiles rendered, %d glass", path, len(sizes), sizes[-1], counts["rendered"], counts["glass"])
    return path


def write_mask(
    polygons: Sequence[np.ndarray],
    size_xy_level0: tuple[int, int],
    path: str | Path,
    mpp: float = CAMELYON_MPP,
    tile_size: int = 256,
    pyramid: bool = True,
    min_levels: int = MASK_MIN_LEVELS,
    workers: int | None = None,
) -> Path:
    """Write a uint8 tumour mask (1 inside ``polygons``, 0 elsewhere) as a tiled, pyramidal, deflate TIFF.

    Every level rasterises the polygons at its own scale (pixel centres, see
    :func:`training.pathology.annotations.rasterize_polygons`), tile by tile.
    """
    path = Path(path)
    polys = [np.asarray(p, np.float64) for p in polygons]
    boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polys]).reshape(-1, 4)
    sizes = level_sizes(size_xy_level0, pyramid, min_levels=min_levels)
    zero_bytes = imagecodecs.zlib_encode(np.zeros((tile_size, tile_size), np.uint8), level=6)

    def encode(item: tuple[int, int, int]) -> bytes:
        level, tx, ty = item
        d = float(2**level)
        x0, y0 = tx * tile_size * d, ty * tile_size * d
        x1, y1 = x0 + tile_size * d, y0 + tile_size * d
        hit = (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)
        if not hit.any():
            return zero_bytes
        m = rasterize_polygons([polys[i] for i in np.flatnonzero(hit)], (x0, y0), (tile_size, tile_size), d)
        return imagecodecs.zlib_encode(m, level=6) if m.any() else zero_bytes

    W, H = int(size_xy_level0[0]), int(size_xy_level0[1])
    _write_pyramid(
        path,
        sizes,
        tile_size,
        1,
        mpp,
        encode,
        workers or _default_workers(),
        f"Tumor mask ({_SOFTWARE}) size={W}x{H} mpp={mpp} values: 1 tumor, 0 elsewhere",
        {"compression": "zlib", "photometric": "minisblack"},
    )
    logger.info("Wrote mask %s: %d levels, %d polygons", path, len(sizes), len(polys))
    return path
