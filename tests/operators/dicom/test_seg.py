from __future__ import annotations

import pytest

from operators.dicom.seg import NOT_FOR_CLINICAL_USE, ResultSeries, seg_series_description, seg_texts

LONG_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678"  # 64 characters


@pytest.mark.parametrize(
    ("label", "flags", "expected"),
    [
        ("Spleen", (), "Spleen segmentation - NOT FOR CLINICAL USE"),
        ("Spleen", ("IMPLAUSIBLE VOLUME",), "Spleen - IMPLAUSIBLE VOLUME - NOT FOR CLINICAL USE"),
        ("Tumor probability", ("UNVERIFIED MODEL",), "Tumor probability - UNVERIFIED MODEL - NOT FOR CLINICAL USE"),
        # the second flag does not fit: left out whole, the warning kept
        ("Spleen", ("NON-ABDOMINAL SERIES", "IMPLAUSIBLE VOLUME"), "Spleen - NON-ABDOMINAL SERIES - NOT FOR CLINICAL USE"),
    ],
)
def test_series_description_carries_flags_and_always_the_warning(label, flags, expected):
    description = seg_series_description(label, flags)
    assert description == expected and len(description) <= 64 and description.endswith(NOT_FOR_CLINICAL_USE)


def test_a_short_superseded_uid_is_the_content_description_and_a_long_one_goes_to_image_comments():
    assert seg_texts("Spleen by model 1.0") == seg_texts("Spleen by model 1.0", None)
    assert seg_texts("Spleen by model 1.0").image_comments is None
    short = seg_texts("Spleen by model 1.0", "1.2.3.4")
    assert short.content_description == "Supersedes 1.2.3.4" and "Supersedes 1.2.3.4" in short.image_comments
    long = seg_texts("Spleen by model 1.0", LONG_UID)
    assert len(long.content_description) <= 64 and "ImageComments" in long.content_description
    assert f"Supersedes {LONG_UID}" in long.image_comments


def test_a_result_keeps_the_given_series_and_gets_a_new_instance():
    first, second = ResultSeries.new("1.2.3", "4.5.6"), ResultSeries.new("1.2.3", "4.5.6")
    assert first.series_instance_uid == second.series_instance_uid == "1.2.3"
    assert first.sop_instance_uid != second.sop_instance_uid
    assert first.as_json()["supersedes_sop_instance_uid"] == "4.5.6"
    assert ResultSeries.new().series_instance_uid != ResultSeries.new().series_instance_uid


@pytest.mark.parametrize(
    ("supersedes", "note", "expected_comments"),
    [
        (None, None, None),
        (None, "Covers 4 of the 5 slices.", "Covers 4 of the 5 slices."),
        (
            "1.2.3.4",
            "Covers 4 of the 5 slices.",
            "Supersedes 1.2.3.4 (SOP Instance UID of the earlier result). Spleen. Covers 4 of the 5 slices.",
        ),
    ],
    ids=["neither", "note", "supersedes-and-note"],
)
def test_a_note_goes_into_image_comments_beside_what_the_result_supersedes(supersedes, note, expected_comments):
    texts = seg_texts("Spleen", supersedes, note)
    assert texts.image_comments == expected_comments
    assert texts.content_description == ("Spleen" if supersedes is None else f"Supersedes {supersedes}")
