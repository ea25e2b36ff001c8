"""Small real DICOM objects built with pydicom for unit tests (headers, and single-slice files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid


def ct_slice(
    z_mm: float,
    *,
    series_uid: str,
    instance_number: int = 1,
    modality: str = "CT",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.8, 0.8),
    rows: int = 8,
    columns: int = 8,
    pixels: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_number: int = 1,
    description: str = "test series",
) -> Dataset:
    """A single-frame CT (or other modality) slice at ``z_mm`` along the slice normal."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance_number
    ds.PatientID = "TEST"
    ds.ImageOrientationPatient = list(orientation)
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    ds.ImagePositionPatient = [float(v) for v in np.cross(row, col) * z_mm + np.array([-3.0, -3.0, 0.0])]
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    data = np.zeros((rows, columns), np.uint16) if pixels is None else pixels.astype(np.uint16)
    ds.PixelData = data.tobytes()
    return ds


def ct_stack(positions_mm: list[float], **kwargs) -> list[Dataset]:
    """Slices of one new series at the given positions, numbered in list order."""
    series_uid = kwargs.pop("series_uid", None) or generate_uid()
    return [ct_slice(z, series_uid=series_uid, instance_number=i + 1, **kwargs) for i, z in enumerate(positions_mm)]


def save_all(datasets: list[Dataset], folder: Path, prefix: str = "slice") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{prefix}{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
