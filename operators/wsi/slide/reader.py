"""Open a whole-slide image (SVS, tiled or plain TIFF, anything OpenSlide reads, or a DICOM WSI folder).

Conventions: locations are (x, y) in the slide's level-0 pixel frame; sizes are (width, height);
``mpp_xy`` is micrometres per level-0 pixel along x and y; images come back as (h, w, 3) uint8 RGB
with the area outside the slide filled with white glass (or OpenSlide's background colour).

Backend choice for ``backend="auto"`` (measured here, see the comment above ``PREFER_CUCIM``):

* a DICOM WSI folder -> OpenSlide (cuCIM 23.10 does not open DICOM; tifffile does not either).
  Before use, levels whose edge frames are smaller than the tile size (OpenSlide cannot decode
  them) are left out, and levels labelled RGB whose JPEG tiles are YCbCr are converted; both
  defects are in wsidicomizer 0.26.1's generated levels;
* a TIFF that cuCIM reads correctly (tiled 8-bit RGB, JPEG/deflate/LZW/none, no predictor; its
  first pixels are checked against tifffile's) -> cuCIM, with its per-process tile cache switched on;
* anything else OpenSlide opens -> OpenSlide;
* a TIFF OpenSlide refuses (stripped, JPEG 2000 or WebP tiles) -> the tifffile backend, which
  decodes only the strips or tiles a read touches.

A slide without pyramid levels is served by :meth:`SlideHandle.read_at_downsample` and
:meth:`SlideHandle.thumbnail`, which build the low-resolution image chunk by chunk from the best
level (never a whole level in memory).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from operators.core.errors import SlideReadError
from operators.wsi.slide.backends import (
    PLAUSIBLE_MPP,
    CuCIMBackend,
    OpenSlideBackend,
    SlideBackend,
    TifffileBackend,
    TiffInfo,
    inspect_tiff,
    optional_available,
    ycbcr_to_rgb,
)
from operators.wsi.slide.dicom_source import JPEG_BASELINE_SYNTAXES, DicomSlideSource, is_dicom_file, scan_dicom_slide_folder

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "cucim", "openslide", "tifffile")
# Why cuCIM comes first: seconds for 1000 224x224 level-0 patches through SlideHandle.read_region,
# median of 3 interleaved runs on a shared 2-core CPU machine (load ~4.5, so +-30 %), no GPU.
# "random" = uniform random locations; "grid64" = the app's stride-64 raster order.
#                              cuCIM   cuCIM+cache  OpenSlide  tifffile(LRU)  tifffile, no cache
#   cmu_small_region.svs random 1.25      0.10        1.68        0.12            1.11
#   (Aperio, 240 JPEG)   grid64 0.74      0.05        1.27        0.05            0.75
#   libvips pyramid      random 1.31      0.15        1.85        0.10            1.88
#   (256 JPEG tiles)     grid64 1.24      0.10        2.06        0.11            1.44
# OpenSlide's own tile cache (32 MiB default) holds these small slides whole, yet each read costs
# ~1.3-2 ms; with its cache off it took 3.2 s (SVS) and 4.8 s (pyramid). A cache miss (a large
# slide) costs about the uncached column. cuCIM is faster in both regimes, but cuCIM 23.10 crashes
# (SIGSEGV in read_region) when a second Holoscan operator thread reads after another thread has
# used it, which is how the WSI app runs; so "auto" prefers OpenSlide and cuCIM is used only when
# asked for by name. The tifffile backend (own LRU tile cache) serves only files nothing else reads.
PREFER_CUCIM = False
SAME_LEVEL_TOLERANCE = 0.01  # a level whose downsample is within 1 % of the requested one is read as is
CHUNK_SOURCE_PIXELS = 2048  # read_at_downsample reads at most this many source pixels per side at a time
MAX_REGION_PIXELS = 1 << 28  # one read_region call: 256 Mpixel (768 MB RGB) at most
_CUCIM_CHECK_SIZE = 64
_CUCIM_CHECK_MEAN_ABS = 2.0
_COLOUR_CHECK_MEAN_ABS = 3.0


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level: its index, (width, height) in its own pixels, and downsample from level 0."""

    index: int
    size_xy: tuple[int, int]
    downsample: float


