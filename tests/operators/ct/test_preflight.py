from __future__ import annotations

import pytest

from operators.ct.preflight import AbdominalRule, check_abdominal, normalised_body_part
from testkit.dicom_factories import ct_stack


def series(slices: int = 40, spacing_mm: float = 2.5, side_px: int = 512, pixel_mm: float = 0.8, body_part: str | None = "ABDOMEN"):
    headers = ct_stack([i * spacing_mm for i in range(slices)], rows=side_px, columns=side_px, pixel_spacing=(pixel_mm, pixel_mm))
    for header in headers:
        if body_part is not None:
            header.BodyPartExamined = body_part
    return headers, spacing_mm


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"body_part": "HEAD"}, "BodyPartExamined is HEAD"),
        ({"body_part": "head_neck"}, "BodyPartExamined is head_neck"),  # compared without case or underscores
        ({"body_part": "KNEE"}, "BodyPartExamined is KNEE"),
        ({"side_px": 256, "pixel_mm": 0.9}, "axial field of view 230 mm is below an abdomen's 260 mm"),  # a head's FOV, no body part
        ({"slices": 5, "spacing_mm": 2.5}, "coverage along z 12 mm is below the 50 mm a spleen needs"),  # a calcium-score slab
    ],
)
def test_a_series_that_cannot_hold_a_spleen_is_named_with_its_reason(kwargs, reason):
    headers, spacing = series(**kwargs)
    check = check_abdominal(headers, spacing)
    assert not check.abdominal and check.reasons == (reason,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # the demo's kind of series: 410 mm, 100 mm
        {"body_part": None},  # no BodyPartExamined: the geometry decides
        {"body_part": ""},
        {"body_part": "CHEST"},  # a chest CT usually reaches the spleen
        {"body_part": "CHEST_ABDOMEN"},
        {"body_part": "WHOLEBODY"},
        {"body_part": "ABD ROUTINE"},  # site text
        {"side_px": 256, "pixel_mm": 1.5},  # 384 mm
    ],
)
def test_an_abdominal_series_passes(kwargs):
    headers, spacing = series(**kwargs)
    check = check_abdominal(headers, spacing)
    assert check.abdominal and check.reasons == ()


def test_every_failed_test_is_listed_and_the_measures_are_reported():
    headers, spacing = series(slices=108, spacing_mm=1.5, side_px=256, pixel_mm=0.957, body_part="HEAD")  # the InVesalius head CT
    check = check_abdominal(headers, spacing)
    assert len(check.reasons) == 2
    assert check.as_json() == {
        "abdominal": False,
        "reasons": list(check.reasons),
        "body_part_examined": "HEAD",
        "axial_fov_mm": 245.0,
        "z_coverage_mm": 162.0,
    }


def test_the_model_config_overrides_the_rule_numbers():
    rule = AbdominalRule.from_config({"abdominal": {"min_axial_fov_mm": 200, "min_z_coverage_mm": 10}})
    headers, spacing = series(slices=5, side_px=256, pixel_mm=0.9)
    assert check_abdominal(headers, spacing, rule).abdominal
    assert AbdominalRule.from_config({}) == AbdominalRule()


@pytest.mark.parametrize(("value", "expected"), [("Head-Neck", "HEADNECK"), (" c spine ", "CSPINE"), (None, "")])
def test_body_parts_are_compared_without_case_spaces_or_punctuation(value, expected):
    assert normalised_body_part(value) == expected
