"""A DICOM whole-slide image given as a folder of instances: check the folder, group the pyramid levels.

A DICOM WSI (VL Whole Slide Microscopy Image Storage) is one series: one instance per pyramid
level (or several, for concatenations), plus optional THUMBNAIL, LABEL and OVERVIEW images.
OpenSlide 4 reads the whole slide when pointed at any one instance file of the folder; this module
checks first that the folder holds exactly one such slide and nothing else, that its Study, Series,
SOP Instance, Frame of Reference and Pyramid UIDs are DICOM UIDs (digits and dots, at most 64
characters: they are copied into the results' references), and keeps every
instance's header (pixel data not read) so that a DICOM SEG can later reference the level whose
pixel grid matches a probability map.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from operators.core.errors import SlideReadError
from operators.dicom.uids import uid_problem

logger = logging.getLogger(__name__)

VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
_IGNORED_NAMES = {"DICOMDIR"}  # a media directory next to the instances is harmless
_LISTED_PROBLEMS = 5
JPEG_BASELINE_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
_PIXEL_DATA_UNDEFINED_LENGTH = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_TAG = b"\xfe\xff\x00\xe0"
REQUIRED_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
UID_KEYWORDS = (*REQUIRED_UID_KEYWORDS, "FrameOfReferenceUID", "PyramidUID")


@dataclass(frozen=True)
class DicomWsiInstance:
    """One instance file of the slide and its header (no pixel data)."""

    path: Path
    header: Dataset

    @property
    def image_type(self) -> str:
        """Value 3 of ImageType: VOLUME, THUMBNAIL, LABEL or OVERVIEW ('' when absent)."""
        values = list(self.header.get("ImageType", []))
        return str(values[2]).upper() if len(values) > 2 else ""

    @property
    def total_size_xy(self) -> tuple[int, int]:
        return int(self.header.TotalPixelMatrixColumns), int(self.header.TotalPixelMatrixRows)

    @property
    def first_frame_is_top_left_tile(self) -> bool:
        if str(self.header.get("DimensionOrganizationType", "")).upper() == "TILED_FULL":
            return True
        try:
            position = self.header.PerFrameFunctionalGroupsSequence[0].PlanePositionSlideSequence[0]
            return int(position.ColumnPositionInTotalImagePixelMatrix) == 1 and int(position.RowPositionInTotalImagePixelMatrix) == 1
        except (AttributeError, IndexError, KeyError):
            return False

    @property
    def tile_grid_xy(self) -> tuple[int, int]:
        """Number of (columns, rows) of tiles in the total pixel matrix."""
        width, height = self.total_size_xy
        return -(-width // int(self.header.Columns)), -(-height // int(self.header.Rows))

    def read_frames(self, indices: set[int]) -> dict[int, bytes] | None:
        """Encoded bytes of the wanted frames (0-based), reading item headers and only those fragments.

        None when the pixel data is not encapsulated one fragment per frame.
        """
        with open(self.path, "rb") as stream:
            header = pydicom.dcmread(stream, stop_before_pixels=True)
            if stream.read(len(_PIXEL_DATA_UNDEFINED_LENGTH)) != _PIXEL_DATA_UNDEFINED_LENGTH:
                return None
            frames = int(header.get("NumberOfFrames", 1) or 1)
            offsets: dict[int, tuple[int, int]] = {}
            position, index = stream.tell(), -1  # item -1 is the basic offset table
            while True:
                stream.seek(position)
                item = stream.read(8)
                if len(item) < 8 or item[:4] != _ITEM_TAG:
                    break
                length = struct.unpack("<I", item[4:])[0]
                if index in indices:
                    offsets[index] = (position + 8, length)
                index, position = index + 1, position + 8 + length
            if index != frames:
                return None
            found = {}
            for frame, (offset, length) in offsets.items():
                stream.seek(offset)
                found[frame] = stream.read(length)
            return found


@dataclass(frozen=True)
class DicomSlideSource:
    """The DICOM instances of one slide, grouped by pyramid level (largest first)."""

    folder: Path
    study_instance_uid: str
    series_instance_uid: str
    pyramid_uid: str | None
    volume_levels: tuple[tuple[DicomWsiInstance, ...], ...]
    other_instances: tuple[DicomWsiInstance, ...]

    @property
    def level0_path(self) -> Path:
        """The file OpenSlide is pointed at: the first instance of the full-resolution level."""
        return self.volume_levels[0][0].path

    @property
    def level_sizes_xy(self) -> tuple[tuple[int, int], ...]:
        return tuple(instances[0].total_size_xy for instances in self.volume_levels)

    def instances_of_size(self, size_xy: tuple[int, int]) -> tuple[DicomWsiInstance, ...]:
        for instances in self.volume_levels:
            if instances[0].total_size_xy == tuple(size_xy):
                return instances
        return ()

    def mpp_xy(self) -> tuple[float, float] | None:
        """Level-0 (x, y) micrometres per pixel from PixelSpacing (row spacing, column spacing) in mm."""
        header = self.volume_levels[0][0].header
        for group_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            groups = header.get(group_name)
            if not groups:
                continue
            measures = groups[0].get("PixelMeasuresSequence")
            spacing = measures[0].get("PixelSpacing") if measures else None
            if spacing is not None and len(spacing) == 2:
                row_mm, column_mm = float(spacing[0]), float(spacing[1])
                if all(math.isfinite(v) and v > 0 for v in (row_mm, column_mm)):
                    return column_mm * 1000.0, row_mm * 1000.0
        return None


def _pixel_data_problem(stream, header: Dataset, file_size: int) -> str | None:
    """Why the pixel data after the header (``stream`` positioned at it) is incomplete, or None."""
    start = stream.tell()
    head = stream.read(12)
    if head[:4] != b"\xe0\x7f\x10\x00":
        return "no pixel data"
    if head == _PIXEL_DATA_UNDEFINED_LENGTH:  # encapsulated: items up to the sequence delimiter
        stream.seek(file_size - 8)
        if stream.read(8) == _SEQUENCE_DELIMITER:
            return None
        position = start + 12
        while True:
            stream.seek(position)
            item = stream.read(8)
            if len(item) < 8:
                return f"pixel data ends without its sequence delimiter at byte {position}"
            if item[:4] == _SEQUENCE_DELIMITER[:4]:
                return None
            if item[:4] != _ITEM_TAG:
                return f"corrupt pixel data item at byte {position}"
            position += 8 + struct.unpack("<I", item[4:])[0]
            if position > file_size:
                return f"a pixel data fragment extends to byte {position}"
    frames = int(header.get("NumberOfFrames", 1) or 1)
    expected = int(header.Rows) * int(header.Columns) * int(header.get("SamplesPerPixel", 1)) * frames * int(header.BitsAllocated) // 8
    available = file_size - start - 12
    return None if available >= expected else f"native pixel data needs {expected} bytes, {available} present"


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICM preamble (cheap: reads 132 bytes)."""
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _describe(problems: list[str]) -> str:
    shown = "; ".join(problems[:_LISTED_PROBLEMS])
    more = len(problems) - _LISTED_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def _slide_entries(folder: Path) -> list[Path]:
    """The folder's entries, less hidden files and a DICOMDIR; refuses an empty folder."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED_NAMES)
    if not entries:
        raise SlideReadError(f"{folder}: the folder is empty; expected the DICOM instances of one whole-slide image")
    return entries


def _read_instance(entry: Path) -> DicomWsiInstance | str:
    """The entry as a complete whole-slide microscopy instance (header only), or why it is not one."""
    if not entry.is_file():
        return f"{entry.name} is a folder"
    try:
        with open(entry, "rb") as stream:
            header = pydicom.dcmread(stream, stop_before_pixels=True)
            if str(header.get("SOPClassUID", "")) != VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE:
                sop_class = header.get("SOPClassUID")
                name = getattr(sop_class, "name", None) or str(sop_class or "no SOPClassUID")
                return f"{entry.name} is a DICOM {name}, not a whole-slide microscopy image"
            truncated = _pixel_data_problem(stream, header, entry.stat().st_size)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, struct.error) as error:
        return f"{entry.name} is not a readable DICOM file ({type(error).__name__})"
    if truncated:
        return f"{entry.name} is truncated or corrupt ({truncated})"
    return DicomWsiInstance(entry, header)


def _uid_problems(instances: list[DicomWsiInstance]) -> list[str]:
    """Why the instances' identifying UIDs are not DICOM UIDs (they go into the results' references):
    one entry per attribute and value, with how many instances carry it."""
    found: dict[tuple[str, str], list[str]] = {}
    for instance in instances:
        for keyword in UID_KEYWORDS:
            if keyword in instance.header or keyword in REQUIRED_UID_KEYWORDS:
                found.setdefault((keyword, str(instance.header.get(keyword, "") or "")), []).append(instance.path.name)
    problems = []
    for (keyword, value), names in found.items():
        if problem := uid_problem(value):
            where = f"in {names[0]}" if len(names) == 1 else f"in {len(names)} instances, e.g. {names[0]}"
            problems.append(f"{keyword} {value!r} is not a DICOM UID ({problem}; {where})")
    return problems


def _one_series_and_pyramid(folder: Path, instances: list[DicomWsiInstance]) -> tuple[str, str | None]:
    """The instances' SeriesInstanceUID and PyramidUID (None when absent); refuses several of either."""
    series = sorted({str(i.header.get("SeriesInstanceUID", "")) for i in instances})
    if len(series) > 1:
        raise SlideReadError(f"{folder}: holds {len(series)} DICOM series ({', '.join(series)}); put each slide in its own folder")
    pyramids = sorted({str(i.header.PyramidUID) for i in instances if "PyramidUID" in i.header})
    if len(pyramids) > 1:
        raise SlideReadError(
            f"{folder}: holds {len(pyramids)} pyramids (PyramidUID {', '.join(pyramids)}); put each slide in its own folder"
        )
    return series[0], pyramids[0] if pyramids else None


