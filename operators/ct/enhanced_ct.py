"""Enhanced CT and Legacy Converted Enhanced CT: one multi-frame instance that holds a whole series.

Each frame is described by functional groups (PS3.3 C.7.6.16), either its own
(PerFrameFunctionalGroupsSequence) or shared by all frames (SharedFunctionalGroupsSequence). Here
each frame becomes a header with the attributes of a single-frame slice (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, SliceThickness, RescaleSlope/Intercept, ImageType from
FrameType), so selection, the geometry checks (spacing, orientation, positions on one line, gantry
tilt) and the affine are the very ones single-frame series get. An attribute a frame lacks is left
out, so the selector names it. Frame k of the instance is ``frame_headers(...)[k - 1]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from operators.core.errors import InvalidSeriesError
from operators.dicom.pixel_decoding import ensure_decoder_plugins

logger = logging.getLogger(__name__)

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
MULTIFRAME_CT_SOP_CLASSES = frozenset({ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE})

# Instance-level attributes every frame header carries, as a single-frame slice would.
COPIED_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "FrameOfReferenceUID",
    "Rows",
    "Columns",
    "PatientID",
    "PatientName",
    "BodyPartExamined",
    "ImageType",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "DerivationCodeSequence",
)


def is_multiframe_ct(header: Dataset) -> bool:
    return str(header.get("SOPClassUID", "")) in MULTIFRAME_CT_SOP_CLASSES


def frame_count_problem(header: Dataset) -> str | None:
    """Why a multi-frame CT instance's frame count cannot be trusted (NumberOfFrames not a positive number,
    or not the number of PerFrameFunctionalGroupsSequence items, which both IODs require), or None. Asked
    before any frame header is made: a header claiming 10^9 frames must not make 10^9 of them."""
    try:
        frames = int(header.get("NumberOfFrames"))
    except (TypeError, ValueError):
        return f"NumberOfFrames {header.get('NumberOfFrames')!r} is not a number of frames"
    items = len(header.get("PerFrameFunctionalGroupsSequence") or ())
    if frames < 1 or frames != items:
        return f"NumberOfFrames is {frames} but PerFrameFunctionalGroupsSequence has {items} items (one per frame required)"
    return None


def _frame_item(header: Dataset, frame_index: int, sequence: str) -> Dataset | None:
    """The first item of a functional group macro for one frame: its own, else the shared one."""
    groups = []
    if "PerFrameFunctionalGroupsSequence" in header and frame_index < len(header.PerFrameFunctionalGroupsSequence):
        groups.append(header.PerFrameFunctionalGroupsSequence[frame_index])
    if "SharedFunctionalGroupsSequence" in header and len(header.SharedFunctionalGroupsSequence):
        groups.append(header.SharedFunctionalGroupsSequence[0])
    for group in groups:
        if sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    return None


def _frame_header(header: Dataset, frame_index: int, base: Dataset) -> Dataset:
    frame = Dataset()
    frame.update(base)
    if (position := _frame_item(header, frame_index, "PlanePositionSequence")) is not None and "ImagePositionPatient" in position:
        frame.ImagePositionPatient = position.ImagePositionPatient
    if (orientation := _frame_item(header, frame_index, "PlaneOrientationSequence")) is not None:
        if "ImageOrientationPatient" in orientation:
            frame.ImageOrientationPatient = orientation.ImageOrientationPatient
    if (measures := _frame_item(header, frame_index, "PixelMeasuresSequence")) is not None:
        for keyword in ("PixelSpacing", "SliceThickness"):
            if keyword in measures:
                setattr(frame, keyword, measures[keyword].value)
    if (transform := _frame_item(header, frame_index, "PixelValueTransformationSequence")) is not None:
        frame.RescaleSlope = transform.get("RescaleSlope", 1)
        frame.RescaleIntercept = transform.get("RescaleIntercept", 0)
    if (frame_type := _frame_item(header, frame_index, "CTImageFrameTypeSequence")) is not None and "FrameType" in frame_type:
        frame.ImageType = frame_type.FrameType
    if (details := _frame_item(header, frame_index, "CTAcquisitionDetailsSequence")) is not None and "GantryDetectorTilt" in details:
        frame.GantryDetectorTilt = details.GantryDetectorTilt
    frame.file_meta = header.file_meta if hasattr(header, "file_meta") else Dataset()
    return frame


def frame_headers(header: Dataset) -> list[Dataset]:
    """One single-frame-style header per frame of a multi-frame CT instance, in frame order."""
    base = Dataset()
    for keyword in COPIED_KEYWORDS:
        if keyword in header:
            base[keyword] = header[keyword]
    return [_frame_header(header, index, base) for index in range(int(header.get("NumberOfFrames", 1) or 1))]


def read_multiframe_hu(path: Path, frames: list[Dataset], label: str) -> np.ndarray:
    """The frames' pixels in HU (float32, frame, row, column), each with its own rescale; a named error when unreadable."""
    ensure_decoder_plugins()
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:
        raise InvalidSeriesError(f"{label}: pixel data unreadable ({type(error).__name__}: {error})") from error
    pixels = pixels.reshape(-1, *pixels.shape[-2:]) if pixels.ndim >= 2 else pixels
    if pixels.shape != (len(frames), int(dataset.Rows), int(dataset.Columns)):
        raise InvalidSeriesError(
            f"{label}: pixel data has shape {pixels.shape}, expected {len(frames)} frames of {dataset.Rows}x{dataset.Columns}"
        )
    hu = pixels.astype(np.float32)
    for index, frame in enumerate(frames):
        slope, intercept = float(frame.get("RescaleSlope", 1) or 1), float(frame.get("RescaleIntercept", 0) or 0)
        if slope != 1:
            hu[index] *= slope
        hu[index] += intercept
    return hu
