"""DICOM Segmentation building blocks both apps share: segment and equipment descriptions, the result's
series and instance (new, or superseding an earlier result), its texts (flags, supersession), Type 2
completion of copied attributes, and the atomic write."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from operators.core.atomic_io import write_atomically

logger = logging.getLogger(__name__)

NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"
LO_MAX_LENGTH = 64  # SeriesDescription, ContentDescription


@dataclass(frozen=True)
class SegmentSpec:
    """What the segment is (coded), and which algorithm made it (from the model's card)."""

    label: str
    property_category: Code
    property_type: Code
    algorithm_name: str
    algorithm_version: str


@dataclass(frozen=True)
class EquipmentSpec:
    """The application that writes the SEG (DICOM Enhanced General Equipment)."""

    manufacturer: str
    model_name: str
    software_version: str
    device_serial_number: str


# Type 2 attributes of the Patient and General Study modules that highdicom copies from the source:
# a source may omit them (a non-conformant modality), the SEG must still carry them, empty.
COPIED_TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def with_empty_type2_attributes(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Copies of ``datasets`` with absent Type 2 patient/study attributes present and empty."""
    completed = []
    for dataset in datasets:
        missing = [k for k in COPIED_TYPE2_KEYWORDS if k not in dataset]
        if missing:
            dataset = copy.copy(dataset)
            for keyword in missing:
                setattr(dataset, keyword, None)
        completed.append(dataset)
    return completed


@dataclass(frozen=True)
class ResultSeries:
    """Where a SEG goes: its series (new, or the earlier result's series when it supersedes it), its own
    new instance, and the SOP Instance UID of the earlier result it supersedes (None: supersedes nothing)."""

    series_instance_uid: str
    sop_instance_uid: str
    supersedes_sop_instance_uid: str | None = None

    @classmethod
    def new(cls, series_instance_uid: str | None = None, supersedes_sop_instance_uid: str | None = None) -> ResultSeries:
        """A new instance, in ``series_instance_uid`` when given (a rerun's result), else in a new series."""
        return cls(str(series_instance_uid or hd.UID()), str(hd.UID()), supersedes_sop_instance_uid)

    def as_json(self) -> dict[str, str | None]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "supersedes_sop_instance_uid": self.supersedes_sop_instance_uid,
        }


def new_seg_series_arguments(equipment: EquipmentSpec, series_number: int, result: ResultSeries | None = None) -> dict[str, object]:
    """highdicom arguments shared by every derived object the apps write (SEG, Bulk Annotations,
    Parametric Map; the names of the SEG, its first user): the result's series and
    instance UIDs (new ones when ``result`` is None), the series number (kept when a result supersedes
    an earlier one), and the writing application's equipment (all Type 1 in a SEG)."""
    result = result or ResultSeries.new()
    return {
        "series_instance_uid": result.series_instance_uid,
        "series_number": series_number,
        "sop_instance_uid": result.sop_instance_uid,
        "instance_number": 1,
        "manufacturer": equipment.manufacturer,
        "manufacturer_model_name": equipment.model_name,
        "software_versions": equipment.software_version,
        "device_serial_number": equipment.device_serial_number,
    }


def seg_series_description(label: str, flags: Sequence[str] = ()) -> str:
    """SeriesDescription of a SEG: the segment, its flags (e.g. "IMPLAUSIBLE VOLUME": a result to check
    before use) and the clinical-use warning, within the 64-char VR limit. The warning is never cut;
    flags that do not fit are left out whole (summary.json lists them all)."""
    suffix = f" - {NOT_FOR_CLINICAL_USE}"
    if not flags:
        return f"{label} segmentation{suffix}"[:LO_MAX_LENGTH]
    description = label[: LO_MAX_LENGTH - len(suffix)]
    for flag in flags:
        if len(description) + 3 + len(flag) + len(suffix) <= LO_MAX_LENGTH:
            description += f" - {flag}"
    return description + suffix


@dataclass(frozen=True)
class SegTexts:
    """ContentDescription (LO, 64 chars) and ImageComments (LT; None: absent) of a SEG."""

    content_description: str
    image_comments: str | None = None


def seg_texts(content: str, supersedes_sop_instance_uid: str | None = None, note: str | None = None) -> SegTexts:
    """The SEG's content description: ``content``, or "Supersedes <UID>" when the SEG supersedes an
    earlier result. A UID too long for that (over 53 characters) leaves a short ContentDescription
    pointing at ImageComments; ImageComments carries the full statement whenever a result supersedes one,
    and ``note`` (e.g. the source slices a result leaves out) whenever there is one."""
    if supersedes_sop_instance_uid is None:
        return SegTexts(content[:LO_MAX_LENGTH], note)
    statement = f"Supersedes {supersedes_sop_instance_uid}"
    short = statement if len(statement) <= LO_MAX_LENGTH else "Supersedes an earlier result (UID in ImageComments)"
    comments = f"{statement} (SOP Instance UID of the earlier result). {content}"
    return SegTexts(short, f"{comments}. {note}" if note else comments)


def apply_seg_texts(seg: Dataset, texts: SegTexts) -> None:
    """Set ImageComments (General Image module) on a built SEG when the texts carry one."""
    if texts.image_comments is not None:
        seg.ImageComments = texts.image_comments


def segment_description(segment: SegmentSpec, segment_number: int = 1) -> hd.seg.SegmentDescription:
    """The SEG's description of one segment: its codes, and the AI algorithm (name, version) that made it."""
    return hd.seg.SegmentDescription(
        segment_number=segment_number,
        segment_label=segment.label,
        segmented_property_category=segment.property_category,
        segmented_property_type=segment.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=segment.algorithm_name,
            family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
            version=segment.algorithm_version,
        ),
        tracking_uid=hd.UID(),
        tracking_id=f"{segment.label} ({segment.algorithm_name})"[:64],
    )


def write_seg(seg: Dataset, path: Path) -> Path:
    return write_atomically(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