def _volume_levels(folder: Path, instances: list[DicomWsiInstance]) -> tuple[tuple[DicomWsiInstance, ...], ...]:
    """VOLUME instances grouped by total pixel matrix size, largest first, each level in concatenation order."""
    volumes = [i for i in instances if i.image_type == "VOLUME"]
    if not volumes:
        kinds = sorted({i.image_type or "no ImageType" for i in instances})
        raise SlideReadError(f"{folder}: no VOLUME image (the slide's pixels) among the DICOM instances, only {', '.join(kinds)}")
    missing = [i.path.name for i in volumes if "TotalPixelMatrixColumns" not in i.header or "TotalPixelMatrixRows" not in i.header]
    if missing:
        raise SlideReadError(f"{folder}: VOLUME instance(s) without TotalPixelMatrixColumns/Rows: {_describe(missing)}")
    by_size: dict[tuple[int, int], list[DicomWsiInstance]] = {}
    for instance in volumes:
        by_size.setdefault(instance.total_size_xy, []).append(instance)
    ordered = sorted(by_size.items(), key=lambda item: -item[0][0] * item[0][1])
    return tuple(
        tuple(sorted(group, key=lambda i: (int(i.header.get("ConcatenationFrameOffsetNumber", 0) or 0), i.path.name)))
        for _, group in ordered
    )


