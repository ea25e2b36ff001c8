from __future__ import annotations

import pytest

from operators.dicom.uids import uid_problem


@pytest.mark.parametrize("uid", ["1.2.3", "0", "1.2.840.10008.5.1.4.1.1.66.4", "2.25." + "9" * 59, "1.0.3"])
def test_valid_uids_pass(uid: str):
    assert uid_problem(uid) is None


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("", "empty"),
        ("1.2." + "3" * 61, "more than 64"),
        ("1..2", "empty component"),
        ("1.2.", "empty component"),
        (".1.2", "empty component"),
        ("1.02.3", "leading zero"),
        ("1.2.3a", "not digits"),
        ("1.2.-3", "not digits"),
        ("1.2.٣", "not digits"),  # an Arabic-Indic digit: str.isdigit() says yes, DICOM says no
        (" 1.2.3", "not digits"),
    ],
)
def test_invalid_uids_are_named(uid: str, problem: str):
    assert problem in uid_problem(uid)
