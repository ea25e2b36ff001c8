"""Bootstrap intervals of the Camelyon16 FROC: slides resampled with replacement, the official score recomputed.

A FROC report (:func:`training.pathology.froc.evaluate`) holds, per slide, its false positives'
probabilities and each lesion's best probability (ITC and missed lesions at 0, as the official
``TP_probs``). A resample draws, separately within the tumour and the normal slides (stratified, as
:func:`training.pathology.auc.bootstrap_auc_interval`), as many slides as there are, and scores the
pooled outcomes with the official :func:`.froc_scoring.froc_curve` and six-rate reading. The identity
resample gives the report's own FROC exactly. Intervals are percentile intervals.

:func:`paired_froc_difference` resamples the same slides for two reports of one test set, so the
interval of the difference between two models (or runtimes) leaves out the between-slide variance that
both share: what decides whether a change moved the score beyond the test set's noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .froc_scoring import froc_curve, froc_score


@dataclass(frozen=True)
class SlideScores:
    """One slide's part of the FROC: false-positive probabilities (float64) and lesion maxima (float32, ITCs at 0)."""

    fp_probabilities: np.ndarray
    lesion_probabilities: np.ndarray
    n_lesions: int  # ITCs excluded
    tumor: bool


def slide_scores(report: Mapping[str, Any]) -> dict[str, SlideScores]:
    """Per-slide scores of a FROC report (its ``slides`` with ``lesions`` and ``false_positives``)."""
    out = {}
    for slide in report["slides"]:
        if "false_positives" not in slide:
            raise ValueError(f"FROC report slide {slide['slide']} has no false_positives: written by an older evaluate?")
        lesions = slide["lesions"]
        out[slide["slide"]] = SlideScores(
            np.asarray(slide["false_positives"]["probability"], np.float64),
            np.asarray([lesion["max_probability"] or 0.0 for lesion in lesions], np.float32),
            sum(not lesion["is_itc"] for lesion in lesions),
            slide["type"] == "Tumor",
        )
    return out


def pooled_froc(slides: Sequence[SlideScores]) -> float | None:
    """The official FROC of a set of slides (repeats allowed); None when it holds no scored lesion."""
    n_lesions = sum(s.n_lesions for s in slides)
    if n_lesions == 0:
        return None
    curve = froc_curve(
        np.concatenate([s.fp_probabilities for s in slides]),
        np.concatenate([s.lesion_probabilities for s in slides]),
        n_lesions,
        len(slides),
    )
    return froc_score(curve)


def _resamples(slides: Mapping[str, SlideScores], n_bootstrap: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    names = sorted(slides)
    groups = [[n for n in names if slides[n].tumor], [n for n in names if not slides[n].tumor]]
    return [[g[i] for g in groups if g for i in rng.integers(0, len(g), len(g))] for _ in range(n_bootstrap)]


def _interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(values, np.float64), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def bootstrap_froc(report: Mapping[str, Any], n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """The report's FROC with its stratified bootstrap percentile interval (module docstring)."""
    slides = slide_scores(report)
    froc = pooled_froc(list(slides.values()))
    values = [v for names in _resamples(slides, n_bootstrap, seed) if (v := pooled_froc([slides[n] for n in names])) is not None]
    lo, hi = _interval(values, confidence) if values else (None, None)
    return {"froc": froc, "ci_low": lo, "ci_high": hi, "confidence": confidence, "n_bootstrap": len(values), "seed": seed}


def paired_froc_difference(
    reference: Mapping[str, Any], other: Mapping[str, Any], n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """FROC(other) - FROC(reference) on the same resampled slides, its interval and the share of resamples where it is > 0.

    Raises:
        ValueError: when the two reports do not cover the same slides.
    """
    a, b = slide_scores(reference), slide_scores(other)
    if sorted(a) != sorted(b):
        raise ValueError(f"the reports cover different slides: {sorted(set(a) ^ set(b))}")
    diffs = []
    for names in _resamples(a, n_bootstrap, seed):
        fa, fb = pooled_froc([a[n] for n in names]), pooled_froc([b[n] for n in names])
        if fa is not None and fb is not None:
            diffs.append(fb - fa)
    lo, hi = _interval(diffs, confidence)
    return {
        "difference": pooled_froc(list(b.values())) - pooled_froc(list(a.values())),
        "ci_low": lo,
        "ci_high": hi,
        "share_above_zero": float(np.mean(np.asarray(diffs) > 0)),
        "confidence": confidence,
        "n_bootstrap": len(diffs),
        "seed": seed,
    }
