"""Stage ``baseline``: a colour-threshold detector on the test slides, scored as ``evaluate`` scores the model.

It shows how hard the benchmark is without learning anything: per test slide, the slide is read at
about ``BaselineParameters.map_mpp`` (8 um/px) with the app's slide reader, the app's tissue mask rule
(:func:`operators.wsi.tissue_mask.tissue_mask`) is applied, and the score map is the hematoxylin
density (:func:`skimage.color.rgb2hed`, channel H, 0 outside tissue) averaged over a
``window_um``-wide square (about the model's 224-px patch) and normalised to 0..1 by
``hematoxylin_full_scale``. Detections are its local maxima at least ``min_distance_um`` apart (the
model config's NMS radius) and at least ``threshold``; the slide score is the map's maximum.
Written into ``OUT``::

    detections/<slide>.csv   probability,x,y (level-0 px), the Camelyon16 submission format
    slide_scores.csv         image,score,type
    froc_official.json       level 5, all slides (Camelyon16)
    froc_bundle.json         level 6, tumor slides only (the model-zoo bundle's variant)
    metrics.json             evaluate's keys (froc, froc_official, froc_bundle, auc, slides, seconds),
                             plus "detector" and "parameters"
    report/                  :mod:`training.pathology.report`, official variant
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.feature import peak_local_max

from operators.models.config import load_model_config
from operators.wsi.nms import Detection
from operators.wsi.outputs.map_files import write_detections_csv
from operators.wsi.slide.reader import open_slide
from operators.wsi.tissue_mask import tissue_mask
from training.pathology.candidates import read_prepare_layout, read_split
from training.pathology.evaluate import FROC_VARIANTS, froc_summaries, json_ready, score_froc_variants, slide_auc
from training.pathology.report import write_report
from training.pathology.settings import MODEL_NAME
from training.provenance import environment, write_json

logger = logging.getLogger(__name__)

DETECTOR = "colour threshold baseline"


def _model_default(section: str, key: str) -> float:
    return float(load_model_config(MODEL_NAME)[section][key])


@dataclass(frozen=True)
class BaselineParameters:
    map_mpp: float = 8.0  # score map resolution, micrometres per pixel
    window_um: float = field(
        default_factory=lambda: _model_default("preprocessing", "patch_size_px") * _model_default("preprocessing", "model_mpp")
    )
    hematoxylin_full_scale: float = 0.1  # rgb2hed H density mapped to probability 1 (H&E tissue is about 0.02-0.1)
    threshold: float = 0.2  # lowest probability reported as a detection
    min_distance_um: float = field(default_factory=lambda: _model_default("postprocessing", "nms_radius_um"))


@dataclass(frozen=True)
class BaselineSettings:
    prep_dir: Path  # test slides (split.json) and the dataset layout (prepare.json)
    out_dir: Path
    ground_truth_dir: Path | None = None  # default: the layout's test reference folder
    max_slides: int | None = None
    parameters: BaselineParameters = field(default_factory=BaselineParameters)
    n_bootstrap: int = 2000
    seed: int = 0


def hematoxylin_score_map(rgb: np.ndarray, tissue: np.ndarray, window_px: float, full_scale: float) -> np.ndarray:
    """Float32 (h, w) map in 0..1: H density inside tissue (0 outside), box-averaged over ``window_px``, over ``full_scale``."""
    if rgb.shape[:2] != tissue.shape:
        raise ValueError(f"image {rgb.shape[:2]} and tissue mask {tissue.shape} differ in size")
    density = np.where(tissue, np.clip(rgb2hed(rgb)[..., 0], 0.0, None), 0.0)
    smoothed = ndimage.uniform_filter(density, size=max(1, round(window_px)), mode="constant")
    return np.clip(smoothed / full_scale, 0.0, 1.0).astype(np.float32)


def map_detections(score: np.ndarray, downsample: float, min_distance_px: float, threshold: float) -> list[Detection]:
    """Local maxima of ``score`` (at least ``min_distance_px`` map pixels apart, >= ``threshold``) in decreasing score.

    Map pixel (row, col) covers level-0 ``[col * d, (col + 1) * d)``, so a peak is at level-0 ``(col + 0.5) * d``.
    """
    peaks = peak_local_max(score, min_distance=max(1, round(min_distance_px)), threshold_abs=threshold, exclude_border=False)
    found = [Detection(float(score[r, c]), round((c + 0.5) * downsample), round((r + 0.5) * downsample)) for r, c in peaks]
    return sorted(found, key=lambda d: -d.probability)


def detect_slide(path: Path, parameters: BaselineParameters) -> tuple[list[Detection], float]:
    """The baseline's detections (level-0 px) and slide score (the map's maximum) on one slide."""
    with open_slide(path) as slide:
        downsample = parameters.map_mpp / float(np.mean(slide.mpp_xy))
        rgb = slide.thumbnail(max(1.0, downsample))
    score = hematoxylin_score_map(rgb, tissue_mask(rgb), parameters.window_um / parameters.map_mpp, parameters.hematoxylin_full_scale)
    detections = map_detections(score, max(1.0, downsample), parameters.min_distance_um / parameters.map_mpp, parameters.threshold)
    return detections, float(score.max()) if score.size else 0.0


def _test_slides(prep_dir: Path, max_slides: int | None) -> list[tuple[str, dict[str, Any]]]:
    for name in ("split.json", "prepare.json"):
        if not (Path(prep_dir) / name).is_file():
            raise FileNotFoundError(f"{Path(prep_dir) / name} not found: is {prep_dir} a folder written by the prepare stage?")
    test = list(read_split(prep_dir)["test"].items())[:max_slides]
    if not test:
        raise ValueError(f"no test slides in {Path(prep_dir) / 'split.json'}")
    return test


def run_baseline(settings: BaselineSettings) -> dict[str, Any]:
    """Detect, score and report the test slides (module docstring); returns metrics.json's content."""
    started = time.monotonic()
    test = _test_slides(settings.prep_dir, settings.max_slides)
    out_dir = Path(settings.out_dir)
    (out_dir / "detections").mkdir(parents=True, exist_ok=True)
    per_slide = {}
    for name, entry in test:
        slide_started = time.monotonic()
        detections, score = detect_slide(Path(entry["path"]), settings.parameters)
        write_detections_csv(detections, out_dir / "detections" / f"{name}.csv")
        per_slide[name] = {
            "score": score,
            "detections": len(detections),
            "type": entry["type"],
            "seconds": round(time.monotonic() - slide_started, 2),
        }
        logger.info("%s: score %.4f, %d detections", name, score, len(detections))
    with (out_dir / "slide_scores.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "score", "type"])
        writer.writerows((name, f"{s['score']:.6f}", s["type"]) for name, s in per_slide.items())
    gt_dir = settings.ground_truth_dir or Path(read_prepare_layout(settings.prep_dir)["test_reference_dir"])
    if not Path(gt_dir).is_dir():
        raise FileNotFoundError(f"ground truth folder {gt_dir} not found")
    reports = score_froc_variants(Path(gt_dir), out_dir / "detections", Path(test[0][1]["path"]).parent, out_dir)
    write_report(
        out_dir / "report",
        reports["official"],
        {name: Path(entry["path"]) for name, entry in test},
        curves=[(f"{DETECTOR}, {variant}", reports[variant]) for variant in FROC_VARIANTS],
    )
    summaries = froc_summaries(reports, settings.n_bootstrap, settings.seed)
    metrics = {
        "detector": DETECTOR,
        "parameters": asdict(settings.parameters),
        "settings": json_ready({k: v for k, v in asdict(settings).items() if k != "parameters"}),
        "froc": summaries["official"]["froc"],
        "froc_official": summaries["official"],
        "froc_bundle": summaries["bundle"],
        "auc": slide_auc(per_slide, settings.n_bootstrap, settings.seed),
        "slides": per_slide,
        "seconds": round(time.monotonic() - started, 1),
        "environment": environment(),
    }
    write_json(out_dir / "metrics.json", metrics)
    logger.info(
        "baseline FROC %.4f (official), %.4f (bundle); AUC %s -> %s",
        metrics["froc"],
        summaries["bundle"]["froc"],
        metrics["auc"].get("auc"),
        out_dir,
    )
    return metrics
