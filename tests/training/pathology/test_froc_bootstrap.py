"""Slide-bootstrap intervals of the FROC: the identity resample is the official score; paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from training.pathology.froc_bootstrap import bootstrap_froc, paired_froc_difference, pooled_froc, slide_scores
from training.pathology.froc_scoring import froc_curve, froc_score


def _slide(name: str, fps: list[float], lesions: list[tuple[float | None, bool]] = ()) -> dict:
    return {
        "slide": name,
        "type": "Tumor" if lesions else "Normal",
        "lesions": [{"max_probability": p, "is_itc": itc} for p, itc in lesions],
        "false_positives": {"probability": fps, "x_level0": [0.0] * len(fps), "y_level0": [0.0] * len(fps)},
    }


def _report(seed: int, n_tumor: int = 6, n_normal: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    slides = []
    for i in range(n_tumor):
        lesions = [(float(p) if p > 0.3 else None, False) for p in rng.uniform(0, 1, rng.integers(1, 4))] + [(None, True)]
        slides.append(_slide(f"t{i}", rng.uniform(0, 1, rng.integers(0, 6)).tolist(), lesions))
    slides += [_slide(f"n{i}", rng.uniform(0, 1, rng.integers(0, 6)).tolist()) for i in range(n_normal)]
    return {"slides": slides}


@pytest.mark.parametrize("seed", range(5))
def test_the_pooled_score_of_all_slides_is_the_official_froc(seed) -> None:
    report = _report(seed)
    scores = slide_scores(report)
    fps = np.concatenate([s.fp_probabilities for s in scores.values()])
    lesions = np.concatenate([s.lesion_probabilities for s in scores.values()])  # ITC and missed lesions at 0, as TP_probs
    n_lesions = sum(not les["is_itc"] for s in report["slides"] for les in s["lesions"])
    expected = froc_score(froc_curve(fps, lesions, n_lesions, len(report["slides"])))
    assert pooled_froc(list(scores.values())) == expected
    assert bootstrap_froc(report, n_bootstrap=50)["froc"] == expected


def test_the_interval_holds_the_score_and_narrows_with_more_slides() -> None:
    small = bootstrap_froc(_report(1, 4, 4), n_bootstrap=400)
    large = bootstrap_froc(_report(1, 40, 40), n_bootstrap=400)
    for b in (small, large):
        assert b["ci_low"] <= b["froc"] <= b["ci_high"]
    assert large["ci_high"] - large["ci_low"] < small["ci_high"] - small["ci_low"]


def test_resamples_keep_both_classes_and_skip_those_without_lesions() -> None:
    only_itc = _slide("t0", [0.9], [(None, True)])
    report = {"slides": [only_itc, _slide("t1", [], [(0.8, False)]), _slide("n0", [0.7])]}
    out = bootstrap_froc(report, n_bootstrap=200, seed=3)
    assert 0 < out["n_bootstrap"] < 200  # resamples drawing t0 twice have no scored lesion: left out, counted


@pytest.mark.parametrize(
    ("shift", "sign"),
    [(0.0, 0), (0.2, 1), (-0.2, -1)],
)
def test_paired_differences_follow_a_change_of_the_lesion_probabilities(shift, sign) -> None:
    reference = _report(2)
    other = {
        "slides": [
            {
                **s,
                "lesions": [
                    {**les, "max_probability": None if les["max_probability"] is None else min(1.0, les["max_probability"] + shift)}
                    for les in s["lesions"]
                ],
            }
            for s in reference["slides"]
        ]
    }
    d = paired_froc_difference(reference, other, n_bootstrap=300)
    assert np.sign(round(d["difference"], 9)) == sign
    assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    if sign == 0:
        assert d["ci_low"] == d["ci_high"] == 0.0


def test_reports_of_other_slides_or_without_false_positives_are_refused() -> None:
    with pytest.raises(ValueError, match="different slides"):
        paired_froc_difference(_report(0), _report(0, n_normal=5), n_bootstrap=10)
    legacy = {"slides": [{"slide": "a", "type": "Normal", "lesions": []}]}
    with pytest.raises(ValueError, match="no false_positives"):
        slide_scores(legacy)
