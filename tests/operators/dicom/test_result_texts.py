from __future__ import annotations

import pytest

from operators.dicom.result_texts import result_series_description


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
