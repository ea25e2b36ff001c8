"""Lesion-level FROC exactly as the official Camelyon16 evaluation, and the model-zoo bundle's variant.

``python -m training.pathology.froc --ground-truth GT_DIR --detections DET_DIR --json OUT.json
[--level 5] [--tumor-slides-only] [--mpp 0.243] [--slides SLIDES_DIR]``

Reimplemented from the official code (computationalpathologygroup/Camelyon16 ``Python/Evaluation_FROC.py``,
commit 04faac5; NCRF's Python 3 port baidu-research/NCRF ``wsi/bin/Evaluation_FROC.py``, commit 7e3a142,
which adds the reading of the six rates). Per decision (official function, then what is done here):

- slide set (``__main__``): every ``*.csv`` of the results folder is a slide; a slide is a tumour slide
  when its ground truth exists (NCRF: ``case[0:-4] in ground_truth_test``; the 2016 script: name starts
  with ``Tumor``). A ground-truth slide with no CSV is not seen at all by the official code; here it
  is evaluated with zero detections and a warning (its lesions count as missed and it counts in the
  FP average), so a lost CSV can only lower the score.
- evaluation mask and ITCs (``computeEvaluationMask``, ``computeITCList``): :mod:`.evaluation_masks`.
- look-up (``compute_FP_TP_Probs``): ``evaluation_mask[int(y / 2**level), int(x / 2**level)]`` (NCRF;
  Python 2 floor division in the original): :func:`detection_pixels`. Label 0 is a false positive;
  an ITC label is ignored; any other label is a hit, and only the lesion's highest probability is
  kept (later hits on the same lesion are neither TPs nor FPs). On a slide without ground truth every
  detection is a false positive. Outside the mask frame the official code either wraps around
  (negative index) or raises IndexError; here such a detection is background (FP) and is counted.
- per-lesion maximum: the official ``TP_probs`` is a float32 array with one entry per label, ITC
  labels and missed lesions left at 0; FP probabilities stay float64. That mix is kept (it decides
  ties: float32(0.7) < 0.7), see :func:`froc_curve`.
- curve (``computeFROC``) and reading (NCRF ``__main__``): :func:`froc_curve`, :func:`sensitivities_at`.
- denominators: FPs are averaged over all evaluated slides (``len(FROC_data[0])``: normal and tumour),
  sensitivity over the non-ITC lesions of all tumour slides.

The bundle's variant (MONAI ``LesionFROC`` as configured by the pathology_tumor_detection bundle) is the
same algorithm at level 6 over the tumour slides only: ``--level 6 --tumor-slides-only``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .detections import Detections, find_detection_csvs, read_detections_csv
from .evaluation_masks import (
    CAMELYON16_MPP,
    OFFICIAL_LEVEL,
    GroundTruthFile,
    describe_lesions,
    find_ground_truth,
    find_slide_file,
    growth_radius_px,
    itc_labels,
    itc_threshold_px,
    label_evaluation_mask,
    level_downsample,
    read_tumor_mask_at_level,
    slide_size_xy_level0,
)

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- slides on disk


@dataclass(frozen=True)
class SlidePlan:
    slide: str
    csv: Path | None
    ground_truth: GroundTruthFile | None


def plan_slides(ground_truth: dict[str, GroundTruthFile], csvs: dict[str, Path], tumor_slides_only: bool) -> list[SlidePlan]:
    """The slides to evaluate: every CSV (official) plus ground-truth slides without one; only ground-truth slides in the variant.

    CSV and ground truth are paired by name, case-insensitively when no exact match exists.
    """
    gt_by_fold: dict[str, str] = {}
    for name in ground_truth:
        if name.casefold() in gt_by_fold:
            raise ValueError(f"ground truths {gt_by_fold[name.casefold()]!r} and {name!r} differ only in case")
        gt_by_fold[name.casefold()] = name
    plans: list[SlidePlan] = []
    used: set[str] = set()
    for name, csv in csvs.items():
        gt_name = name if name in ground_truth else gt_by_fold.get(name.casefold())
        if gt_name is not None and gt_name != name:
            logger.warning("pairing %s with ground truth %s (names differ in case)", csv.name, ground_truth[gt_name].path.name)
        if gt_name is None and tumor_slides_only:
            continue
        if gt_name is not None:
            used.add(gt_name)
        plans.append(SlidePlan(name, csv, ground_truth[gt_name] if gt_name else None))
    missing = sorted(set(ground_truth) - used)
    for name in missing:
        logger.warning(
            "%s has ground truth but no detection CSV: evaluated with zero detections (the official code would leave the slide out)", name
        )
        plans.append(SlidePlan(name, None, ground_truth[name]))
    if tumor_slides_only:
        logger.info("tumor slides only: %d CSV(s) without ground truth left out", len(csvs) - (len(plans) - len(missing)))
    return sorted(plans, key=lambda p: p.slide)


@dataclass
class SlideReport:
    outcome: SlideOutcome
    plan: SlidePlan
    detections: Detections
    lesions: list = field(default_factory=list)  # evaluation_masks.LesionInfo
    mask_shape_hw: tuple[int, int] | None = None
    mask_how: str | None = None

    def as_json(self) -> dict:
        o, det = self.outcome, self.detections
        lesions = []
        for les in self.lesions:
            i = o.best_detection.get(les.label)
            lesions.append(
                {
                    "label": les.label,
                    "is_itc": les.is_itc,
                    "major_axis_px": round(les.major_axis_px, 3),
                    "area_px": les.area_px,
                    "centroid_xy_level0": [round(v, 1) for v in les.centroid_xy_level0],
                    "bbox_xyxy_level0": list(les.bbox_xyxy_level0),
                    "detected": i is not None,
                    "max_probability": None if i is None else float(det.probability[i]),
                    "hit_xy_level0": None if i is None else [float(det.x_level0[i]), float(det.y_level0[i])],
                }
            )
        return {
            "slide": o.slide,
            "type": "Tumor" if o.has_ground_truth else "Normal",
            "detections_csv": None if self.plan.csv is None else str(self.plan.csv),
            "ground_truth": None if self.plan.ground_truth is None else str(self.plan.ground_truth.path),
            "evaluation_mask": None if self.mask_shape_hw is None else {"shape_hw": list(self.mask_shape_hw), "source": self.mask_how},
            "n_detections": o.n_detections,
            "n_false_positives": int(o.fp_probabilities.size),
            "n_itc_hits": o.n_itc_hits,
            "n_repeat_hits": o.n_repeat_hits,
            "n_outside_frame": o.n_outside_frame,
            "n_lesions": o.n_lesions,
            "n_itc": len(o.itc),
            "n_lesions_detected": len(o.best_detection),
            "lesions": lesions,
        }


def evaluate_slide(plan: SlidePlan, level: int, mpp: float, slides_dir: Path | None = None) -> SlideReport:
    """Read one slide's detections and ground truth and score it."""
    det = read_detections_csv(plan.csv) if plan.csv is not None else Detections.from_rows([])
    if plan.ground_truth is None:
        return SlideReport(score_slide(plan.slide, det, None, [], level), plan, det)
    size = None
    if plan.ground_truth.kind == "xml" and slides_dir is not None:
        slide_file = find_slide_file(slides_dir, plan.slide)
        if slide_file is None:
            logger.warning("%s: no slide in %s; rasterising the XML on the polygons' extent", plan.slide, slides_dir)
        else:
            size = slide_size_xy_level0(slide_file)
    mask = read_tumor_mask_at_level(plan.ground_truth, level, mpp, size)
    labels = label_evaluation_mask(mask.tumor, mpp, level)
    outcome = score_slide(plan.slide, det, labels, itc_labels(labels, mpp, level), level)
    if outcome.n_outside_frame:
        logger.warning(
            "%s: %d detection(s) outside the %dx%d evaluation mask counted as false positives",
            plan.slide,
            outcome.n_outside_frame,
            labels.shape[1],
            labels.shape[0],
        )
    return SlideReport(outcome, plan, det, describe_lesions(labels, mpp, level), labels.shape, mask.how)


