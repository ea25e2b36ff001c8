"""FROC scoring pure functions: look-up, per-slide scoring, the curve and its reading, against hand-worked
cases and a loop transcription of the official code on random cases."""

from __future__ import annotations

import numpy as np
import pytest

from training.pathology.detections import Detections
from training.pathology.evaluation_masks import itc_labels, label_evaluation_mask
from training.pathology.froc_scoring import (
    FP_RATES,
    detection_pixels,
    froc_curve,
    froc_score,
    lookup_labels,
    score_slide,
    sensitivities_at,
)

from . import official_transcription as official


@pytest.mark.parametrize(
    ("x", "y", "level", "col", "row"),
    [
        (0, 0, 5, 0, 0),
        (31, 31, 5, 0, 0),
        (32, 31, 5, 1, 0),
        (31.9, 63.99, 5, 0, 1),  # decimal coordinates: floor, as int() of a non-negative int division
        (1000, 2047, 5, 31, 63),
        (1000, 2047, 6, 15, 31),
        (64, 64, 6, 1, 1),
        (5, 7, 0, 5, 7),
        (-1, 10, 5, -1, 0),  # outside: the caller treats it as background
    ],
)
def test_detection_pixels(x: float, y: float, level: int, col: int, row: int) -> None:
    c, r = detection_pixels(np.array([x]), np.array([y]), level)
    assert (int(c[0]), int(r[0])) == (col, row)


def test_lookup_is_row_y_column_x_and_background_outside() -> None:
    labels = np.zeros((3, 4), np.int32)  # (h, w): 3 rows (y), 4 columns (x)
    labels[2, 0] = 7  # x in [0, 32), y in [64, 96)
    labels[0, 3] = 9  # x in [96, 128), y in [0, 32)
    hit, inside = lookup_labels(labels, np.array([10, 100, 70, 200, 10, -3]), np.array([70, 5, 70, 5, 96, 5]), 5)
    assert hit.tolist() == [7, 9, 0, 0, 0, 0]
    assert inside.tolist() == [True, True, True, False, False, False]


def _det(rows: list[tuple[float, float, float]]) -> Detections:
    return Detections.from_rows(rows)


def test_score_slide_rules() -> None:
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0] = 1  # a lesion
    labels[0, 2] = 2  # an ITC
    labels[3, 3] = 3  # a lesion nobody finds
    det = _det(
        [
            (0.4, 5, 5),
            (0.9, 20, 10),
            (0.6, 3, 3),  # lesion 1: max 0.9, two repeats
            (0.8, 70, 1),  # ITC: ignored
            (0.3, 40, 40),
            (0.2, 500, 500),
        ]
    )  # background, outside the frame
    o = score_slide("s", det, labels, [2], 5)
    assert o.fp_probabilities.tolist() == [0.3, 0.2]
    assert o.lesion_probabilities.dtype == np.float32
    assert o.lesion_probabilities.tolist() == [np.float32(0.9), 0.0, 0.0]
    assert (o.n_lesions, o.n_itc_hits, o.n_repeat_hits, o.n_outside_frame, o.n_detections) == (2, 1, 2, 1, 6)
    assert o.best_detection == {1: 1}


def test_normal_slide_every_detection_is_a_false_positive() -> None:
    o = score_slide("n", _det([(0.9, 0, 0), (0.1, 5, 5)]), None, [], 5)
    assert o.fp_probabilities.tolist() == [0.9, 0.1]
    assert o.lesion_probabilities.size == 0 and o.n_lesions == 0 and not o.has_ground_truth


