"""Work-arounds for defects of DICOM WSI pyramids that OpenSlide trusts, found once per slide.

Both defects are in the levels wsidicomizer 0.26.1 generates (``--add-missing-levels``):

* a generated level's last column or row of tiles is cropped (e.g. 240x120 in a 240x240 grid) when
  the level below has an odd number of tiles; DICOM requires every frame to be Columns x Rows, and
  OpenSlide fails with "Dimensional mismatch reading JPEG" on any read that touches one. Such
  levels are left out (lower resolutions are then computed from the levels kept);
* generated levels are JFIF YCbCr JPEG labelled PhotometricInterpretation RGB; OpenSlide 4.0 trusts
  the label and returns YCbCr values as RGB (false colours). Such levels are converted to RGB.

:func:`work_around_dicom_levels` checks a freshly opened backend and returns the fixes as a
:class:`DicomLevelFixes`, which :meth:`DicomLevelFixes.apply` puts on any backend opened again on
the same slide without checking anything again.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from operators.core.errors import SlideReadError
from operators.wsi.slide.backends import OpenSlideBackend, ycbcr_to_rgb
from operators.wsi.slide.dicom_source import JPEG_BASELINE_SYNTAXES, DicomSlideSource, DicomWsiInstance

logger = logging.getLogger(__name__)

_COLOUR_CHECK_MEAN_ABS = 3.0
# What reading a frame's bytes (our own parser, pydicom) and decoding them (Pillow's JPEG plugin) raise on a bad frame.
_FRAME_ERRORS = (OSError, ValueError, SyntaxError, struct.error, InvalidDicomError, Image.DecompressionBombError)


@dataclass(frozen=True)
class DicomLevelFixes:
    """How an OpenSlide backend of one DICOM WSI must be adjusted.

    ``hidden_levels`` are OpenSlide's level indices left out; ``ycbcr_levels`` are indices of the
    levels kept whose pixels are converted from YCbCr to RGB.
    """

    hidden_levels: frozenset[int] = frozenset()
    ycbcr_levels: frozenset[int] = frozenset()

    def apply(self, backend: OpenSlideBackend) -> None:
        """Adjust a freshly opened backend (before any read)."""
        if self.hidden_levels:
            backend.hide_levels(set(self.hidden_levels))
        backend.ycbcr_levels = self.ycbcr_levels


def malformed_dicom_levels(folder: Path, dicom: DicomSlideSource, backend: OpenSlideBackend) -> dict[int, str]:
    """Levels whose edge tiles are not Columns x Rows frames (module docstring), and what is wrong.

    The three corner frames of each level are checked (their JPEG headers only).
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
        except _FRAME_ERRORS as error:  # an undecodable header: leave the level to OpenSlide
            logger.debug("%s: could not check the frames of level %d (%s)", folder, level, error)
            continue
        wrong = {index: size for index, size in sorted(sizes.items()) if tuple(size) != tile_xy}
        if wrong:
            malformed[level] = ", ".join(f"frame {i + 1} is {w}x{h}" for i, (w, h) in wrong.items()) + f", not {tile_xy[0]}x{tile_xy[1]}"
    return malformed


def _labelled_rgb_jpeg(instance: DicomWsiInstance) -> bool:
    """Baseline JPEG labelled RGB, tiled from the top-left corner: a level whose first frame can be checked."""
    header: Dataset = instance.header
    return (
        str(header.get("PhotometricInterpretation", "")) == "RGB"
        and str(header.file_meta.get("TransferSyntaxUID", "")) in JPEG_BASELINE_SYNTAXES
        and instance.first_frame_is_top_left_tile
    )


def _first_tile_pair(instance: DicomWsiInstance, backend: OpenSlideBackend, level: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(Pillow's decoding of the level's first frame, OpenSlide's uncorrected pixels there) as int16, or None when not RGB."""
    frame = (instance.read_frames({0}) or {}).get(0)
    if frame is None:
        return None
    tile = Image.open(io.BytesIO(frame))
    if tile.mode != "RGB":
        return None
    width, height = backend.level_sizes_xy[level]
    expected = np.asarray(tile)[:height, :width].astype(np.int16)
    raw = backend.read_rgb_uncorrected((0, 0), level, (expected.shape[1], expected.shape[0]))
    return expected, raw


def _holds_ycbcr(folder: Path, level: int, expected: np.ndarray, raw: np.ndarray) -> bool:
    """True when OpenSlide's pixels match the decoded tile only once converted from YCbCr."""
    as_is = float(np.abs(raw.astype(np.int16) - expected).mean())
    if as_is <= _COLOUR_CHECK_MEAN_ABS:
        return False
    converted = float(np.abs(ycbcr_to_rgb(raw).astype(np.int16) - expected).mean())
    if converted <= _COLOUR_CHECK_MEAN_ABS:
        return True
    logger.warning("%s: level %d: OpenSlide's pixels differ from the decoded JPEG tile (mean |diff| %.1f)", folder, level, as_is)
    return False


def ycbcr_dicom_levels(folder: Path, dicom: DicomSlideSource, backend: OpenSlideBackend) -> frozenset[int]:
    """Levels labelled RGB whose JPEG frames are really YCbCr (module docstring).

    Per level, the first tile decoded by Pillow (which follows the JPEG's own JFIF/Adobe markers) is
    compared with OpenSlide's pixels, as is and converted.
    """
    fixed = set()
    for level, size_xy in enumerate(backend.level_sizes_xy):
        instances = dicom.instances_of_size(size_xy)
        if not instances or not _labelled_rgb_jpeg(instances[0]):
            continue
        try:
            pair = _first_tile_pair(instances[0], backend, level)
        except (*_FRAME_ERRORS, SlideReadError) as error:  # a colour check must not make a readable slide unreadable
            logger.warning("%s: could not check the colours of level %d (%s: %s)", folder, level, type(error).__name__, error)
            continue
        if pair is not None and _holds_ycbcr(folder, level, *pair):
            fixed.add(level)
    if fixed:
        logger.warning(
            "%s: pyramid level(s) %s are labelled RGB but hold YCbCr (JFIF) JPEG tiles; converting OpenSlide's pixels to RGB",
            folder,
            ", ".join(f"{level} {backend.level_sizes_xy[level]}" for level in sorted(fixed)),
        )
    return frozenset(fixed)


def work_around_dicom_levels(path: Path, dicom: DicomSlideSource, backend: OpenSlideBackend) -> DicomLevelFixes:
    """Find the defects of a DICOM WSI's levels, fix ``backend`` (just opened) and return the fixes."""
    if backend.level_sizes_xy != dicom.level_sizes_xy:
        logger.warning(
            "%s: OpenSlide levels %s differ from the DICOM VOLUME instances %s", path, backend.level_sizes_xy, dicom.level_sizes_xy
        )
    malformed = malformed_dicom_levels(path, dicom, backend)
    for level, reason in malformed.items():
        logger.warning(
            "%s: leaving out pyramid level %d %s, which OpenSlide cannot read: %s (lower resolutions are computed from the levels kept)",
            path,
            level,
            backend.level_sizes_xy[level],
            reason,
        )
    if malformed:
        backend.hide_levels(set(malformed))
    fixes = DicomLevelFixes(frozenset(malformed), ycbcr_dicom_levels(path, dicom, backend))
    backend.ycbcr_levels = fixes.ycbcr_levels
    return fixes
