"""Lesion-level FROC scoring, exactly as the official Camelyon16 evaluation: the look-up of each
detection in the labelled evaluation mask, the per-slide split into false positives and per-lesion
maxima, the curve and its reading at six average false-positive rates.

Pure functions on arrays; which official function each one reimplements, and the decisions that
set the number, are in :mod:`training.pathology.froc`, which reads the slides from disk and scores
them with these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .detections import Detections
from .evaluation_masks import level_downsample

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Average false positives per slide at which the sensitivities are read (Camelyon16)."""


def detection_pixels(x_level0: np.ndarray, y_level0: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(column, row) of each detection in the level-``level`` mask: ``floor(coordinate / 2**level)``.

    For the official non-negative integer coordinates this is NCRF's ``int(y / 2**level)`` and the
    original's Python 2 ``y / 2**level`` alike.
    """
    d = float(level_downsample(level))
    col = np.floor(np.asarray(x_level0, np.float64) / d).astype(np.int64)
    row = np.floor(np.asarray(y_level0, np.float64) / d).astype(np.int64)
    return col, row


def lookup_labels(labels: np.ndarray, x_level0: np.ndarray, y_level0: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Label under each detection (0 outside the frame) and whether the detection is inside the frame."""
    col, row = detection_pixels(x_level0, y_level0, level)
    h, w = labels.shape
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    hit = np.zeros(col.shape, np.int64)
    hit[inside] = labels[row[inside], col[inside]]
    return hit, inside


@dataclass
class SlideOutcome:
    """True and false positives of one slide, in the official code's terms."""

    slide: str
    has_ground_truth: bool
    fp_probabilities: np.ndarray  # float64, one per false-positive detection
    lesion_probabilities: np.ndarray  # float32, one per label (ITCs and missed lesions: 0), official TP_probs
    n_lesions: int  # labels that are not ITCs
    itc: list[int] = field(default_factory=list)
    n_detections: int = 0
    n_itc_hits: int = 0  # detections on an ITC region: neither TP nor FP
    n_repeat_hits: int = 0  # detections on an already-hit lesion that are not its maximum: neither TP nor FP
    n_outside_frame: int = 0
    best_detection: dict[int, int] = field(default_factory=dict)  # label -> index of the detection kept


def score_slide(slide: str, detections: Detections, labels: np.ndarray | None, itc: Sequence[int], level: int) -> SlideOutcome:
    """Split one slide's detections into false positives and per-lesion maxima (``compute_FP_TP_Probs``).

    ``labels`` None: a slide without ground truth, where every detection is a false positive.
    """
    probs = detections.probability
    if labels is None:
        return SlideOutcome(slide, False, probs.astype(np.float64), np.zeros(0, np.float32), 0, [], len(probs))
    n_labels = int(labels.max()) if labels.size else 0
    itc_set = {int(i) for i in itc}
    hit, inside = lookup_labels(labels, detections.x_level0, detections.y_level0, level)
    is_itc = np.isin(hit, list(itc_set)) if itc_set else np.zeros(hit.shape, bool)
    fp = hit == 0
    tp = ~fp & ~is_itc
    best = np.zeros(n_labels, np.float64)
    chosen: dict[int, int] = {}
    for i in np.flatnonzero(tp):  # the official loop: keep a probability only if above the lesion's current one
        label = int(hit[i])
        if probs[i] > best[label - 1]:
            best[label - 1] = probs[i]
            chosen[label] = int(i)
    return SlideOutcome(
        slide,
        True,
        probs[fp].astype(np.float64),
        best.astype(np.float32),
        n_labels - len(itc_set),
        sorted(itc_set),
        len(probs),
        int(is_itc.sum()),
        int(tp.sum()) - len(chosen),
        int((~inside).sum()),
        chosen,
    )


@dataclass(frozen=True)
class FrocCurve:
    """Operating points from the lowest threshold used to none: average FPs per slide and sensitivity."""

    thresholds: np.ndarray  # ascending; the last point (inf) is the official appended (0, 0)
    fps_per_slide: np.ndarray
    sensitivity: np.ndarray
    n_slides: int
    n_lesions: int


def froc_curve(fp_probabilities: np.ndarray, lesion_probabilities: np.ndarray, n_lesions: int, n_slides: int) -> FrocCurve:
    """The official ``computeFROC``, vectorised.

    Thresholds are the distinct values of all FP probabilities and all per-lesion maxima (zeros of
    missed lesions and ITCs included) except the smallest: the official ``all_probs[1:]``. No comment
    says why; it drops the 0 of the missed lesions (at threshold 0 they would count as found), but
    when no 0 is in the pool (every lesion found, no ITC) it drops the weakest real detection's
    operating point instead. At each threshold t: FPs = #(FP >= t) in float64, TPs = #(lesion max >= t)
    where the lesion maxima are float32, so numpy compares them with t cast to float32 (also under
    NumPy 1's value-based casting). Then the point (0 FPs, 0 sensitivity) is appended; FPs are divided
    by ``n_slides`` and TPs by ``n_lesions``.

    The thresholds are in numeric order, as the official ``sorted(set(...))`` gave on NumPy 1 (the
    challenge's). Run as it is on NumPy 2, that sort compares float32 with Python floats in float32
    (NEP 50): float32(0.7) == 0.7 while both stay in the set, the sort is no longer an order and the
    curve can come out non-monotonic; that artefact is not reproduced.
    """
    if n_lesions <= 0:
        raise ValueError("no lesions (ITCs excluded) in the ground truth: sensitivity is undefined")
    if n_slides <= 0:
        raise ValueError("no slides")
    fp = np.sort(np.asarray(fp_probabilities, np.float64))
    tp = np.sort(np.asarray(lesion_probabilities, np.float32))
    pool = np.unique(np.concatenate([fp, tp.astype(np.float64)]))
    thresholds = pool[1:]
    fp_counts = fp.size - np.searchsorted(fp, thresholds, side="left")
    tp_counts = tp.size - np.searchsorted(tp, thresholds.astype(np.float32), side="left")
    return FrocCurve(
        np.append(thresholds, np.inf),
        np.append(fp_counts, 0) / float(n_slides),
        np.append(tp_counts, 0) / float(n_lesions),
        int(n_slides),
        int(n_lesions),
    )


def sensitivities_at(curve: FrocCurve, fp_rates: Sequence[float] = FP_RATES) -> np.ndarray:
    """Sensitivity at each average-FP rate: NCRF's ``np.interp(rates, total_FPs[::-1], total_sensitivity[::-1])``.

    So: linear interpolation between operating points (not the step function an FROC is); the
    x values repeat where thresholds change TPs but not FPs, and ``np.interp`` is used on them as
    they are, as the official reading does; rates beyond the largest average FP get the sensitivity
    at the lowest threshold used. The 2016 Python script only plots the curve; its six-rate score
    comes from this reading, which MONAI's ``compute_froc_score`` repeats.
    """
    return np.interp(np.asarray(fp_rates, np.float64), curve.fps_per_slide[::-1], curve.sensitivity[::-1])


def froc_score(curve: FrocCurve, fp_rates: Sequence[float] = FP_RATES) -> float:
    """Mean of :func:`sensitivities_at`: the Camelyon16 FROC score."""
    return float(np.mean(sensitivities_at(curve, fp_rates)))