# Hand-worked cases: (FP probabilities of all slides, per-label maxima (0 = missed or ITC), n_lesions, n_slides,
# the six sensitivities at 0.25, 0.5, 1, 2, 4, 8 FPs per slide).
HAND_CASES = {
    # Tumour slide A: lesions at 0.875, 0.625, 0.25, one missed, one ITC (0); FPs 0.75, 0.5.
    # Normal slide B: FPs 0.9375, 0.25, 0.125. Two slides, four lesions.
    # Thresholds (distinct values, smallest (0) dropped): .125 .25 .5 .625 .75 .875 .9375
    #   FPs >= t: 5 4 3 2 2 1 1, then the appended 0 -> per slide 2.5 2 1.5 1 1 .5 .5 0
    #   TPs >= t: 3 3 2 2 1 1 0, then 0             -> sensitivity .75 .75 .5 .5 .25 .25 0 0
    # Reversed: x = 0 .5 .5 1 1 1.5 2 2.5, y = 0 0 .25 .25 .5 .5 .75 .75. np.interp takes, at a repeated
    # x, the last point with that x: 0.25 -> between (0, 0) and (.5, 0) = 0; 0.5 -> .25; 1 -> .5;
    # 2 -> .75; 4 and 8 beyond 2.5 -> .75. FROC = (0 + .25 + .5 + .75 * 3) / 6 = 0.5.
    "plateaus_and_repeated_x": ([0.75, 0.5, 0.9375, 0.25, 0.125], [0.875, 0.625, 0.25, 0.0, 0.0], 4, 2, [0.0, 0.25, 0.5, 0.75, 0.75, 0.75]),
    # Tumour slide: lesions 0.75, 0.5, one missed; FP 0.5. Normal slide: FP 0.25. Three lesions, two slides.
    # Thresholds .25 .5 .75: FPs 2 1 0 (+0) -> 1 .5 0 0; TPs 2 2 1 (+0) -> 2/3 2/3 1/3 0.
    # Reversed x = 0 0 .5 1, y = 0 1/3 2/3 2/3: 0.25 -> 1/3 + (1/3)(.25/.5) = 0.5 (linear interpolation);
    # 0.5 and above -> 2/3. FROC = (0.5 + 5 * 2/3) / 6 = 23/36.
    "linear_interpolation": ([0.5, 0.25], [0.75, 0.5, 0.0], 3, 2, [0.5] + [2 / 3] * 5),
    # No 0 in the pool (every lesion found, no ITC): the dropped smallest value is the 0.5 lesion, so it
    # is never counted. Thresholds: .75 only -> FPs 0, TPs 1; + (0, 0). x = 0 0, y = 0 .5: every rate
    # lies beyond the last x -> 0.5. (Counting it would give 1.0 from 0.5 FPs per slide on.)
    "weakest_point_dropped": ([0.5], [0.75, 0.5], 2, 2, [0.5] * 6),
    # No false positives at all: one point at 0 FPs per slide. Thresholds .5 .875: TPs 2 1 (+0) of 3.
    # x = 0 0 0, y = 0 1/3 2/3 -> 2/3 everywhere.
    "no_false_positives": ([], [0.875, 0.5, 0.0], 3, 4, [2 / 3] * 6),
}


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_froc_hand_worked(case: str) -> None:
    fps, tps, n_lesions, n_slides, expected = HAND_CASES[case]
    curve = froc_curve(np.array(fps, np.float64), np.array(tps, np.float32), n_lesions, n_slides)
    np.testing.assert_allclose(sensitivities_at(curve, FP_RATES), expected, rtol=0, atol=1e-12)
    assert froc_score(curve) == pytest.approx(np.mean(expected), abs=1e-12)
    ref_fps, ref_sens = official.froc([list(fps)], [np.array(tps, np.float32)], [n_lesions])
    np.testing.assert_allclose(curve.fps_per_slide * n_slides, ref_fps * 1.0, atol=1e-12)  # one "slide" in the transcription
    np.testing.assert_allclose(curve.sensitivity, ref_sens, atol=1e-12)


def test_plateau_case_curve_points() -> None:
    fps, tps, n_lesions, n_slides, _ = HAND_CASES["plateaus_and_repeated_x"]
    curve = froc_curve(np.array(fps), np.array(tps, np.float32), n_lesions, n_slides)
    assert curve.thresholds.tolist() == [0.125, 0.25, 0.5, 0.625, 0.75, 0.875, 0.9375, np.inf]
    assert curve.fps_per_slide.tolist() == [2.5, 2.0, 1.5, 1.0, 1.0, 0.5, 0.5, 0.0]
    assert curve.sensitivity.tolist() == [0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]


