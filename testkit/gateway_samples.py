"""Small synthetic DICOM instances for the gateway tests and its load benchmark (8x8 CT slices, fresh UIDs each call)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from testkit.dicom_factories import ct_slice


def ct_series(slices: int, study_uid: str | None = None, modality: str = "CT", size: int = 8) -> list[Dataset]:
    """A contiguous series of ``slices`` slices (a blob in the middle, so a segmentation has something to find)."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference = generate_uid()
    series = []
    for index in range(slices):
        pixels = np.full((size, size), 1024, np.uint16)
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1100
        ds = ct_slice(
            2.0 * index, series_uid=series_uid, instance_number=index + 1, modality=modality, rows=size, columns=size, pixels=pixels
        )
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientName = "GATEWAY^TEST"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20260101", "120000", "A1", "", "1"
        ds.PatientBirthDate, ds.PatientSex, ds.Manufacturer = "", "O", "tests"
        series.append(ds)
    return series


def write_series(series: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in series:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
