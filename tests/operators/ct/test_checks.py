from __future__ import annotations

import pytest

from operators.ct.checks import IMPLAUSIBLE_VOLUME_FLAG, result_checks, volume_range_ml
from operators.ct.preflight import NON_ABDOMINAL_FLAG, AbdominalCheck
from operators.dicom.result_texts import SLICES_DROPPED_FLAG
from operators.models.loader import UNVERIFIED_MODEL_FLAG

ABDOMINAL = AbdominalCheck(True, (), "ABDOMEN", 384.0, 200.0)
HEAD = AbdominalCheck(False, ("BodyPartExamined is HEAD",), "HEAD", 245.0, 162.0)
RANGE = (20.0, 2500.0)


@pytest.mark.parametrize(
    ("abdominal", "volume_ml", "found", "verified", "flags", "dropped"),
    [
        (ABDOMINAL, 194.2, True, True, (), 0),
        (ABDOMINAL, 20.0, True, True, (), 0),  # the range is inclusive
        (ABDOMINAL, 9774.7, True, True, (IMPLAUSIBLE_VOLUME_FLAG,), 0),  # the corrupted model's "spleen"
        (ABDOMINAL, 3.5, True, True, (IMPLAUSIBLE_VOLUME_FLAG,), 0),
        (ABDOMINAL, 0.0, False, True, (), 0),  # no spleen found: not a volume to judge
        (HEAD, 3.5, True, True, (NON_ABDOMINAL_FLAG, IMPLAUSIBLE_VOLUME_FLAG), 0),
        (ABDOMINAL, 194.2, True, False, (UNVERIFIED_MODEL_FLAG,), 0),
        (ABDOMINAL, 194.2, True, True, (SLICES_DROPPED_FLAG,), 1),  # a truncated edge slice left out
        (ABDOMINAL, 0.0, False, False, (UNVERIFIED_MODEL_FLAG, SLICES_DROPPED_FLAG), 3),
    ],
)
def test_result_flags(abdominal, volume_ml, found, verified, flags, dropped):
    checks = result_checks(abdominal, volume_ml, found, RANGE, verified, dropped)
    assert checks.flags == flags
    summary = checks.as_json()
    assert summary["flags"] == list(flags) and summary["model_verified"] is verified and summary["dropped_slices"] == dropped
    assert summary["spleen_volume"]["plausible"] == (IMPLAUSIBLE_VOLUME_FLAG not in flags)
    assert summary["abdominal_series"] == abdominal.as_json()


def test_the_volume_range_comes_from_the_config_unless_overridden():
    assert volume_range_ml({"spleen_volume_ml": [20, 2500]}) == (20.0, 2500.0)
    assert volume_range_ml({"spleen_volume_ml": [20, 2500]}, (5.0, 50.0)) == (5.0, 50.0)
    with pytest.raises(ValueError, match="min < max"):
        volume_range_ml({"spleen_volume_ml": [300, 20]})
