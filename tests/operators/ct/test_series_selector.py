from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from operators.core.errors import NoUsableSeriesError
from operators.ct.series_selector import SeriesRules, only_lossy_compressed, rejection_reason, select_ct_series
from operators.dicom.scan import DicomInstance, DicomScan, DicomSeries, SkippedFile
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


def _alternating_frames_of_reference(headers):
    for i, header in enumerate(headers):
        header.FrameOfReferenceUID = ("1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3")[i % 2]
    return headers


def _with(index: int | None, keyword: str, value):
    """Set ``keyword`` to ``value`` on one slice (``index``) or on every slice (None)."""

    def change(headers):
        for header in headers if index is None else [headers[index]]:
            setattr(header, keyword, value)
        return headers

    return change


def _two_studies(headers):
    headers[3].StudyInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    return headers


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_alternating_frames_of_reference, "its slices carry 2 FrameOfReferenceUIDs"),
        (_with(None, "SeriesInstanceUID", "../../../x"), "SeriesInstanceUID '../../../x' is not a DICOM UID"),
        (_with(None, "StudyInstanceUID", "1.2/../../x"), "StudyInstanceUID '1.2/../../x' is not a DICOM UID (component '2/' is not digits"),
        (_with(2, "SOPInstanceUID", "1.2.03"), "SOPInstanceUID '1.2.03' is not a DICOM UID (component '03' has a leading zero)"),
        (_with(None, "FrameOfReferenceUID", "1.2.3." + "4" * 70), "FrameOfReferenceUID '1.2.3.444"),
        (_with(1, "FrameOfReferenceUID", ""), "missing geometry attributes: FrameOfReferenceUID (on 1 of 6 slices)"),
        (_two_studies, "its files carry 2 StudyInstanceUIDs"),
        (_with(0, "ImageOrientationPatient", [1, 0, 0, 0, 1]), "ImageOrientationPatient [1.0, 0.0, 0.0, 0.0, 1.0] is not 6 finite numbers"),
        (_with(0, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), "is not two orthogonal unit vectors"),
        (_with(4, "ImagePositionPatient", [0, 0]), "ImagePositionPatient [0.0, 0.0] is not 3 finite numbers"),
        (_with(4, "PixelSpacing", [0.8, 0]), "PixelSpacing [0.8, 0.0] is not positive"),
        (_with(2, "ImageOrientationPatient", [0.9998477, 0, 0.0174524, 0, 1, 0]), "slices have different orientations"),
        (_with(5, "Rows", 16), "slices have different matrix sizes"),
    ],
    ids=[
        "alternating-frames-of-reference",
        "series-uid-path",
        "study-uid-path",
        "sop-uid-leading-zero",
        "frame-of-reference-too-long",
        "frame-of-reference-empty",
        "two-studies",
        "orientation-five-values",
        "orientation-parallel",
        "position-two-values",
        "zero-pixel-spacing",
        "one-slice-rotated",
        "one-slice-larger",
    ],
)
def test_rejection_reason_refuses_identifiers_and_geometry_a_seg_cannot_carry(change, expected):
    with pydicom.config.disable_value_validation():  # the invalid values are the point
        headers = change(ct_stack(EVEN))
    reason = rejection_reason(as_series(headers), SeriesRules())
    assert reason is not None and expected in reason, reason


def test_a_series_with_alternating_frames_of_reference_is_skipped_for_a_good_one_and_alone_refused():
    bad = as_series(_alternating_frames_of_reference(ct_stack([i * 1.0 for i in range(10)], description="two frames")))
    good = as_series(ct_stack(EVEN, description="good"))
    selection = select_ct_series(DicomScan(Path("/in"), (bad, good), ()))
    assert selection.chosen is good
    assert "2 FrameOfReferenceUIDs" in dict((s.series_instance_uid, r) for s, r in selection.skipped)[bad.series_instance_uid]
    with pytest.raises(NoUsableSeriesError, match="'two frames'.*one frame of reference is required"):
        select_ct_series(DicomScan(Path("/in"), (bad,), ()))


def test_the_refusal_names_the_files_the_scan_skipped():
    skipped = tuple(SkippedFile(Path(f"/in/sub/f{i}.txt"), "not a DICOM file") for i in range(5))
    with pytest.raises(NoUsableSeriesError) as raised:
        select_ct_series(DicomScan(Path("/in"), (), skipped))
    assert str(raised.value) == (
        "no CT series to segment in /in: no DICOM series found; 5 files skipped: sub/f0.txt (not a DICOM file), "
        "sub/f1.txt (not a DICOM file), sub/f2.txt (not a DICOM file) and 2 more"
    )


def test_one_slice_is_named_in_the_singular():
    assert rejection_reason(as_series(ct_stack([0.0])), SeriesRules()) == "1 slice, fewer than the 5 required"
