"""Slides shared by the slide-reading tests: the real SVS, its DICOM WSI and libvips pyramid, and
synthetic TIFFs made from the SVS's own H&E pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from operators.wsi.slide.reader import open_slide
from tests.real_slides import real_dicom_wsi, real_svs, real_vips_pyramid


@pytest.fixture(scope="module")
def svs() -> Path:
    return real_svs()


@pytest.fixture(scope="module")
def dicom_wsi() -> Path:
    return real_dicom_wsi()


@pytest.fixture(scope="module")
def vips_pyramid() -> Path:
    return real_vips_pyramid()


@pytest.fixture(scope="module")
def real_slides(svs, dicom_wsi, vips_pyramid) -> dict[str, Path]:
    return {"svs": svs, "dicom": dicom_wsi, "vips": vips_pyramid}


@pytest.fixture(scope="module")
def tissue(svs) -> np.ndarray:
    """Real H&E pixels (level 0 of the SVS, 1024 x 768) to build synthetic TIFFs from."""
    with open_slide(svs, backend="openslide") as slide:
        return slide.read_region((600, 1200), 0, (1024, 768))


@pytest.fixture
def untiled(tmp_path, tissue) -> tuple[Path, np.ndarray]:
    """A single-level stripped TIFF (OpenSlide refuses it), 2048 x 1536."""
    level0 = np.tile(tissue, (2, 2, 1))
    path = tmp_path / "untiled.tif"
    tifffile.imwrite(
        path, level0, photometric="rgb", compression="zlib", rowsperstrip=32, resolution=(2e4, 2e4), resolutionunit="CENTIMETER"
    )
    return path, level0