def test_float32_lesion_maxima_tie_with_float64_false_positives() -> None:
    """0.7 as a lesion maximum is float32 0.69999999; an FP of 0.7 then adds a threshold of its own, and
    the lesion still counts at threshold 0.7 because the float32 array is compared in float32."""
    curve = froc_curve(np.array([0.7]), np.array([0.7, 0.0], np.float32), 2, 1)
    assert curve.thresholds[:2].tolist() == [float(np.float32(0.7)), 0.7]
    assert curve.fps_per_slide.tolist() == [1.0, 1.0, 0.0]
    assert curve.sensitivity.tolist() == [0.5, 0.5, 0.0]


def test_no_lesions_is_an_error() -> None:
    with pytest.raises(ValueError, match="no lesions"):
        froc_curve(np.array([0.5]), np.zeros(0, np.float32), 0, 1)


def _random_slide(rng: np.random.Generator, tumor: bool, level: int):
    shape = (int(rng.integers(30, 70)), int(rng.integers(30, 70)))
    mask = np.zeros(shape, bool)
    if tumor:
        r, c = np.ogrid[: shape[0], : shape[1]]
        for _ in range(int(rng.integers(1, 6))):
            cr, cc, rad = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(0.5, 16)
            mask |= (r - cr) ** 2 + (c - cc) ** 2 <= rad**2
    n = int(rng.integers(0, 25))
    d = 2**level
    xs = [int(v) for v in rng.integers(0, shape[1] * d, n)]
    ys = [int(v) for v in rng.integers(0, shape[0] * d, n)]
    # coarse grid (ties between slides, FPs and lesions; float32 rounding of 0.1, 0.7 ...) and some noise
    probs = [float(v) for v in np.where(rng.uniform(size=n) < 0.6, rng.integers(1, 10, n) / 10, rng.uniform(size=n))]
    return mask, xs, ys, probs


@pytest.mark.parametrize("level", [5, 6])
def test_agrees_with_loop_transcription_on_random_cases(level: int) -> None:
    rng = np.random.default_rng(level)
    checked = 0
    for _ in range(40):
        fp_lists, tp_lists, n_tumors, fps_all, tps_all, n_lesions = [], [], [], [], [], 0
        for k in range(int(rng.integers(1, 6))):
            tumor = k == 0 or rng.uniform() < 0.5
            mask, xs, ys, probs = _random_slide(rng, tumor, level)
            if tumor:
                ref_labels = official.evaluation_mask(np.where(mask, 255, 0).astype(np.uint8), 0.243, level)
                ref_itc = official.itc_list(ref_labels, 0.243, level)
                fp, tp, n = official.fp_tp_probs(ys, xs, probs, True, ref_labels, ref_itc, level)
                labels = label_evaluation_mask(mask, 0.243, level)
                o = score_slide(
                    "t", Detections.from_rows(list(zip(probs, xs, ys, strict=True))), labels, itc_labels(labels, 0.243, level), level
                )
            else:
                fp, tp, n = official.fp_tp_probs(ys, xs, probs, False, 0, [], level)
                o = score_slide("n", Detections.from_rows(list(zip(probs, xs, ys, strict=True))), None, [], level)
            assert sorted(o.fp_probabilities.tolist()) == sorted(fp)
            np.testing.assert_array_equal(o.lesion_probabilities, tp)
            assert o.n_lesions == n
            fp_lists.append(fp)
            tp_lists.append(tp)
            n_tumors.append(n)
            fps_all.append(o.fp_probabilities)
            tps_all.append(o.lesion_probabilities)
            n_lesions += o.n_lesions
        if n_lesions == 0:
            continue
        ref_fps, ref_sens = official.froc(fp_lists, tp_lists, n_tumors)
        ref_values, ref_score = official.score(ref_fps, ref_sens)
        curve = froc_curve(np.concatenate(fps_all), np.concatenate(tps_all), n_lesions, len(fp_lists))
        np.testing.assert_array_equal(curve.fps_per_slide, ref_fps)
        np.testing.assert_array_equal(curve.sensitivity, ref_sens)
        np.testing.assert_array_equal(sensitivities_at(curve), ref_values)
        assert froc_score(curve) == ref_score
        checked += 1
    assert checked >= 30
