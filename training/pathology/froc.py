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
  Python 2 floor division in the original): :func:`.froc_scoring.detection_pixels`. Label 0 is a false positive;
  an ITC label is ignored; any other label is a hit, and only the lesion's highest probability is
  kept (later hits on the same lesion are neither TPs nor FPs). On a slide without ground truth every
  detection is a false positive. Outside the mask frame the official code either wraps around
  (negative index) or raises IndexError; here such a detection is background (FP) and is counted.
- per-lesion maximum: the official ``TP_probs`` is a float32 array with one entry per label, ITC
  labels and missed lesions left at 0; FP probabilities stay float64. That mix is kept (it decides
  ties: float32(0.7) < 0.7), see :func:`.froc_scoring.froc_curve`.
- curve (``computeFROC``) and reading (NCRF ``__main__``): :func:`.froc_scoring.froc_curve`, :func:`.froc_scoring.sensitivities_at`.
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
from .froc_scoring import FP_RATES, SlideOutcome, froc_curve, lookup_labels, score_slide, sensitivities_at

logger = logging.getLogger(__name__)


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
    false_positive_index: np.ndarray | None = None  # detections that are false positives (score_slide's rule); None: all

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
                    "longest_diameter_px": round(les.longest_diameter_px, 3),
                    "area_px": les.area_px,
                    "centroid_xy_level0": [round(v, 1) for v in les.centroid_xy_level0],
                    "bbox_xyxy_level0": list(les.bbox_xyxy_level0),
                    "detected": i is not None,
                    "max_probability": None if i is None else float(det.probability[i]),
                    "hit_xy_level0": None if i is None else [float(det.x_level0[i]), float(det.y_level0[i])],
                }
            )
        fp = np.arange(len(det)) if self.false_positive_index is None else self.false_positive_index
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
            "false_positives": {
                "probability": det.probability[fp].tolist(),
                "x_level0": det.x_level0[fp].tolist(),
                "y_level0": det.y_level0[fp].tolist(),
            },
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
    fp = np.flatnonzero(lookup_labels(labels, det.x_level0, det.y_level0, level)[0] == 0)  # score_slide's false positives
    return SlideReport(outcome, plan, det, describe_lesions(labels, mpp, level), labels.shape, mask.how, fp)


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
