"""Choose the CT series to segment, by explicit rules, and say why every other series was skipped.

Rules, in order: modality CT; single-frame CT Image Storage files, or one multi-frame Enhanced CT or
Legacy Converted Enhanced CT instance (its frames are the slices: :mod:`operators.ct.enhanced_ct`);
valid DICOM UIDs (Study, Series, SOP Instance, Frame of Reference: they are copied into the SEG's
references) and one StudyInstanceUID; pixel data in a transfer syntax an installed decoder reads; ImageType ORIGINAL/PRIMARY (or an original
only lossy compressed since: DERIVED/PRIMARY with the derivation code "Lossy Compression");
axial (the slice normal's largest component is head-foot); at least ``min_slices`` slices; the same
orientation, matrix and pixel spacing on every slice; one FrameOfReferenceUID on every slice (the
SEG is placed in it); even spacing along the normal (no gaps, no
duplicates) with the slice positions on one line; and, with ``on_gantry_tilt="refuse"``, no gantry
tilt (positions stepping off the normal by more than the tolerance). Among qualifying series the preference is: most slices, then the thinnest slice
spacing, then the lowest SeriesNumber.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.core.errors import NoUsableSeriesError
from operators.ct.enhanced_ct import MULTIFRAME_CT_SOP_CLASSES, frame_count_problem, frame_headers, is_multiframe_ct
from operators.ct.slice_geometry import (
    GANTRY_TILT_TOLERANCE_DEG,
    ORIENTATION_TOLERANCE,
    gantry_tilt_deg,
    geometry_value_problem,
    off_line_reason,
    orientation_of,
    stack_geometry,
    uneven_spacing_reason,
)
from operators.dicom.pixel_decoding import decoder_problem
from operators.dicom.scan import DicomScan, DicomSeries, SkippedFile
from operators.dicom.uids import uid_problem

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
GEOMETRY_KEYWORDS = ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
# UIDs a SEG copies from its source (references, study, frame of reference): each must be a DICOM UID.
SOURCE_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
SHOWN_VALUE_LENGTH = 80  # characters of an invalid value quoted in a reason

GantryTiltPolicy = Literal["correct", "refuse"]
GANTRY_TILT_POLICIES: tuple[GantryTiltPolicy, ...] = ("correct", "refuse")


@dataclass(frozen=True)
class SeriesRules:
    """``on_gantry_tilt``: "correct" keeps the sheared geometry (every output placed through the real
    slice positions, the network fed an orthogonal resampling); "refuse" skips a tilted series."""

    min_slices: int = 5
    spacing_relative_tolerance: float = 0.01
    on_gantry_tilt: GantryTiltPolicy = "correct"
    gantry_tilt_tolerance_deg: float = GANTRY_TILT_TOLERANCE_DEG

    def __post_init__(self) -> None:
        if self.on_gantry_tilt not in GANTRY_TILT_POLICIES:
            raise ValueError(f"on_gantry_tilt must be one of {GANTRY_TILT_POLICIES}, got {self.on_gantry_tilt!r}")


def gantry_tilt_refusal(tilt_deg: float, rules: SeriesRules) -> str | None:
    """The refusal of a tilted stack under ``on_gantry_tilt="refuse"``, or None."""
    if rules.on_gantry_tilt == "refuse" and tilt_deg > rules.gantry_tilt_tolerance_deg:
        return f"gantry tilt of {tilt_deg:.1f} degrees (slice positions step off the slice normal); refused by --on-gantry-tilt refuse"
    return None


@dataclass(frozen=True)
class SeriesSelection:
    """The chosen series, its slice spacing, every other series with the reason it was skipped, and the
    files the scan skipped (not DICOM, unreadable)."""

    chosen: DicomSeries
    slice_spacing_mm: float
    skipped: tuple[tuple[DicomSeries, str], ...]
    skipped_files: tuple[SkippedFile, ...] = ()


def rejection_reason(series: DicomSeries, rules: SeriesRules) -> str | None:
    """Why ``series`` cannot be segmented, or None when it qualifies."""
    return _instance_reason(series) or _slice_reason(slice_headers(series), rules)


def _instance_reason(series: DicomSeries) -> str | None:
    """What in the files themselves rules the series out: modality, SOP class, UIDs, study, transfer syntax."""
    headers = [instance.header for instance in series.instances]
    first = headers[0]
    modality = str(first.get("Modality", ""))
    if modality != "CT":
        return f"modality is {modality or 'missing'}, not CT"
    sop_classes = {str(h.get("SOPClassUID", "")) for h in headers}
    if sop_classes != {CT_IMAGE_STORAGE} and not sop_classes <= MULTIFRAME_CT_SOP_CLASSES:
        return f"SOP class {', '.join(sorted(sop_classes))} is not CT Image Storage, Enhanced CT or Legacy Converted Enhanced CT"
    if is_multiframe_ct(first) and len(_unique_by_sop(headers)) > 1:
        return f"{len(_unique_by_sop(headers))} multi-frame CT instances in one series (one expected)"
    if is_multiframe_ct(first) and (problem := frame_count_problem(first)):
        return problem
    if problem := uid_reason(headers):
        return problem
    studies = sorted({str(h.StudyInstanceUID) for h in headers})
    if len(studies) > 1:
        return f"its files carry {len(studies)} StudyInstanceUIDs ({', '.join(studies[:3])}); one series belongs to one study"
    by_syntax = {str(getattr(h, "file_meta", {}).get("TransferSyntaxUID", "")): h for h in headers}
    problem = next(filter(None, (decoder_problem(h) for h in by_syntax.values())), None)
    return problem


def uid_reason(headers: list) -> str | None:
    """The first source UID that is missing or not a DICOM UID (PS3.5 9.1), naming the attribute and the value;
    None when all are valid. FrameOfReferenceUID may be absent here: the geometry rules require it."""
    for header in headers:
        for keyword in SOURCE_UID_KEYWORDS:
            if _absent(header, keyword):
                if keyword == "FrameOfReferenceUID":
                    continue
                return f"no {keyword}"
            value = str(header[keyword].value)
            if problem := uid_problem(value):
                shown = value if len(value) <= SHOWN_VALUE_LENGTH else value[:SHOWN_VALUE_LENGTH] + "..."
                return f"{keyword} {shown!r} is not a DICOM UID ({problem})"
    return None


def _absent(header, keyword: str) -> bool:
    """The attribute is missing or has no value (an empty element)."""
    value = header.get(keyword)
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _slice_reason(headers: list, rules: SeriesRules) -> str | None:
    """What in the slices (files, or frames of a multi-frame instance) rules the series out."""
    image_types = {tuple(str(v).upper() for v in (h.get("ImageType") or ())[:2]) for h in headers if not only_lossy_compressed(h)}
    if image_types - {("ORIGINAL", "PRIMARY")}:
        return f"ImageType is {sorted('/'.join(t) for t in image_types)}, not ORIGINAL/PRIMARY"
    missing = {k: sum(_absent(h, k) for h in headers) for k in GEOMETRY_KEYWORDS}
    if any(missing.values()):
        return "missing geometry attributes: " + ", ".join(f"{k} (on {n} of {len(headers)} slices)" for k, n in missing.items() if n)
    if problem := next(filter(None, (geometry_value_problem(h) for h in headers)), None):
        return problem
    frames_of_reference = sorted({str(h.FrameOfReferenceUID) for h in headers})
    if len(frames_of_reference) > 1:
        return (
            f"its slices carry {len(frames_of_reference)} FrameOfReferenceUIDs ({', '.join(frames_of_reference[:3])}); "
            "one frame of reference is required"
        )
    orientations = np.stack([orientation_of(h) for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        return "slices have different orientations"
    normal = np.cross(orientations[0][0], orientations[0][1])
    if int(np.argmax(np.abs(normal))) != 2:
        return f"not axial (slice normal {np.round(normal, 3).tolist()})"
    if len({(h.Rows, h.Columns) for h in headers}) > 1:
        return "slices have different matrix sizes"
    if len({tuple(float(v) for v in h.PixelSpacing) for h in headers}) > 1:
        return "slices have different pixel spacings"
    if len(headers) < rules.min_slices:
        return f"{len(headers)} slice{'s' if len(headers) != 1 else ''}, fewer than the {rules.min_slices} required"
    geometry = stack_geometry(headers)
    return (
        uneven_spacing_reason(geometry.gaps_mm, rules.spacing_relative_tolerance)
        or off_line_reason(geometry)
        or gantry_tilt_refusal(gantry_tilt_deg(geometry), rules)
    )


LOSSY_COMPRESSION_CODE = ("113040", "DCM")  # DICOM CID 7203 "Lossy Compression"


def only_lossy_compressed(header) -> bool:
    """An original image that was only lossy compressed since (DERIVED/PRIMARY, every derivation code "Lossy
    Compression", PS3.3 C.7.6.1.1.5), as archives that compress with JPEG or JPEG 2000 mark it."""
    image_type = tuple(str(v).upper() for v in (header.get("ImageType") or ())[:2])
    codes = header.get("DerivationCodeSequence") or []
    return (
        image_type == ("DERIVED", "PRIMARY")
        and str(header.get("LossyImageCompression", "")) == "01"
        and len(codes) > 0
        and all((str(c.get("CodeValue", "")), str(c.get("CodingSchemeDesignator", ""))) == LOSSY_COMPRESSION_CODE for c in codes)
    )


def _unique_by_sop(headers: list) -> list:
    """Headers with duplicate SOPInstanceUIDs (the same slice stored twice) removed, first kept."""
    seen: dict[str, object] = {}
    for header in headers:
        seen.setdefault(str(header.SOPInstanceUID), header)
    return list(seen.values())


def slice_headers(series: DicomSeries) -> list:
    """One header per slice: the series' files (the same SOPInstanceUID stored twice counted once),
    or, for a multi-frame CT instance, one header per frame in frame order."""
    headers = _unique_by_sop([instance.header for instance in series.instances])
    return frame_headers(headers[0]) if is_multiframe_ct(headers[0]) else headers


def _preference_key(series: DicomSeries) -> tuple[int, float, int]:
    headers = slice_headers(series)
    spacing = float(np.median(stack_geometry(headers).gaps_mm))
    return (-len(headers), spacing, int(series.first.get("SeriesNumber") or 0))


def select_ct_series(scan: DicomScan, rules: SeriesRules = SeriesRules()) -> SeriesSelection:
    """The series to segment; raises :class:`NoUsableSeriesError` naming every series' problem."""
    candidates: list[DicomSeries] = []
    skipped: list[tuple[DicomSeries, str]] = []
    for series in scan.series:
        reason = rejection_reason(series, rules)
        if reason is None:
            candidates.append(series)
        else:
            skipped.append((series, reason))
    if not candidates:
        details = "; ".join(f"{s.label}: {reason}" for s, reason in skipped) or "no DICOM series found"
        files = scan.skipped_summary()
        raise NoUsableSeriesError(f"no CT series to segment in {scan.root}: {details}" + (f"; {files}" if files else ""))
    candidates.sort(key=_preference_key)
    chosen, others = candidates[0], candidates[1:]
    skipped.extend((s, "qualifies, but another series is preferred (most slices, then thinnest spacing)") for s in others)
    _, spacing, _ = _preference_key(chosen)
    return SeriesSelection(chosen=chosen, slice_spacing_mm=spacing, skipped=tuple(skipped), skipped_files=scan.skipped)


def log_selection(selection: SeriesSelection) -> None:
    logger.info("Chose %s: slice spacing %.3g mm", selection.chosen.label, selection.slice_spacing_mm)
    for series, reason in selection.skipped:
        logger.info("Skipped %s: %s", series.label, reason)


class CTSeriesSelectorOperator(Operator):
    """Chooses the CT series to segment by the rules of :func:`select_ct_series`.

    Named inputs:
        dicom_scan: DicomScan, every series found in the input folder.

    Named outputs:
        selection: SeriesSelection, the chosen series (headers only) and the skipped ones with reasons.
    """

    INPUT_SCAN = "dicom_scan"
    OUTPUT_SELECTION = "selection"

    def __init__(self, fragment: Fragment, *args, rules: SeriesRules = SeriesRules(), **kwargs) -> None:
        self.rules = rules
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_SCAN)
        spec.output(self.OUTPUT_SELECTION)

    def compute(self, op_input, op_output, context) -> None:
        selection = select_ct_series(op_input.receive(self.INPUT_SCAN), self.rules)
        log_selection(selection)
        op_output.emit(selection, self.OUTPUT_SELECTION)