def _json_float(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def evaluate(
    ground_truth_dir: str | Path,
    detections_dir: str | Path,
    level: int = OFFICIAL_LEVEL,
    mpp: float = CAMELYON16_MPP,
    tumor_slides_only: bool = False,
    slides_dir: str | Path | None = None,
    fp_rates: Sequence[float] = FP_RATES,
) -> dict:
    """Evaluate a detections folder against a ground-truth folder; returns the JSON-ready report."""
    plans = plan_slides(find_ground_truth(ground_truth_dir), find_detection_csvs(detections_dir), tumor_slides_only)
    if not plans:
        raise ValueError(f"no slides: no CSV in {detections_dir} and no ground truth in {ground_truth_dir}")
    reports = []
    for plan in plans:
        reports.append(evaluate_slide(plan, level, mpp, None if slides_dir is None else Path(slides_dir)))
        logger.debug("evaluated %s", plan.slide)
    outcomes = [r.outcome for r in reports]
    curve = froc_curve(
        np.concatenate([o.fp_probabilities for o in outcomes]),
        np.concatenate([o.lesion_probabilities for o in outcomes]),
        sum(o.n_lesions for o in outcomes),
        len(outcomes),
    )
    sens = sensitivities_at(curve, fp_rates)
    return {
        "froc": float(np.mean(sens)),
        "sensitivity_at_fp_rates": {f"{r:g}": float(s) for r, s in zip(fp_rates, sens, strict=True)},
        "fp_rates": [float(r) for r in fp_rates],
        "variant": "model-zoo bundle (tumor slides only)" if tumor_slides_only else "Camelyon16 official (all slides)",
        "level": level,
        "downsample": level_downsample(level),
        "mpp": mpp,
        "growth_radius_px": growth_radius_px(mpp, level),
        "itc_threshold_px": itc_threshold_px(mpp, level),
        "tumor_slides_only": tumor_slides_only,
        "n_slides": len(outcomes),
        "n_tumor_slides": sum(o.has_ground_truth for o in outcomes),
        "n_normal_slides": sum(not o.has_ground_truth for o in outcomes),
        "n_lesions": curve.n_lesions,
        "n_itc": sum(len(o.itc) for o in outcomes),
        "n_lesions_detected": sum(len(o.best_detection) for o in outcomes),
        "n_detections": sum(o.n_detections for o in outcomes),
        "n_false_positives": int(sum(o.fp_probabilities.size for o in outcomes)),
        "slides_without_detections_csv": [p.slide for p in plans if p.csv is None],
        "curve": {
            "threshold": [_json_float(t) for t in curve.thresholds],
            "fps_per_slide": curve.fps_per_slide.tolist(),
            "sensitivity": curve.sensitivity.tolist(),
        },
        "slides": [r.as_json() for r in reports],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.pathology.froc",
        allow_abbrev=False,
        description="Camelyon16 lesion-level FROC (official algorithm) of a folder of detection CSVs.",
    )
    ap.add_argument(
        "--ground-truth",
        type=Path,
        required=True,
        metavar="GT_DIR",
        help="<slide>.tif / <slide>_mask.tif masks (non-zero = tumor) or <slide>.xml ASAP annotations",
    )
    ap.add_argument("--detections", type=Path, required=True, metavar="DET_DIR", help="<slide>.csv rows probability,x,y (level 0)")
    ap.add_argument("--json", type=Path, required=True, metavar="OUT.json")
    ap.add_argument("--level", type=int, default=OFFICIAL_LEVEL, help="evaluation level (official 5; the bundle 6)")
    ap.add_argument("--tumor-slides-only", action="store_true", help="the bundle's variant: leave out slides without ground truth")
    ap.add_argument("--mpp", type=float, default=CAMELYON16_MPP, help="level-0 pixel size in um (0.243)")
    ap.add_argument(
        "--slides",
        type=Path,
        default=None,
        metavar="SLIDES_DIR",
        help="whole-slide images, for the level-0 frame of XML ground truth (default: the polygons' extent)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.level < 0 or not args.mpp > 0:
        ap.error("--level must be >= 0 and --mpp > 0")
    try:
        report = evaluate(args.ground_truth, args.detections, args.level, args.mpp, args.tumor_slides_only, args.slides)
    except (ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    logger.info(
        "FROC %.4f (%s, level %d, %d slides, %d lesions); sensitivities %s -> %s",
        report["froc"],
        report["variant"],
        args.level,
        report["n_slides"],
        report["n_lesions"],
        report["sensitivity_at_fp_rates"],
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