def scan_dicom_slide_folder(folder: Path) -> DicomSlideSource:
    """Check that ``folder`` holds the instances of exactly one DICOM WSI, and group them by level.

    Hidden files and a DICOMDIR are ignored; any other entry that is not a VL Whole Slide
    Microscopy instance of the same series and pyramid makes the folder unusable.
    """
    folder = Path(folder)
    read = [_read_instance(entry) for entry in _slide_entries(folder)]
    problems = [item for item in read if isinstance(item, str)]
    if problems:
        raise SlideReadError(
            f"{folder}: not usable as one DICOM whole-slide image (the folder must hold only that slide's instances): {_describe(problems)}"
        )
    instances = [item for item in read if isinstance(item, DicomWsiInstance)]
    bad_uids = _uid_problems(instances)
    if bad_uids:
        raise SlideReadError(f"{folder}: {_describe(bad_uids)}")
    series, pyramid = _one_series_and_pyramid(folder, instances)
    levels = _volume_levels(folder, instances)
    others = tuple(i for i in instances if i.image_type != "VOLUME")
    source = DicomSlideSource(
        folder=folder,
        study_instance_uid=str(levels[0][0].header.get("StudyInstanceUID", "")),
        series_instance_uid=series,
        pyramid_uid=pyramid,
        volume_levels=levels,
        other_instances=others,
    )
    logger.info("%s: DICOM WSI with %d level(s) %s and %d other image(s)", folder, len(levels), list(source.level_sizes_xy), len(others))
    return source
