"""Open a whole-slide image (SVS, tiled or plain TIFF, anything OpenSlide reads, or a DICOM WSI folder).

Conventions: locations are (x, y) in the slide's level-0 pixel frame; sizes are (width, height);
``mpp_xy`` is micrometres per level-0 pixel along x and y; images come back as (h, w, 3) uint8 RGB
with the area outside the slide filled with white glass (or OpenSlide's background colour).

:func:`open_slide` decides everything about a slide once: the file to open (a DICOM folder's
level-0 instance for OpenSlide, the folder for wsidicom), the backend
(:mod:`operators.wsi.slide.backend_choice`), the DICOM pyramid's
work-arounds (:mod:`operators.wsi.slide.dicom_workarounds`) and the resolution. Those decisions are
kept in a frozen :class:`ResolvedSlide`, whose :meth:`ResolvedSlide.open` opens the same slide again
(e.g. once per decoding thread) without repeating any of them.

A slide without pyramid levels is served by :meth:`SlideHandle.read_at_downsample` and
:meth:`SlideHandle.thumbnail`, which build the low-resolution image chunk by chunk from the best
level (never a whole level in memory).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from operators.core.errors import SlideReadError
from operators.wsi.slide.backend_choice import BACKENDS, BackendRequest, choose_backend
from operators.wsi.slide.backends import BackendName, OpenSlideBackend, SlideBackend, open_backend
from operators.wsi.slide.dicom_source import DicomSlideSource, is_dicom_file, scan_dicom_slide_folder
from operators.wsi.slide.dicom_workarounds import DicomLevelFixes, work_around_dicom_levels
from operators.wsi.slide.tiff_inspection import PLAUSIBLE_MPP, TiffInfo, inspect_tiff

logger = logging.getLogger(__name__)

SAME_LEVEL_TOLERANCE = 0.01  # a level whose downsample is within 1 % of the requested one is read as is
CHUNK_SOURCE_PIXELS = 2048  # read_at_downsample reads at most this many source pixels per side at a time
MAX_REGION_PIXELS = 1 << 28  # one read_region call: 256 Mpixel (768 MB RGB) at most


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level: its index, (width, height) in its own pixels, and downsample from level 0."""

    index: int
    size_xy: tuple[int, int]
    downsample: float


@dataclass(frozen=True)
class ResolvedSlide:
    """What opening a slide decided, once: enough to open it again cheaply.

    ``path`` is the slide as given (a file or a DICOM folder), ``opened_file`` the file the backend
    opens (a DICOM folder's level-0 instance for OpenSlide, the folder itself for wsidicom); ``size_xy`` is level 0 (width, height) in pixels; ``mpp_xy`` micrometres per level-0
    pixel, with ``mpp_source`` saying where it came from. ``dicom_fixes`` is set for a DICOM WSI read by OpenSlide.
    """

    path: Path
    backend: BackendName
    opened_file: Path
    size_xy: tuple[int, int]
    mpp_xy: tuple[float, float]
    mpp_source: str
    dicom_source: DicomSlideSource | None = None
    dicom_fixes: DicomLevelFixes | None = None

    @property
    def is_dicom(self) -> bool:
        return self.dicom_source is not None

    def open(self) -> SlideHandle:
        """A new handle on the same slide and backend; no backend choice, check or calibration again."""
        if self.dicom_fixes is not None:
            backend: SlideBackend = OpenSlideBackend(self.opened_file)
            self.dicom_fixes.apply(backend)
        else:
            backend = open_backend(self.backend, self.opened_file)
        return SlideHandle(self, backend)


