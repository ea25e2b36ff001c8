"""Scan a folder of DICOM files into series, reading headers only.

Files may sit at any depth and have any name. DICOMDIR files, non-DICOM files and files whose
header cannot be parsed are skipped with a warning and listed in the result, so a caller can
report what was ignored.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from operators.core.errors import AppInputError
from operators.core.timing import StageTimings

logger = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class DicomInstance:
    """One file of a series: its path and its header (pixel data not read)."""

    path: Path
    header: Dataset


@dataclass(frozen=True)
class DicomSeries:
    """The instances of one SeriesInstanceUID, in the order they were found."""

    series_instance_uid: str
    instances: tuple[DicomInstance, ...]

    @property
    def first(self) -> Dataset:
        return self.instances[0].header

    @property
    def label(self) -> str:
        """A short human-readable name for logs: number, description and UID."""
        first = self.first
        number = first.get("SeriesNumber", "?")
        description = first.get("SeriesDescription", "") or "(no description)"
        files = len(self.instances)
        return f"series {number} '{description}' ({self.series_instance_uid}, {files} file{'s' if files != 1 else ''})"


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass(frozen=True)
class DicomScan:
    """Everything found under a folder: series, and the files that were skipped and why."""

    root: Path
    series: tuple[DicomSeries, ...]
    skipped: tuple[SkippedFile, ...]

    def skipped_summary(self) -> str | None:
        """One phrase naming the skipped files (the first few, relative to the root) and why; None when none were."""
        if not self.skipped:
            return None
        return counted_list([f"{_relative(s.path, self.root)} ({s.reason})" for s in self.skipped], "file", "skipped")


def counted_list(items: Sequence[str], noun: str, state: str, shown: int = 3) -> str:
    """``"2 files skipped: a, b"``, ``"5 slices unreadable: a, b, c and 2 more"``: how many, what, the first ``shown``."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''} {state}: {', '.join(items[:shown])}{more}"


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) and path != root else path.name


def _read_header(path: Path) -> Dataset | str:
    """The header of a DICOM file, or the reason it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return "not a DICOM file"
    except OSError as error:  # permissions, a dangling link, an I/O error
        return f"cannot be read ({error.strerror or type(error).__name__})"
    except Exception as error:  # noqa: BLE001 -- pydicom raises many types on corrupt input
        return f"unreadable DICOM header ({type(error).__name__}: {error})"
    sop_class = str(header.get("MediaStorageSOPClassUID", "") or header.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY_SOP_CLASS or "DirectoryRecordSequence" in header:
        return "DICOMDIR (a media directory, not an image)"
    if "SeriesInstanceUID" not in header or "SOPInstanceUID" not in header:
        return "no SeriesInstanceUID or SOPInstanceUID"
    return header


def scan_dicom_folder(root: Path) -> DicomScan:
    """All DICOM series under ``root`` (a folder, or a single file), grouped by SeriesInstanceUID."""
    root = Path(root)
    if not root.exists():
        raise AppInputError(f"input path does not exist: {root}")
    if root.is_file():
        paths = [root]
    else:
        paths = sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names)
    if not paths:
        raise AppInputError(f"input folder is empty: {root}")

    by_series: dict[str, list[DicomInstance]] = defaultdict(list)
    skipped: list[SkippedFile] = []
    for path in paths:
        result = _read_header(path)
        if isinstance(result, str):
            logger.warning("Skipping %s: %s", path, result)
            skipped.append(SkippedFile(path, result))
            continue
        by_series[str(result.SeriesInstanceUID)].append(DicomInstance(path, result))

    series = tuple(DicomSeries(uid, tuple(instances)) for uid, instances in by_series.items())
    logger.info("Found %d DICOM series in %s (%d files skipped)", len(series), root, len(skipped))
    return DicomScan(root=root, series=series, skipped=tuple(skipped))


class DicomFolderLoaderOperator(Operator):
    """Scans the input folder for DICOM series (headers only; pixel data is read later, for one series).

    Named inputs:
        none; the folder is given at construction (the app's input path).

    Named outputs:
        dicom_scan: DicomScan, series grouped by SeriesInstanceUID, plus the skipped files and why.
    """

    OUTPUT_SCAN = "dicom_scan"

    def __init__(self, fragment: Fragment, *args, input_folder: Path, timings: StageTimings, **kwargs) -> None:
        self.input_folder = Path(input_folder)
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(self.OUTPUT_SCAN)

    def compute(self, op_input, op_output, context) -> None:
        with self.timings.stage("dicom_scan"):
            scan = scan_dicom_folder(self.input_folder)
        op_output.emit(scan, self.OUTPUT_SCAN)
