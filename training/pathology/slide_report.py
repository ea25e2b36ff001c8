"""Print where a slide's outputs are and, given its ground truth, which lesions the detections found.

``python -m training.pathology.slide_report SLIDE_OUTPUT_FOLDER [--ground-truth GT_DIR]``

GT_DIR holds ``<slide>.tif`` (tumour mask) or ``<slide>.xml`` (ASAP), as for
``python -m training.pathology.froc``; lesions are scored by the official Camelyon16 rules at level 5.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from training.pathology.evaluation_masks import CAMELYON16_MPP, OFFICIAL_LEVEL, find_ground_truth, level_downsample
from training.pathology.froc import SlidePlan, evaluate_slide

logger = logging.getLogger(__name__)


def lesion_lines(output_folder: Path, slide: str, ground_truth_dir: Path) -> list[str]:
    """One line per lesion of the slide's ground truth (hit or missed, ITCs marked), then the false positives."""
    truth = find_ground_truth(ground_truth_dir).get(slide)
    if truth is None:
        raise SystemExit(f"report: error: no ground truth for slide {slide!r} in {ground_truth_dir}")
    report = evaluate_slide(SlidePlan(slide, output_folder / "detections.csv", truth), OFFICIAL_LEVEL, CAMELYON16_MPP)
    outcome = report.outcome
    lines = []
    for lesion in report.lesions:
        kind = "isolated tumour cells (not scored)" if lesion.is_itc else "lesion"
        found = outcome.best_detection.get(lesion.label)
        where = f"found, p={report.detections.probability[found]:.3f}" if found is not None else "missed"
        axis_um = lesion.major_axis_px * CAMELYON16_MPP * level_downsample(OFFICIAL_LEVEL)
        x, y = lesion.centroid_xy_level0
        lines.append(f"  {kind} {lesion.label}: {axis_um:.0f} um across (grown region) at (x, y) = ({x:.0f}, {y:.0f}) level 0: {where}")
    lines.append(f"  false positives: {outcome.fp_probabilities.size} of {outcome.n_detections} detections")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_folder", type=Path, help="OUT/<slide name> of a wsi_metastasis_app run")
    parser.add_argument("--ground-truth", type=Path, help="folder with <slide>.tif masks or <slide>.xml annotations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = args.output_folder.resolve()
    summary = json.loads((folder / "summary.json").read_text())
    logger.info("Outputs in %s:", folder)
    for kind, name in summary["outputs"].items():
        logger.info("  %-16s %s", kind, folder / name if name else "(none)")
    logger.info(
        "Slide %s: score %.3f, %d detection(s), tissue %.1f mm2; model '%s' %s; %s mode; total %.1f s",
        summary["slide"]["name"],
        summary["slide_score"],
        summary["lesion_count"],
        summary["tissue_area_mm2"],
        summary["model"]["name"],
        summary["model"]["version"],
        summary["probability_map"]["mode"],
        summary["timings_s"]["total"],
    )
    if args.ground_truth:
        logger.info("Against the ground truth (Camelyon16 rules, level %d):", OFFICIAL_LEVEL)
        for line in lesion_lines(folder, Path(summary["slide"]["path"]).stem, args.ground_truth):
            logger.info(line)


if __name__ == "__main__":
    main()
