"""The real test slides of testkit.real_slides, or a skip of the calling test that says what is missing.

Under CI (or REQUIRE_ALL_TESTS=1) tests/conftest.py turns such a skip into a failure: the set-up
(``scripts/setup.sh --with-test-tools``) provides every tool these slides need.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.real_slides import (
    DicomEncoding,
    SlideUnavailable,
    make_encoded_dicom_wsi,
    make_real_dicom_wsi,
    make_real_svs,
    make_real_vips_pyramid,
)


def _or_skip(maker: Callable[[], Path]) -> Path:
    try:
        return maker()
    except SlideUnavailable as reason:
        pytest.skip(f"real slide unavailable: {reason}")


def real_svs() -> Path:
    """The real Aperio SVS, or skip the calling test saying why."""
    return _or_skip(make_real_svs)


def real_dicom_wsi() -> Path:
    """The wsidicomizer DICOM WSI folder, or skip the calling test saying why."""
    return _or_skip(make_real_dicom_wsi)


def real_vips_pyramid() -> Path:
    """The libvips tiled pyramidal TIFF, or skip the calling test saying why."""
    return _or_skip(make_real_vips_pyramid)


def encoded_dicom_wsi(encoding: DicomEncoding) -> Path:
    """The SVS as a DICOM WSI with every tile re-encoded in ``encoding``, or skip the calling test saying why."""
    return _or_skip(lambda: make_encoded_dicom_wsi(encoding))
