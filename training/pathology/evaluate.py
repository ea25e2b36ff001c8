"""Stage ``evaluate``: the app's own inference on the test slides, then Camelyon16 FROC and AUC.

For each test slide, the WSI app's pure functions in the app's order and with its defaults (model
config): tissue mask (:func:`operators.wsi.tissue_mask.compute_slide_tissue`), probability map
(:func:`operators.wsi.inference.slide_probability_map`, dense or patch mode), lesion detections by the
paper's NMS (:func:`operators.wsi.nms.detect_lesions`); the model is loaded by the app's loader
(a training checkpoint or the exported ``model.pt``); detections are written by the app's writer. Written into ``OUT``::

    detections/<slide>.csv        probability,x,y (level-0 px), the Camelyon16 submission format
    probability_maps/<slide>.npy  the map (float32) on the app's grid
    slide_scores.csv              image,score,type (score: the map's maximum)
    froc_official.json            level 5, all slides (Camelyon16)
    froc_bundle.json              level 6, tumor slides only (the model-zoo bundle's variant)
    metrics.json                  both FROCs with their six sensitivities and slide-bootstrap
                                  intervals, AUC with its bootstrap interval, held-out patch
                                  accuracy, timings
    report/                       FROC curves, lesions by size class, false-positive gallery (:mod:`.report`)
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.core.device import ComputeDevice, Precision, choose_compute_device
from operators.models.config import load_model_config
from operators.models.loader import load_model
from operators.models.networks import build_patch_classifier
from operators.models.runtime import Backend, choose_runtime
from operators.wsi.classifier import PatchClassifier, prepare_classifier
from operators.wsi.inference import InferenceSettings, slide_probability_map
from operators.wsi.nms import detect_lesions, nms_parameters
from operators.wsi.outputs.map_files import write_detections_csv
from operators.wsi.slide.sources import SlideSource
from operators.wsi.tissue_mask import compute_slide_tissue
from training.pathology import froc
from training.pathology.auc import bootstrap_auc_interval
from training.pathology.candidates import read_prepare_layout, read_split
from training.pathology.froc_bootstrap import bootstrap_froc
from training.pathology.heldout import heldout_accuracy
from training.pathology.report import write_report
from training.pathology.settings import MODEL_NAME
from training.provenance import environment, write_json

logger = logging.getLogger(__name__)

FROC_VARIANTS = {"official": {"level": 5, "tumor_slides_only": False}, "bundle": {"level": 6, "tumor_slides_only": True}}
SUMMARY_KEYS = (
    "froc",
    "sensitivity_at_fp_rates",
    "variant",
    "level",
    "n_slides",
    "n_tumor_slides",
    "n_normal_slides",
    "n_lesions",
    "n_itc",
    "n_lesions_detected",
    "n_false_positives",
)


@dataclass(frozen=True)
class EvaluateSettings:
    prep_dir: Path  # test slides (split.json), held-out patches, and the dataset layout (prepare.json)
    model_path: Path  # a training checkpoint (.pt) or the exported model.pt
    out_dir: Path
    ground_truth_dir: Path | None = None  # default: the layout's test reference folder
    mode: str | None = None  # dense / patch; None: the model config's
    tta: bool = False
    nms_threshold: float | None = None
    nms_radius_um: float | None = None
    batch_size: int | None = None
    workers: int = 2
    precision: Precision = "auto"
    device: str = "auto"
    slide_backend: str = "auto"  # the slide reader
    backend: Backend = "auto"  # the network runtime
    max_slides: int | None = None
    heldout_limit: int | None = None
    n_bootstrap: int = 2000
    seed: int = 0
    model_name: str = MODEL_NAME


def evaluate_slide(
    name: str, path: Path, classifier: PatchClassifier, compute: ComputeDevice, config: dict[str, Any], settings: EvaluateSettings
) -> dict[str, Any]:
    """The app's tissue mask, probability map and NMS on one slide; writes its CSV and map, returns its summary."""
    started = time.monotonic()
    preprocessing, inference, post = config["preprocessing"], config["inference"], config["postprocessing"]
    tissue = compute_slide_tissue(
        SlideSource(name, path),
        preprocessing["model_mpp"],
        config["tissue_mask"]["mask_downsample"],
        preprocessing["patch_size_px"],
        backend=settings.slide_backend,
    )
    inference_settings = InferenceSettings.from_config(
        inference, mode=settings.mode, batch_size=settings.batch_size, tta=settings.tta, workers=settings.workers
    )
    probability = slide_probability_map(tissue, classifier, compute, inference_settings, inference["dense_stride_px"])
    result = detect_lesions(probability, *nms_parameters(post, settings.nms_radius_um, settings.nms_threshold))
    maps = settings.out_dir / "probability_maps"
    maps.mkdir(parents=True, exist_ok=True)
    (settings.out_dir / "detections").mkdir(parents=True, exist_ok=True)
    write_detections_csv(result.detections, settings.out_dir / "detections" / f"{name}.csv")
    np.save(maps / f"{name}.npy", probability.probability_map.probabilities)
    seconds = time.monotonic() - started
    logger.info(
        "%s: score %.4f, %d detections, %s mode, %.0f s", name, result.slide_score, len(result.detections), probability.mode, seconds
    )
    return {
        "score": result.slide_score,
        "detections": len(result.detections),
        "mode": probability.mode,
        "windows_per_s": round(probability.windows_per_s, 1),
        "seconds": round(seconds, 1),
    }


