"""Write a (z, y, x) HU volume as a DICOM CT Image Storage series, one file per slice, with pydicom.

Geometry: ImageOrientationPatient is axial [1, 0, 0, 0, 1, 0] by default, so columns run toward the
patient's left (LPS +x), rows toward posterior (+y) and slice index k sits at
``origin + k * spacing_z`` along the slice normal (+z, superior). ``origin_lps_mm`` is the
ImagePositionPatient of slice 0 (the centre of its first voxel); by default the volume is centred
on the LPS origin, which is also the frame of :mod:`training.synthetic.ct_phantom`. Tilted or
oblique series (:mod:`training.synthetic.ct_tilt`) pass ``image_orientation`` and
``slice_step_lps_mm``: slice k then sits at ``origin + k * slice_step_lps_mm``, which for a tilted
gantry is not along the normal.

Pixels: stored as unsigned 16 bit with RescaleIntercept -1024 and RescaleSlope 1 when every HU value
lies in [-1024, 64511]; otherwise (for example a scanner's -2000 or -3024 padding) as signed
16 bit with RescaleIntercept 0. Either way the stored value times the slope plus the intercept is
exactly the input HU.

Every Type 1 and Type 2 attribute of the modules of the CT Image IOD is written (Patient, General
Study, Patient Study, General Series, Frame of Reference, General Equipment, General Acquisition,
General Image, Image Plane, Image Pixel, CT Image, VOI LUT, SOP Common), so dciodvfy reports no
errors on the files.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

logger = logging.getLogger(__name__)

DEFAULT_FILE_NAME_PATTERN = "CT{instance:04d}.dcm"
_FIXED_DATETIME = dt.datetime(2024, 1, 1, 12, 0, 0)  # used when a seed asks for reproducible files
_UNSIGNED_INTERCEPT = -1024


def centred_origin_lps_mm(shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float]) -> tuple[float, float, float]:
    """ImagePositionPatient (x, y, z) of slice 0 that puts the volume's centre at the LPS origin."""
    nz, ny, nx = (int(n) for n in shape_zyx)
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    return (-(nx - 1) / 2.0 * sx, -(ny - 1) / 2.0 * sy, -(nz - 1) / 2.0 * sz)


def _uid(seed: int | None, *parts: object) -> str:
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=["training.synthetic.dicom_series", str(seed), *(str(p) for p in parts)])


