from __future__ import annotations

import pytest

from operators.dicom.result_texts import dropped_slices_note, result_series_description


@pytest.mark.parametrize(
    ("subject", "flags", "expected"),
    [
        ("Spleen volume", (), "Spleen volume - NOT FOR CLINICAL USE"),
        ("Spleen volume", ("IMPLAUSIBLE VOLUME",), "Spleen volume - IMPLAUSIBLE VOLUME - NOT FOR CLINICAL USE"),
        ("Tumor findings", ("UNVERIFIED MODEL", "IMPLAUSIBLE VOLUME"), "Tumor findings - UNVERIFIED MODEL - NOT FOR CLINICAL USE"),
    ],
)
def test_series_description_names_the_subject_the_flags_that_fit_and_the_warning(subject, flags, expected):
    description = result_series_description(subject, flags)
    assert description == expected and len(description) <= 64


UID_A, UID_B = "1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.11"


@pytest.mark.parametrize(
    ("used", "dropped", "expected"),
    [
        (80, [], None),
        (
            79,
            [(UID_A, (-191.25, -191.25, 98.75), "pixel data unreadable (ValueError: short)")],
            "Covers 79 of the 80 slices of the source series; left out (SOP Instance UID, ImagePositionPatient, reason): "
            f"{UID_A} at (-191.25, -191.25, 98.75) mm: pixel data unreadable (ValueError: short).",
        ),
        (
            5,
            [(UID_A, None, "x"), (UID_B, (0.0, 0.0, 1.0), "y")],
            "Covers 5 of the 7 slices of the source series; left out (SOP Instance UID, ImagePositionPatient, reason): "
            f"{UID_A}: x; {UID_B} at (0.00, 0.00, 1.00) mm: y.",
        ),
    ],
    ids=["none", "one-with-position", "two-one-without-position"],
)
def test_dropped_slices_note_says_how_many_slices_the_result_covers_and_names_each_left_out(used, dropped, expected):
    assert dropped_slices_note(used, dropped) == expected


def test_dropped_slices_note_lists_at_most_twenty_and_fits_an_lt():
    dropped = [(f"{UID_A}{i}", (0.0, 0.0, float(i)), "pixel data unreadable " + "x" * 500) for i in range(300)]
    note = dropped_slices_note(10, dropped)
    assert note.startswith("Covers 10 of the 310 slices") and note.endswith("and 280 more (summary.json lists them).")
    assert note.count(UID_A) == 20 and len(note) <= 10240