def evaluate(settings: EvaluateSettings) -> dict[str, Any]:
    """Run the app on the test slides and score them (module docstring); returns metrics.json's content."""
    started = time.monotonic()
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = load_model_config(settings.model_name)
    compute = choose_compute_device(settings.device, settings.precision)
    model = load_model(Path(settings.model_path), lambda: build_patch_classifier(config["network"]), compute.device)
    classifier = prepare_classifier(model, choose_runtime(settings.backend, compute, config.get("runtime", {})))
    split = read_split(settings.prep_dir)
    test = list(split["test"].items())[: settings.max_slides]
    if not test:
        raise ValueError(f"no test slides in {Path(settings.prep_dir) / 'split.json'}")
    per_slide = {
        name: {**evaluate_slide(name, Path(entry["path"]), classifier, compute, config, settings), "type": entry["type"]}
        for name, entry in test
    }
    with (out_dir / "slide_scores.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "score", "type"])
        writer.writerows((name, f"{s['score']:.6f}", s["type"]) for name, s in per_slide.items())

    gt_dir = settings.ground_truth_dir or Path(read_prepare_layout(settings.prep_dir)["test_reference_dir"])
    slides_dir = Path(test[0][1]["path"]).parent
    full_reports = score_froc_variants(gt_dir, out_dir / "detections", slides_dir, out_dir)
    froc_reports = froc_summaries(full_reports, settings.n_bootstrap, settings.seed)
    write_report(
        out_dir / "report",
        full_reports["official"],
        {n: Path(e["path"]) for n, e in test},
        [(f"model, {v}", r) for v, r in full_reports.items()],
        backend=settings.slide_backend,
    )
    metrics = {
        "model": model.identity(),
        **classifier.runtime.as_json(),
        "settings": json_ready(asdict(settings)),
        "froc": froc_reports["official"]["froc"],
        "froc_official": froc_reports["official"],
        "froc_bundle": froc_reports["bundle"],
        "auc": slide_auc(per_slide, settings.n_bootstrap, settings.seed),
        "patch_accuracy": heldout_accuracy(
            model.module,
            Path(settings.prep_dir),
            config["preprocessing"]["model_mpp"],
            config["preprocessing"]["patch_size_px"],
            compute,
            settings.heldout_limit,
        ),
        "slides": per_slide,
        "seconds": round(time.monotonic() - started, 1),
        "environment": environment(),
    }
    write_json(out_dir / "metrics.json", metrics)
    logger.info(
        "FROC %.4f (official), %.4f (bundle); AUC %s; patch accuracy %s -> %s",
        metrics["froc"],
        metrics["froc_bundle"]["froc"],
        metrics["auc"].get("auc"),
        metrics["patch_accuracy"]["accuracy"],
        out_dir / "metrics.json",
    )
    return metrics


def score_froc_variants(gt_dir: Path, detections_dir: Path, slides_dir: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Both FROC variants (:data:`FROC_VARIANTS`) of a detections folder; writes OUT/froc_<variant>.json, returns the full reports."""
    reports = {}
    for variant, options in FROC_VARIANTS.items():
        reports[variant] = froc.evaluate(gt_dir, detections_dir, slides_dir=slides_dir, **options)
        write_json(out_dir / f"froc_{variant}.json", reports[variant])
        logger.info(
            "FROC %s (level %d): %.4f %s", variant, options["level"], reports[variant]["froc"], reports[variant]["sensitivity_at_fp_rates"]
        )
    return reports


def froc_summaries(reports: dict[str, dict[str, Any]], n_bootstrap: int, seed: int) -> dict[str, dict[str, Any]]:
    """What metrics.json keeps of each FROC report: :data:`SUMMARY_KEYS` and the FROC's slide-bootstrap interval."""
    return {
        variant: {**{key: report[key] for key in SUMMARY_KEYS}, "bootstrap": bootstrap_froc(report, n_bootstrap, seed)}
        for variant, report in reports.items()
    }


def slide_auc(per_slide: dict[str, dict[str, Any]], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Slide-level AUC (score = map maximum) with its stratified bootstrap 95% interval; None when one class is missing."""
    labels = np.array([s["type"] == "Tumor" for s in per_slide.values()])
    if labels.all() or not labels.any():
        return {"auc": None, "reason": f"{int(labels.sum())} tumor and {int((~labels).sum())} normal test slides: AUC needs both"}
    result = bootstrap_auc_interval([s["score"] for s in per_slide.values()], labels, n_bootstrap, 0.95, seed)
    return {
        "auc": result.auc,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "confidence": result.confidence,
        "n_bootstrap": result.n_bootstrap,
        "seed": result.seed,
        "n_tumor": result.n_tumor,
        "n_normal": result.n_normal,
    }


def json_ready(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with paths as strings."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