def _ds_value(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{value:.10g}"[:16]
    return text


def _pixel_encoding(hu_zyx: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(stored array, PixelRepresentation, RescaleIntercept) that represent the HU values exactly."""
    low, high = int(hu_zyx.min()), int(hu_zyx.max())
    if low >= _UNSIGNED_INTERCEPT and high - _UNSIGNED_INTERCEPT <= np.iinfo(np.uint16).max:
        return (hu_zyx.astype(np.int32) - _UNSIGNED_INTERCEPT).astype(np.uint16), 0, _UNSIGNED_INTERCEPT
    return hu_zyx.astype(np.int16), 1, 0


def write_ct_series(
    hu_zyx: np.ndarray,
    spacing_zyx_mm: Sequence[float],
    out_dir: Path,
    *,
    origin_lps_mm: Sequence[float] | None = None,
    patient_id: str = "PHANTOM-0001",
    patient_name: str = "Phantom^Abdomen",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "Synthetic abdomen phantom",
    study_description: str = "Synthetic CT",
    body_part_examined: str = "ABDOMEN",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    modality: str = "CT",
    manufacturer: str = "clinical-ai synthetic phantom",
    window_center_width: tuple[float, float] = (40.0, 400.0),
    study_datetime: dt.datetime | None = None,
    file_name_pattern: str = DEFAULT_FILE_NAME_PATTERN,
    seed: int | None = None,
    image_orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_step_lps_mm: Sequence[float] | None = None,
    gantry_detector_tilt_deg: float | None = None,
) -> list[Path]:
    """Write one CT Image Storage file per slice of an integer HU volume; returns the paths, slice order.

    ``file_name_pattern`` is formatted with ``instance`` (1-based InstanceNumber) and ``index``
    (0-based slice index). With ``seed`` the UIDs (unless given) and the dates are derived from it,
    so the same call writes identical files.
    """
    hu = np.asarray(hu_zyx)
    if hu.ndim != 3 or min(hu.shape) < 1:
        raise ValueError(f"hu_zyx must be a non-empty 3-D (z, y, x) array, got shape {hu.shape}")
    if not np.issubdtype(hu.dtype, np.integer):
        raise TypeError(f"hu_zyx must hold integer HU values, got dtype {hu.dtype}")
    if hu.min() < np.iinfo(np.int16).min or hu.max() > np.iinfo(np.int16).max:
        raise ValueError("hu_zyx values must fit in int16")
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_zyx_mm must be three positive numbers, got {spacing_zyx_mm}")
    if modality != "CT":
        raise ValueError(f"this writer writes CT Image Storage only, got modality {modality!r}")
    origin = tuple(float(v) for v in (origin_lps_mm if origin_lps_mm is not None else centred_origin_lps_mm(hu.shape, spacing)))
    if len(origin) != 3:
        raise ValueError(f"origin_lps_mm must be (x, y, z), got {origin_lps_mm}")
    orientation = np.asarray(image_orientation, dtype=np.float64)
    if orientation.shape != (6,) or not np.allclose(np.linalg.norm(orientation.reshape(2, 3), axis=1), 1.0, atol=1e-6):
        raise ValueError(f"image_orientation must be two unit vectors (6 numbers), got {image_orientation}")
    normal = np.cross(orientation[:3], orientation[3:])
    step = np.asarray(slice_step_lps_mm if slice_step_lps_mm is not None else normal * spacing[0], dtype=np.float64)

    study_uid = study_instance_uid or _uid(seed, "study", patient_id)
    series_uid = series_instance_uid or _uid(seed, "series", study_uid, series_number)
    frame_uid = frame_of_reference_uid or _uid(seed, "frame", study_uid)
    when = study_datetime or (_FIXED_DATETIME if seed is not None else dt.datetime.now())
    stored, pixel_representation, intercept = _pixel_encoding(hu)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = _series_template(
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=frame_uid,
        when=when,
        patient_id=patient_id,
        patient_name=patient_name,
        series_number=series_number,
        series_description=series_description,
        study_description=study_description,
        body_part_examined=body_part_examined,
        image_type=image_type,
        manufacturer=manufacturer,
        window_center_width=window_center_width,
    )
    rows, columns = hu.shape[1], hu.shape[2]
    template.Rows, template.Columns = rows, columns
    template.PixelSpacing = [_ds_value(spacing[1]), _ds_value(spacing[2])]  # row spacing, column spacing
    template.SliceThickness = _ds_value(spacing[0])
    template.ImageOrientationPatient = [_ds_value(v) for v in orientation]
    if gantry_detector_tilt_deg is not None:
        template.GantryDetectorTilt = _ds_value(gantry_detector_tilt_deg)
    template.PixelRepresentation = pixel_representation
    template.RescaleIntercept = str(intercept)

    paths = []
    for index in range(hu.shape[0]):
        instance = index + 1
        ds = template.copy()
        sop_uid = _uid(seed, "instance", series_uid, index)
        ds.file_meta = _file_meta(sop_uid)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        position = np.asarray(origin) + index * step
        ds.ImagePositionPatient = [_ds_value(v) for v in position]
        ds.SliceLocation = _ds_value(float(position @ normal))
        ds.PixelData = np.ascontiguousarray(stored[index]).tobytes()
        path = out_dir / file_name_pattern.format(instance=instance, index=index)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info("wrote %d CT slices (%dx%d, spacing %s mm) to %s", len(paths), rows, columns, spacing, out_dir)
    return paths


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    return meta


def _series_template(
    *,
    study_uid,
    series_uid,
    frame_uid,
    when,
    patient_id,
    patient_name,
    series_number,
    series_description,
    study_description,
    body_part_examined,
    image_type,
    manufacturer,
    window_center_width,
) -> pydicom.Dataset:
    """The attributes shared by every slice of the series."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds = pydicom.Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = study_description
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = body_part_examined
    ds.PatientPosition = "HFS"
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = "ct_phantom"
    ds.SoftwareVersions = "1.0"
    # General Acquisition / General Image
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImageType = list(image_type)
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    # Image Pixel / CT Image
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    # VOI LUT
    ds.WindowCenter = _ds_value(window_center_width[0])
    ds.WindowWidth = _ds_value(window_center_width[1])
    return ds
