"""Pixel backends behind :mod:`operators.wsi.slide.reader`: cuCIM, OpenSlide and tifffile (and wsidicom,
in :mod:`operators.wsi.slide.wsidicom_backend`, for DICOM WSI tiles OpenSlide does not decode).

Every backend reads a region given as a level-0 (x, y) location, a level and a (width, height) in
that level's pixels, and returns (h, w, 3) uint8 RGB with the area outside the slide filled with
the background colour (white glass unless OpenSlide names another).

Where a backend puts pixel 0 of a region at a level > 0: OpenSlide samples at the fractional
level coordinate ``location / downsample`` (it interpolates); cuCIM and the tifffile backend take
``floor(location / downsample)``. Region reads at levels > 0 may therefore differ by up to one
level pixel between backends; level 0 is identical.

Which backend reads which file is decided once per slide (:mod:`operators.wsi.slide.backend_choice`);
:func:`open_backend` opens the chosen one again, e.g. once per decoding thread.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import math
import struct
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from operators.core.errors import SlideReadError

logger = logging.getLogger(__name__)

BackendName = Literal["cucim", "openslide", "tifffile", "wsidicom"]
WHITE = (255, 255, 255)
# What decoders (imagecodecs' errors are RuntimeErrors, tifffile's ValueErrors) and reads of a damaged
# file raise while a region is read: turned into the slide's SlideReadError at the backend boundary.
DECODER_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, RuntimeError, EOFError, IndexError, struct.error, zlib.error)


def import_optional(module: str, purpose: str) -> Any:
    """Import a heavy optional dependency, with a message that says what needs it and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = {"openslide": "openslide-python and openslide-bin", "cucim": "cucim"}.get(module, module)
        raise ImportError(f"{purpose} needs the Python package {package} (see requirements.txt): {error}") from error


def optional_available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _downsample(level0_xy: tuple[int, int], level_xy: tuple[int, int]) -> float:
    """OpenSlide's definition: the mean of the x and y ratios."""
    return (level0_xy[0] / level_xy[0] + level0_xy[1] / level_xy[1]) / 2.0


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """JFIF full-range YCbCr -> RGB, uint8 in and out."""
    y, cb, cr = (ycc[..., i].astype(np.float32) for i in range(3))
    cb -= 128.0
    cr -= 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def composite_on(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """(h, w, 4) unassociated RGBA -> (h, w, 3) RGB over ``background``; transparent becomes background."""
    alpha = rgba[..., 3]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint16)
    back = np.asarray(background, dtype=np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * a + back * (255 - a) + 127) // 255).astype(np.uint8)