class SlideHandle:
    """An open whole-slide image. Use as a context manager or call :meth:`close`.

    ``resolved`` is what opening it decided (backend, resolution, DICOM fixes); ``resolved.open()``
    opens the same slide again without deciding anything again.
    """

    def __init__(self, resolved: ResolvedSlide, backend: SlideBackend):
        self.resolved = resolved
        self.path = resolved.path
        self._backend = backend
        self.backend: BackendName = backend.name
        self.mpp_xy = resolved.mpp_xy
        self.mpp_source = resolved.mpp_source
        self.dicom_source = resolved.dicom_source
        self._closed = False
        self.levels: tuple[SlideLevel, ...] = tuple(
            SlideLevel(i, size, ds) for i, (size, ds) in enumerate(zip(backend.level_sizes_xy, backend.level_downsamples, strict=True))
        )

    # -- basics ----------------------------------------------------------------------------------

    @property
    def size_xy(self) -> tuple[int, int]:
        return self.levels[0].size_xy

    @property
    def opened_file(self) -> Path:
        """The file the backend opened (for a DICOM folder: its level-0 instance, or the folder for wsidicom)."""
        return self._backend.path

    def properties(self) -> dict[str, str]:
        """The backend's metadata properties (OpenSlide's ``openslide.*`` and vendor keys; empty for others)."""
        return self._backend.properties()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the backend (a second call does nothing)."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> SlideHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SlideHandle({str(self.path)!r}, backend={self.backend!r}, size_xy={self.size_xy}, levels={len(self.levels)}, mpp_xy={self.mpp_xy})"

    # -- reading ---------------------------------------------------------------------------------

    def read_region(self, location_xy_level0: tuple[int, int], level: int, size_xy: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) uint8 RGB of ``size_xy`` level pixels whose top-left corner is at a level-0 location."""
        width, height = _positive_size(size_xy)
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level {level} out of range: {self.path} has levels 0..{len(self.levels) - 1}")
        if width * height > MAX_REGION_PIXELS:
            raise ValueError(f"region {width}x{height} exceeds {MAX_REGION_PIXELS} pixels; read it in pieces")
        location = (int(location_xy_level0[0]), int(location_xy_level0[1]))
        return self._backend.read_rgb(location, level, (width, height))

    def best_level_for_downsample(self, downsample: float) -> int:
        """The level with the largest downsample not above ``downsample`` (within 1 %)."""
        candidates = [lv.index for lv in self.levels if lv.downsample <= downsample * (1 + SAME_LEVEL_TOLERANCE)]
        return max(candidates, key=lambda i: self.levels[i].downsample) if candidates else 0

    def read_at_downsample(self, location_xy_level0: tuple[float, float], downsample: float, size_xy: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) RGB at ``downsample`` from level 0: output pixel (i, j) covers level-0
        ``[x + i*ds, x + (i+1)*ds) x [y + j*ds, y + (j+1)*ds)``.

        Reads the best level (downsample <= requested) and box-filters it down, chunk by chunk, so a
        slide without a pyramid costs at most ``CHUNK_SOURCE_PIXELS``^2 source pixels at a time. A
        level within 1 % of the requested downsample is read as is when the output is one chunk.
        """
        width, height = _positive_size(size_xy)
        if not (math.isfinite(downsample) and downsample >= 1):
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        level = self.best_level_for_downsample(downsample)
        level_ds = self.levels[level].downsample
        x0, y0 = float(location_xy_level0[0]), float(location_xy_level0[1])
        same_level = abs(level_ds / downsample - 1) <= SAME_LEVEL_TOLERANCE
        if same_level and x0.is_integer() and y0.is_integer() and width * height <= CHUNK_SOURCE_PIXELS**2:
            return self.read_region((int(x0), int(y0)), level, (width, height))
        factor = downsample / level_ds  # source (level) pixels per output pixel
        step = max(1, int(CHUNK_SOURCE_PIXELS // factor))
        out = np.empty((height, width, 3), dtype=np.uint8)
        for oy in range(0, height, step):
            for ox in range(0, width, step):
                ow, oh = min(step, width - ox), min(step, height - oy)
                out[oy : oy + oh, ox : ox + ow] = self._resampled_chunk(
                    level, (x0 + ox * downsample, y0 + oy * downsample), factor, (ow, oh)
                )
        return out

    def _resampled_chunk(self, level: int, start_xy_level0: tuple[float, float], factor: float, size_xy: tuple[int, int]) -> np.ndarray:
        level_ds = self.levels[level].downsample
        sx0, sy0 = start_xy_level0[0] / level_ds, start_xy_level0[1] / level_ds  # fractional level coordinates
        sx1, sy1 = sx0 + size_xy[0] * factor, sy0 + size_xy[1] * factor
        location = (math.floor(start_xy_level0[0]), math.floor(start_xy_level0[1]))  # its level origin is <= (sx0, sy0) for every backend
        origin_x, origin_y = self._backend.level_origin_xy(location, level)
        read_w, read_h = math.ceil(sx1 - origin_x) + 1, math.ceil(sy1 - origin_y) + 1
        source = self.read_region(location, level, (read_w, read_h))
        box = (sx0 - origin_x, sy0 - origin_y, sx1 - origin_x, sy1 - origin_y)
        resized = Image.fromarray(source).resize(size_xy, Image.Resampling.BOX, box=box)
        return np.asarray(resized)

    def thumbnail(self, downsample: float) -> np.ndarray:
        """The whole slide at ``downsample``: (ceil(H/ds), ceil(W/ds), 3) RGB, built chunk by chunk."""
        width, height = self.size_xy
        return self.read_at_downsample((0, 0), downsample, (math.ceil(width / downsample), math.ceil(height / downsample)))

    # -- DICOM -----------------------------------------------------------------------------------

    def dicom_level_datasets(self, level: int) -> list[Dataset]:
        """Headers (no pixel data) of the DICOM instances that hold pyramid level ``level``.

        Raises ValueError when the slide is not DICOM or no instance has that level's size.
        """
        if self.dicom_source is None:
            raise ValueError(f"{self.path} is not a DICOM whole-slide image")
        size_xy = self.levels[level].size_xy
        instances = self.dicom_source.instances_of_size(size_xy)
        if not instances:
            raise ValueError(f"{self.path}: no DICOM VOLUME instance of size {size_xy} (level {level})")
        return [instance.header for instance in instances]


def _positive_size(size_xy: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size_xy[0]), int(size_xy[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"size_xy must be positive (width, height), got {tuple(size_xy)}")
    return width, height


# ---------------------------------------------------------------------------------------------
# Opening: every decision about a slide, once


def _plausible(mpp_xy: tuple[float, float] | None) -> bool:
    return mpp_xy is not None and all(math.isfinite(v) and PLAUSIBLE_MPP[0] <= v <= PLAUSIBLE_MPP[1] for v in mpp_xy)


def _resolve_mpp(
    name: Path, backend: SlideBackend, tiff: TiffInfo | None, dicom: DicomSlideSource | None, override: float | None
) -> tuple[tuple[float, float], str]:
    if override is not None:
        return (float(override), float(override)), "mpp_override"
    found: list[str] = []
    candidates: list[tuple[tuple[float, float] | None, str]] = []
    if dicom is not None:
        candidates.append((dicom.mpp_xy(), "DICOM PixelSpacing (PixelMeasuresSequence)"))
    if backend.name == "openslide":
        props = backend.properties()
        try:
            candidates.append(((float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])), "OpenSlide openslide.mpp-x/y"))
        except (KeyError, ValueError):
            pass
    if tiff is not None:
        candidates.append((tiff.mpp_xy, tiff.mpp_note))
    for mpp, source in candidates:
        if _plausible(mpp):
            return (float(mpp[0]), float(mpp[1])), source
        if mpp is not None:
            found.append(f"implausible {mpp[0]:.4g} x {mpp[1]:.4g} um/pixel from {source}")
    if tiff is not None and tiff.mpp_xy is None:
        found.append(tiff.mpp_note)
    detail = f" ({'; '.join(found)})" if found else ""
    raise SlideReadError(
        f"{name}: the slide's metadata gives no usable resolution{detail}; pass the level-0 micrometres per pixel as an mpp override"
    )


def _check_arguments(path: Path, mpp_override: float | None, backend: str) -> None:
    if backend not in BACKENDS:
        raise SlideReadError(f"{path}: unknown slide reader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if mpp_override is not None and not (math.isfinite(mpp_override) and mpp_override > 0):
        raise SlideReadError(f"{path}: mpp override must be a positive number of micrometres per pixel, got {mpp_override}")
    if not path.exists():
        raise SlideReadError(f"{path}: no such file or folder")


def _open_chosen(path: Path, backend: BackendRequest) -> tuple[SlideBackend, TiffInfo | None, DicomSlideSource | None]:
    """The backend chosen for the slide, with what was learnt choosing it (TIFF layout or DICOM instances)."""
    if path.is_dir() or is_dicom_file(path):
        dicom = scan_dicom_slide_folder(path if path.is_dir() else path.parent)
        return choose_backend(path, backend, None, dicom), None, dicom
    if path.stat().st_size == 0:
        raise SlideReadError(f"{path}: the file is empty")
    tiff = inspect_tiff(path)
    return choose_backend(path, backend, tiff), tiff, None


def open_slide(path: Path, mpp_override: float | None = None, backend: BackendRequest = "auto") -> SlideHandle:
    """Open a slide file or a folder holding one DICOM WSI, deciding everything about it once.

    ``backend`` is "auto", "cucim", "openslide" or "tifffile". ``mpp_override`` (micrometres per
    level-0 pixel) replaces the metadata's resolution. Raises :class:`SlideReadError` (naming the
    file) for anything that is not a readable slide, and when no resolution is known. The handle's
    ``resolved`` opens the slide again without deciding anything again.
    """
    path = Path(path)
    _check_arguments(path, mpp_override, backend)
    opened, tiff, dicom = _open_chosen(path, backend)
    try:
        fixes = work_around_dicom_levels(path, dicom, opened) if dicom is not None and isinstance(opened, OpenSlideBackend) else None
        mpp_xy, mpp_source = _resolve_mpp(path, opened, tiff, dicom, mpp_override)
    except BaseException:
        opened.close()
        raise
    resolved = ResolvedSlide(path, opened.name, opened.path, opened.level_sizes_xy[0], mpp_xy, mpp_source, dicom, fixes)
    handle = SlideHandle(resolved, opened)
    logger.info(
        "Opened %s with %s: level 0 %s, %d level(s), %.4g x %.4g um/pixel (%s)",
        path,
        handle.backend,
        handle.size_xy,
        len(handle.levels),
        mpp_xy[0],
        mpp_xy[1],
        mpp_source,
    )
    return handle