class SlideHandle:
    """An open whole-slide image. Use as a context manager or call :meth:`close`."""

    def __init__(
        self, path: Path, backend: SlideBackend, mpp_xy: tuple[float, float], mpp_source: str, dicom_source: DicomSlideSource | None = None
    ):
        self.path = path
        self._backend = backend
        self.backend: str = backend.name
        self.mpp_xy = mpp_xy
        self.mpp_source = mpp_source
        self.dicom_source = dicom_source
        self.levels: tuple[SlideLevel, ...] = tuple(
            SlideLevel(i, size, ds) for i, (size, ds) in enumerate(zip(backend.level_sizes_xy, backend.level_downsamples, strict=True))
        )

    # -- basics ----------------------------------------------------------------------------------

    @property
    def size_xy(self) -> tuple[int, int]:
        return self.levels[0].size_xy

    @property
    def opened_file(self) -> Path:
        """The file the backend opened (for a DICOM folder: its level-0 instance)."""
        return self._backend.path

    def properties(self) -> dict[str, str]:
        """The backend's metadata properties (OpenSlide's ``openslide.*`` and vendor keys; empty for others)."""
        return self._backend.properties()

    def close(self) -> None:
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
# Opening


def _cucim_agrees_with_tifffile(path: Path, backend: CuCIMBackend) -> bool:
    """Guard against silent mis-decoding: a patch at the centre of level 0 and of the last level must match tifffile's."""
    reference = TifffileBackend(path)
    try:
        for level in (0, len(backend.level_sizes_xy) - 1):
            width, height = backend.level_sizes_xy[level]
            size = (min(_CUCIM_CHECK_SIZE, width), min(_CUCIM_CHECK_SIZE, height))
            location = (
                int((width - size[0]) // 2 * backend.level_downsamples[level]),
                int((height - size[1]) // 2 * backend.level_downsamples[level]),
            )
            ours = backend.read_rgb(location, level, size).astype(np.int16)
            theirs = reference.read_rgb(location, level, size).astype(np.int16)
            if np.abs(ours - theirs).mean() > _CUCIM_CHECK_MEAN_ABS:
                return False
    except SlideReadError:
        return False
    finally:
        reference.close()
    return True


def _open_cucim(path: Path, tiff: TiffInfo, checked: bool) -> CuCIMBackend | str:
    """A cuCIM backend, or why not."""
    refusal = tiff.cucim_refusal()
    if refusal:
        return refusal
    if not optional_available("cucim"):
        return "cucim is not installed"
    backend = CuCIMBackend(path)
    expected = tuple(level.size_xy for level in tiff.levels)
    if backend.level_sizes_xy != expected:
        backend.close()
        return f"cuCIM sees levels {backend.level_sizes_xy}, tifffile {expected}"
    if checked and not _cucim_agrees_with_tifffile(path, backend):
        backend.close()
        return "cuCIM's pixels differ from tifffile's on a test patch"
    return backend


def _choose_backend(path: Path, tiff: TiffInfo | None, backend: str) -> SlideBackend:
    if backend == "openslide":
        return OpenSlideBackend(path)
    if backend == "cucim":
        if tiff is None:
            raise SlideReadError(f"{path}: cuCIM reads only TIFF-based slides here; use backend 'openslide' or 'auto'")
        opened = _open_cucim(path, tiff, checked=False)
        if isinstance(opened, str):
            raise SlideReadError(f"{path}: cuCIM cannot read it correctly: {opened}")
        return opened
    if backend == "tifffile":
        if tiff is None:
            raise SlideReadError(f"{path}: not a TIFF, so the tifffile backend cannot read it")
        refusal = tiff.tifffile_refusal()
        if refusal:
            raise SlideReadError(f"{path}: the tifffile backend cannot read it: {refusal}")
        return TifffileBackend(path)

    reasons: list[str] = []
    if tiff is not None and PREFER_CUCIM:
        opened = _open_cucim(path, tiff, checked=True)
        if not isinstance(opened, str):
            return opened
        reasons.append(f"cuCIM: {opened}")
    if OpenSlideBackend.can_open(path):
        try:
            return OpenSlideBackend(path)
        except SlideReadError as error:
            reasons.append(str(error))
    elif optional_available("openslide"):
        reasons.append("OpenSlide does not recognise the format")
    else:
        reasons.append("openslide is not installed")
    if tiff is not None:
        refusal = tiff.tifffile_refusal()
        if refusal is None:
            return TifffileBackend(path)
        reasons.append(f"tifffile: {refusal}")
        raise SlideReadError(f"{path}: TIFF that no backend can read ({'; '.join(reasons)})")
    raise SlideReadError(f"{path}: not a whole-slide image (not a TIFF, not a DICOM WSI; {'; '.join(reasons)})")


def _malformed_dicom_levels(folder: Path, dicom: DicomSlideSource, backend: OpenSlideBackend) -> dict[int, str]:
    """Levels whose edge tiles are not Columns x Rows frames, which OpenSlide refuses to decode.

    wsidicomizer 0.26.1 (``--add-missing-levels``) writes a generated level's last column or row of
    tiles cropped (e.g. 240x120 in a 240x240 grid) when the level below has an odd number of tiles;
    DICOM requires every frame to be Columns x Rows, and OpenSlide fails with "Dimensional mismatch
    reading JPEG" on any read that touches one. The three corner frames of each level are checked
    (their JPEG headers only).
    """
    malformed: dict[int, str] = {}
    for level, size_xy in enumerate(backend.level_sizes_xy):
        instances = dicom.instances_of_size(size_xy)
        if level == 0 or len(instances) != 1 or not instances[0].first_frame_is_top_left_tile:
            continue
        instance = instances[0]
        columns, rows = instance.tile_grid_xy
        tile_xy = (int(instance.header.Columns), int(instance.header.Rows))
        try:
            frames = instance.read_frames({columns - 1, (rows - 1) * columns, rows * columns - 1})
            sizes = {index: Image.open(io.BytesIO(data)).size for index, data in (frames or {}).items()}
        except Exception as error:  # an undecodable header: leave the level to OpenSlide
            logger.debug("%s: could not check the frames of level %d (%s)", folder, level, error)
            continue
        wrong = {index: size for index, size in sorted(sizes.items()) if tuple(size) != tile_xy}
        if wrong:
            malformed[level] = ", ".join(f"frame {i + 1} is {w}x{h}" for i, (w, h) in wrong.items()) + f", not {tile_xy[0]}x{tile_xy[1]}"
    return malformed


def _calibrate_dicom_colours(folder: Path, dicom: DicomSlideSource, backend: OpenSlideBackend) -> None:
    """Find levels labelled RGB whose JPEG frames are really YCbCr, and have the backend convert them.

    wsidicomizer 0.26.1 (``--add-missing-levels``) writes the levels it generates as JFIF YCbCr
    JPEG but labels them PhotometricInterpretation RGB; OpenSlide 4.0 trusts the label and returns
    YCbCr values as RGB (false colours). Per level, the first tile decoded by Pillow (which follows
    the JPEG's own JFIF/Adobe markers) is compared with OpenSlide's pixels, as is and converted.
    """
    fixed = []
    for level, size_xy in enumerate(backend.level_sizes_xy):
        instances = dicom.instances_of_size(size_xy)
        if not instances:
            continue
        header = instances[0].header
        if (
            str(header.get("PhotometricInterpretation", "")) != "RGB"
            or str(header.file_meta.get("TransferSyntaxUID", "")) not in JPEG_BASELINE_SYNTAXES
        ):
            continue
        if not instances[0].first_frame_is_top_left_tile:
            continue
        try:
            frame = (instances[0].read_frames({0}) or {}).get(0)
            if frame is None:
                continue
            tile = Image.open(io.BytesIO(frame))
            if tile.mode != "RGB":
                continue
            expected = np.asarray(tile)[: size_xy[1], : size_xy[0]].astype(np.int16)
            raw = backend.read_rgb_uncorrected((0, 0), level, (expected.shape[1], expected.shape[0]))
        except Exception as error:  # a colour check must not make a readable slide unreadable
            logger.warning("%s: could not check the colours of level %d (%s: %s)", folder, level, type(error).__name__, error)
            continue
        as_is = float(np.abs(raw.astype(np.int16) - expected).mean())
        converted = float(np.abs(ycbcr_to_rgb(raw).astype(np.int16) - expected).mean())
        if as_is <= _COLOUR_CHECK_MEAN_ABS:
            continue
        if converted <= _COLOUR_CHECK_MEAN_ABS:
            fixed.append(level)
        else:
            logger.warning("%s: level %d: OpenSlide's pixels differ from the decoded JPEG tile (mean |diff| %.1f)", folder, level, as_is)
    if fixed:
        backend.ycbcr_levels = frozenset(fixed)
        logger.warning(
            "%s: pyramid level(s) %s are labelled RGB but hold YCbCr (JFIF) JPEG tiles; converting OpenSlide's pixels to RGB",
            folder,
            ", ".join(f"{level} {backend.level_sizes_xy[level]}" for level in fixed),
        )


def _check_dicom_levels(path: Path, dicom: DicomSlideSource, opened: OpenSlideBackend) -> None:
    if opened.level_sizes_xy != dicom.level_sizes_xy:
        logger.warning(
            "%s: OpenSlide levels %s differ from the DICOM VOLUME instances %s", path, opened.level_sizes_xy, dicom.level_sizes_xy
        )
    malformed = _malformed_dicom_levels(path, dicom, opened)
    for level, reason in malformed.items():
        logger.warning(
            "%s: leaving out pyramid level %d %s, which OpenSlide cannot read: %s (lower resolutions are computed from the levels kept)",
            path,
            level,
            opened.level_sizes_xy[level],
            reason,
        )
    if malformed:
        opened.hide_levels(set(malformed))
    _calibrate_dicom_colours(path, dicom, opened)


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


def open_slide(path: Path, mpp_override: float | None = None, backend: str = "auto") -> SlideHandle:
    """Open a slide file or a folder holding one DICOM WSI.

    ``backend`` is "auto", "cucim", "openslide" or "tifffile". ``mpp_override`` (micrometres per
    level-0 pixel) replaces the metadata's resolution. Raises :class:`SlideReadError` (naming the
    file) for anything that is not a readable slide, and when no resolution is known.
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise SlideReadError(f"{path}: unknown slide reader backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if mpp_override is not None and not (math.isfinite(mpp_override) and mpp_override > 0):
        raise SlideReadError(f"{path}: mpp override must be a positive number of micrometres per pixel, got {mpp_override}")
    if not path.exists():
        raise SlideReadError(f"{path}: no such file or folder")

    dicom: DicomSlideSource | None = None
    tiff: TiffInfo | None = None
    if path.is_dir() or is_dicom_file(path):
        dicom = scan_dicom_slide_folder(path if path.is_dir() else path.parent)
        if backend not in ("auto", "openslide"):
            raise SlideReadError(f"{path}: a DICOM WSI is read with OpenSlide only, not {backend}")
        opened = OpenSlideBackend(dicom.level0_path)
    else:
        if path.stat().st_size == 0:
            raise SlideReadError(f"{path}: the file is empty")
        tiff = inspect_tiff(path)
        opened = _choose_backend(path, tiff, backend)
    try:
        if dicom is not None:
            _check_dicom_levels(path, dicom, opened)
        mpp_xy, mpp_source = _resolve_mpp(path, opened, tiff, dicom, mpp_override)
    except BaseException:
        opened.close()
        raise
    handle = SlideHandle(path, opened, mpp_xy, mpp_source, dicom)
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
