"""DICOM Segmentation building blocks both apps share: segment and equipment descriptions, the new
series' arguments, Type 2 completion of copied attributes, and the atomic write."""

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


def new_seg_series_arguments(equipment: EquipmentSpec, series_number: int) -> dict[str, object]:
    """highdicom Segmentation arguments shared by every SEG the apps write: new series and instance
    UIDs, the series number, and the writing application's equipment (all Type 1 in a SEG)."""
    return {
        "series_instance_uid": hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": equipment.manufacturer,
        "manufacturer_model_name": equipment.model_name,
        "software_versions": equipment.software_version,
        "device_serial_number": equipment.device_serial_number,
    }


def seg_series_description(label: str) -> str:
    """SeriesDescription of a SEG: the segment and the clinical-use warning, within the 64-char VR limit."""
    return f"{label} segmentation - {NOT_FOR_CLINICAL_USE}"[:64]


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
