from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from operators.core.errors import NoUsableSeriesError
from operators.ct.series_selector import SeriesRules, only_lossy_compressed, rejection_reason, select_ct_series
from operators.dicom.scan import DicomInstance, DicomScan, DicomSeries
from testkit.dicom_factories import ct_stack

EVEN = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def as_series(headers) -> DicomSeries:
    return DicomSeries(str(headers[0].SeriesInstanceUID), tuple(DicomInstance(Path(f"/x/{i}"), h) for i, h in enumerate(headers)))


@pytest.mark.parametrize(
    ("headers", "expected_fragment"),
    [
        (ct_stack(EVEN), None),
        (ct_stack(EVEN, modality="MR"), "modality is MR"),
        (ct_stack(EVEN, image_type=("DERIVED", "SECONDARY", "AXIAL")), "not ORIGINAL/PRIMARY"),
        (ct_stack(EVEN, orientation=(1, 0, 0, 0, 0, -1)), "not axial"),
        (ct_stack(EVEN[:4]), "4 slices, fewer than the 5 required"),
        (ct_stack([0.0, 2.0, 4.0, 8.0, 10.0, 12.0]), "uneven slice spacing"),
        (ct_stack([0.0, 2.0, 2.0, 4.0, 6.0, 8.0]), "same position"),
    ],
    ids=["qualifies", "mr", "derived", "sagittal", "too-few", "missing-slice", "duplicate-position"],
)
def test_rejection_reason_names_the_rule_that_fails(headers, expected_fragment):
    reason = rejection_reason(as_series(headers), SeriesRules())
    assert reason is None if expected_fragment is None else expected_fragment in reason


def test_rejection_reason_requires_a_frame_of_reference():
    headers = ct_stack(EVEN)
    del headers[0].FrameOfReferenceUID
    assert "FrameOfReferenceUID" in rejection_reason(as_series(headers), SeriesRules())


def test_rejection_reason_flags_mixed_pixel_spacing():
    headers = ct_stack(EVEN)
    headers[2].PixelSpacing = [0.5, 0.5]
    assert "different pixel spacings" in rejection_reason(as_series(headers), SeriesRules())


def test_select_prefers_most_slices_then_thinnest_spacing_and_reports_the_others():
    short = as_series(ct_stack(EVEN, series_number=1))
    long_thick = as_series(ct_stack([i * 3.0 for i in range(10)], series_number=2))
    long_thin = as_series(ct_stack([i * 1.0 for i in range(10)], series_number=3))
    localizer = as_series(ct_stack(EVEN, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), orientation=(0, 1, 0, 0, 0, -1), series_number=4))
    selection = select_ct_series(DicomScan(Path("/x"), (short, long_thick, localizer, long_thin), ()))
    assert selection.chosen is long_thin
    assert selection.slice_spacing_mm == pytest.approx(1.0)
    reasons = {s.series_instance_uid: reason for s, reason in selection.skipped}
    assert set(reasons) == {short.series_instance_uid, long_thick.series_instance_uid, localizer.series_instance_uid}
    assert "not axial" in reasons[localizer.series_instance_uid]
    assert "another series is preferred" in reasons[short.series_instance_uid]


def test_select_raises_with_every_series_reason_when_none_qualifies():
    mr = as_series(ct_stack(EVEN, modality="MR", description="brain MR"))
    gap = as_series(ct_stack([0.0, 2.0, 4.0, 8.0, 10.0, 12.0], description="gappy CT"))
    with pytest.raises(NoUsableSeriesError) as raised:
        select_ct_series(DicomScan(Path("/in"), (mr, gap), ()))
    message = str(raised.value)
    assert "brain MR" in message and "modality is MR" in message
    assert "gappy CT" in message and "uneven slice spacing" in message


def test_select_ignores_a_duplicate_copy_of_a_slice():
    headers = ct_stack(EVEN)
    copy = headers[3].copy()
    assert rejection_reason(as_series([*headers, copy]), SeriesRules()) is None


def _derived(image_type=("DERIVED", "PRIMARY", "AXIAL"), lossy="01", codes=(("113040", "DCM"),)):
    header = pydicom.Dataset()
    header.ImageType = list(image_type)
    if lossy is not None:
        header.LossyImageCompression = lossy
    header.DerivationCodeSequence = [pydicom.Dataset() for _ in codes]
    for item, (value, scheme) in zip(header.DerivationCodeSequence, codes, strict=True):
        item.CodeValue, item.CodingSchemeDesignator = value, scheme
    return header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_derived(), True),  # what DCMTK and archives write for a JPEG or JPEG 2000 lossy copy
        (_derived(("ORIGINAL", "PRIMARY")), False),  # not derived at all: the ORIGINAL rule applies
        (_derived(lossy=None), False),
        (_derived(codes=()), False),
        (_derived(codes=(("113040", "DCM"), ("113076", "DCM"))), False),  # lossy and also segmented/processed
        (_derived(codes=(("121327", "DCM"),)), False),  # "Full fidelity image" is not a lossy derivation
        (_derived(("DERIVED", "SECONDARY")), False),
    ],
)
def test_only_lossy_compressed_accepts_nothing_but_lossy_compression(header, expected):
    assert only_lossy_compressed(header) is expected