class SlideBackend:
    """Common interface. ``level_sizes_xy`` and ``level_downsamples`` are the slide's pyramid."""

    name: ClassVar[BackendName]
    path: Path
    level_sizes_xy: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    background: tuple[int, int, int] = WHITE

    def read_rgb(self, location_xy_level0: tuple[int, int], level: int, size_xy: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def level_origin_xy(self, location_xy_level0: tuple[int, int], level: int) -> tuple[float, float]:
        """Level coordinate of pixel 0 of a region read at ``location_xy_level0``."""
        ds = self.level_downsamples[level]
        return math.floor(location_xy_level0[0] / ds), math.floor(location_xy_level0[1] / ds)

    def properties(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass

    def _failed(self, what: str, error: Exception) -> SlideReadError:
        return SlideReadError(f"{self.path}: {self.name} could not read {what} ({type(error).__name__}: {error})")


class _FloorAlignedBackend(SlideBackend):
    """Backends addressed in integer level pixels: clip to the level, read inside, pad with white."""

    def read_rgb(self, location_xy_level0, level, size_xy):
        try:
            return self._read_clipped(location_xy_level0, level, size_xy)
        except SlideReadError:
            raise
        except DECODER_ERRORS as error:  # what a decoder or a short file raises outside the backends' own checks
            raise self._failed(f"the region at {tuple(location_xy_level0)} level {level} size {tuple(size_xy)}", error) from error

    def _read_clipped(self, location_xy_level0, level, size_xy):
        width, height = size_xy
        x, y = self.level_origin_xy(location_xy_level0, level)
        level_w, level_h = self.level_sizes_xy[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, level_w), min(y + height, level_h)
        if x0 <= x and y0 <= y and x1 == x + width and y1 == y + height:
            return self._read_inside(level, x, y, width, height)
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[...] = self.background
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_inside(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) RGB of a rectangle that lies inside the level."""
        raise NotImplementedError


class OpenSlideBackend(SlideBackend):
    """OpenSlide: SVS, generic tiled TIFF, DICOM WSI (one instance file), NDPI, MRXS, ..."""

    name: ClassVar[BackendName] = "openslide"

    def __init__(self, path: Path):
        openslide = import_optional("openslide", "Reading whole-slide images with OpenSlide")
        self.path = path
        self._error_types = (openslide.OpenSlideError, *DECODER_ERRORS)
        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as error:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise SlideReadError(f"{path}: OpenSlide cannot open it ({type(error).__name__}: {error})") from error
        self._levels = tuple(range(self._slide.level_count))  # our level index -> OpenSlide's
        self.level_sizes_xy = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self.ycbcr_levels: frozenset[int] = frozenset()  # (our) levels whose pixels OpenSlide returns as undecoded YCbCr
        color = self._slide.properties.get("openslide.background-color")
        if color and len(color) == 6:
            self.background = tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))

    def hide_levels(self, hidden: set[int]) -> None:
        """Leave out levels OpenSlide cannot read (before any other use); level 0 cannot be hidden."""
        if 0 in hidden:
            raise ValueError("level 0 cannot be hidden")
        keep = [i for i in range(len(self._levels)) if i not in hidden]
        self._levels = tuple(self._levels[i] for i in keep)
        self.level_sizes_xy = tuple(self.level_sizes_xy[i] for i in keep)
        self.level_downsamples = tuple(self.level_downsamples[i] for i in keep)

    def level_origin_xy(self, location_xy_level0, level):
        ds = self.level_downsamples[level]
        return location_xy_level0[0] / ds, location_xy_level0[1] / ds

    def read_rgb(self, location_xy_level0, level, size_xy):
        try:
            rgba = np.asarray(
                self._slide.read_region(tuple(int(v) for v in location_xy_level0), self._levels[level], tuple(int(v) for v in size_xy))
            )
        except self._error_types as error:
            raise self._failed(f"the region at {tuple(location_xy_level0)} level {level} size {tuple(size_xy)}", error) from error
        return self._finish(rgba, level)

    def read_rgb_uncorrected(self, location_xy_level0, level, size_xy) -> np.ndarray:
        """As :meth:`read_rgb` without the YCbCr correction (to calibrate it)."""
        try:
            rgba = np.asarray(self._slide.read_region(tuple(location_xy_level0), self._levels[level], tuple(size_xy)))
        except self._error_types as error:
            raise self._failed(f"the region at {tuple(location_xy_level0)} level {level} size {tuple(size_xy)}", error) from error
        return composite_on(rgba, self.background)

    def _finish(self, rgba: np.ndarray, level: int) -> np.ndarray:
        if level in self.ycbcr_levels:
            rgba = np.concatenate([ycbcr_to_rgb(rgba[..., :3]), rgba[..., 3:]], axis=-1)
        return composite_on(rgba, self.background)

    def properties(self) -> dict[str, str]:
        return dict(self._slide.properties)

    def close(self) -> None:
        self._slide.close()

    @staticmethod
    def can_open(path: Path) -> bool:
        if not optional_available("openslide"):
            return False
        import openslide

        try:
            return openslide.OpenSlide.detect_format(str(path)) is not None
        except (openslide.OpenSlideError, OSError, ValueError, ctypes.ArgumentError):  # unreadable files, in some versions
            return False


CUCIM_CACHE_MB = 256


def _enable_cucim_cache(cuimage: Any) -> None:
    """cuCIM's default is no tile cache (10x slower for overlapping patches); switch on a per-process one once."""
    try:
        if str(cuimage.cache().type).lower().endswith("nocache"):
            cuimage.cache("per_process", memory_capacity=CUCIM_CACHE_MB)
            logger.info("cuCIM tile cache: per_process, %d MB", CUCIM_CACHE_MB)
    except (AttributeError, RuntimeError, TypeError, ValueError) as error:  # an old or GPU-only cuCIM build: read uncached
        logger.warning("Could not enable cuCIM's tile cache (%s: %s)", type(error).__name__, error)


class CuCIMBackend(_FloorAlignedBackend):
    """cuCIM (CPU decoding here): tiled RGB TIFF/SVS only, see the module docstring."""

    name: ClassVar[BackendName] = "cucim"

    def __init__(self, path: Path):
        cucim = import_optional("cucim", "Reading whole-slide images with cuCIM")
        self.path = path
        _enable_cucim_cache(cucim.CuImage)
        try:
            self._image = cucim.CuImage(str(path))
        except Exception as error:
            raise SlideReadError(f"{path}: cuCIM cannot open it ({type(error).__name__}: {error})") from error
        resolutions = self._image.resolutions
        self.level_sizes_xy = tuple((int(w), int(h)) for w, h in resolutions["level_dimensions"])
        self.level_downsamples = tuple(_downsample(self.level_sizes_xy[0], s) for s in self.level_sizes_xy)
        self._cucim_downsamples = tuple(float(d) for d in resolutions["level_downsamples"])

    def _read_inside(self, level, x, y, width, height):
        ds = self._cucim_downsamples[level]
        # cuCIM maps a level-0 location to floor(location / its float32 downsample): pick a location that lands on (x, y).
        location = (x if level == 0 else math.ceil(x * ds), y if level == 0 else math.ceil(y * ds))
        try:
            region = np.asarray(self._image.read_region(location=location, size=(int(width), int(height)), level=int(level)))
        except Exception as error:
            raise self._failed(f"level {level} at ({x}, {y}) size ({width}, {height})", error) from error
        return np.ascontiguousarray(region[..., :3]) if region.shape[-1] != 3 else region

    def close(self) -> None:
        close = getattr(self._image, "close", None)
        if close is not None:
            close()


class TifffileBackend(_FloorAlignedBackend):
    """Plain TIFFs nothing else reads (e.g. a single-level stripped TIFF): decodes only the strips/tiles a read needs.

    Uncompressed contiguous levels are memory-mapped; other levels decode each tile or strip once
    into a small LRU cache (``cache_bytes``), so memory stays bounded by the cache and one region.
    """

    name: ClassVar[BackendName] = "tifffile"

    def __init__(self, path: Path, cache_bytes: int = 128 * 2**20):
        import tifffile

        self.path = path
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cached_bytes = cache_bytes, 0
        try:
            self._tif = tifffile.TiffFile(path)
            self._pages = [level.keyframe for level in self._tif.series[0].levels]
        except Exception as error:
            raise SlideReadError(f"{path}: tifffile cannot open it ({type(error).__name__}: {error})") from error
        self.level_sizes_xy = tuple((int(p.imagewidth), int(p.imagelength)) for p in self._pages)
        self.level_downsamples = tuple(_downsample(self.level_sizes_xy[0], s) for s in self.level_sizes_xy)
        self._memmaps: dict[int, np.ndarray] = {}
        for level, page in enumerate(self._pages):
            if page.compression == 1 and page.is_memmappable and page.dtype == np.uint8 and int(page.planarconfig) == 1:
                try:
                    self._memmaps[level] = np.memmap(
                        path,
                        dtype=np.uint8,
                        mode="r",
                        offset=page.dataoffsets[0],
                        shape=(page.imagelength, page.imagewidth, page.samplesperpixel),
                    )
                except (OSError, ValueError) as error:  # "mmap length is greater than file size": a header claiming more pixels
                    self._tif.close()
                    raise SlideReadError(
                        f"{path}: tifffile cannot map level {level} ({page.imagewidth} x {page.imagelength} uncompressed pixels: "
                        f"{type(error).__name__}: {error})"
                    ) from error
                continue
            seg_w, seg_h = self._segment_shape(page)
            if seg_w * seg_h * int(page.samplesperpixel) > cache_bytes:
                logger.warning(
                    "%s: level %d is stored in %dx%d strips/tiles; each read decodes %.0f MB",
                    path,
                    level,
                    seg_w,
                    seg_h,
                    seg_w * seg_h * int(page.samplesperpixel) / 2**20,
                )

    def _segment_shape(self, page) -> tuple[int, int]:
        if page.is_tiled:
            return int(page.tilewidth), int(page.tilelength)
        return int(page.imagewidth), min(int(page.rowsperstrip or page.imagelength), int(page.imagelength))

    def _segment(self, level: int, index: int) -> np.ndarray | None:
        key = (level, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            page = self._pages[level]
            offset, count = page.dataoffsets[index], page.databytecounts[index]
            data = None
            if count:
                handle = self._tif.filehandle
                handle.seek(offset)
                data = handle.read(count)
        try:
            segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as error:
            raise self._failed(f"tile/strip {index} of level {level}", error) from error
        if segment is None:
            return None
        segment = segment.reshape(segment.shape[-3:])  # (rows, columns, samples)
        with self._lock:
            self._cache[key] = segment
            self._cached_bytes += segment.nbytes
            while self._cached_bytes > self._cache_bytes and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes
        return segment

    def _read_samples(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if level in self._memmaps:
            return np.array(self._memmaps[level][y : y + height, x : x + width])
        page = self._pages[level]
        samples = int(page.samplesperpixel)
        planes = samples if int(page.planarconfig) == 2 and samples > 1 else 1
        seg_w, seg_h = self._segment_shape(page)
        segs_x = -(-int(page.imagewidth) // seg_w)
        segs_per_plane = segs_x * -(-int(page.imagelength) // seg_h)
        out = np.full((height, width, samples), 255, dtype=np.uint8)
        for sy in range(y // seg_h, (y + height - 1) // seg_h + 1):
            for sx in range(x // seg_w, (x + width - 1) // seg_w + 1):
                top, left = sy * seg_h, sx * seg_w
                ya, yb = max(y, top), min(y + height, top + seg_h)
                xa, xb = max(x, left), min(x + width, left + seg_w)
                for plane in range(planes):
                    segment = self._segment(level, plane * segs_per_plane + sy * segs_x + sx)
                    if segment is None:
                        continue
                    block = segment[ya - top : yb - top, xa - left : xb - left]
                    target = out[ya - y : yb - y, xa - x : xb - x]
                    if planes == 1:
                        target[: block.shape[0], : block.shape[1]] = block
                    else:
                        target[: block.shape[0], : block.shape[1], plane] = block[..., 0]
        return out

    def _read_inside(self, level, x, y, width, height):
        samples = self._read_samples(level, x, y, width, height)
        if samples.shape[-1] == 1:
            return np.repeat(samples, 3, axis=-1)
        if samples.shape[-1] == 4:
            return composite_on(samples, self.background)
        return samples

    def close(self) -> None:
        self._memmaps.clear()
        self._cache.clear()
        self._tif.close()


_BACKEND_TYPES: dict[BackendName, type[SlideBackend]] = {
    "cucim": CuCIMBackend,
    "openslide": OpenSlideBackend,
    "tifffile": TifffileBackend,
}


def open_backend(name: BackendName, path: Path) -> SlideBackend:
    """Open ``path`` with the named backend, no questions asked (the choice was made and checked before)."""
    if name == "wsidicom":  # its module builds on this one
        from operators.wsi.slide.wsidicom_backend import WsidicomBackend

        return WsidicomBackend(path)
    return _BACKEND_TYPES[name](path)
