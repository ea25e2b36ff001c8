"""The colour-threshold baseline: its score map and peaks, then the stage end to end on tiny synthetic slides."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from training.pathology.baseline import BaselineSettings, hematoxylin_score_map, map_detections, run_baseline
from training.pathology.cli import main
from training.pathology.detections import read_detections_csv
from training.pathology.report import PLOT_SIZE_XY, gallery_size_xy
from training.synthetic.camelyon_layout import write_camelyon_like_dataset

WHITE = (255, 255, 255)
HEMATOXYLIN_BLUE = (60, 40, 140)
EOSIN_PINK = (230, 140, 190)


def _image(colour: tuple[int, int, int], size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), colour, np.uint8)


@pytest.mark.parametrize(
    ("colour", "tissue", "expected"),
    [
        (WHITE, True, "zero"),
        (HEMATOXYLIN_BLUE, False, "zero"),  # outside tissue nothing scores
        (HEMATOXYLIN_BLUE, True, "high"),
        (EOSIN_PINK, True, "low"),
    ],
)
def test_hematoxylin_score_map_scores_dark_blue_tissue(colour, tissue, expected):
    score = hematoxylin_score_map(_image(colour), np.full((16, 16), tissue), window_px=3, full_scale=0.1)
    assert score.dtype == np.float32 and score.shape == (16, 16) and 0 <= score.min() <= score.max() <= 1
    centre = float(score[8, 8])
    assert {"zero": centre == 0.0, "high": centre > 0.5, "low": 0.0 <= centre < 0.5}[expected], centre


def test_hematoxylin_score_map_rejects_a_mask_of_another_size():
    with pytest.raises(ValueError, match="differ in size"):
        hematoxylin_score_map(_image(WHITE), np.ones((8, 8), bool), 3, 0.1)


def _peaks(values: dict[tuple[int, int], float], shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    score = np.zeros(shape, np.float32)
    for (row, col), value in values.items():
        score[row, col] = value
    return score


@pytest.mark.parametrize(
    ("peaks", "min_distance_px", "threshold", "expected"),
    [
        ({(10, 20): 0.8}, 3, 0.2, [(0.8, 82, 42)]),  # pixel centre: (col + 0.5) * 4, (row + 0.5) * 4
        ({(10, 10): 0.5, (30, 30): 0.9}, 3, 0.2, [(0.9, 122, 122), (0.5, 42, 42)]),  # in decreasing score
        ({(10, 10): 0.5, (10, 12): 0.9}, 3, 0.2, [(0.9, 50, 42)]),  # within the distance: the larger only
        ({(10, 10): 0.5, (30, 30): 0.1}, 3, 0.2, [(0.5, 42, 42)]),  # below the threshold
        ({}, 3, 0.2, []),
    ],
)
def test_map_detections_are_separated_local_maxima_in_level0_pixels(peaks, min_distance_px, threshold, expected):
    found = map_detections(_peaks(peaks), 4.0, min_distance_px, threshold)
    assert [(round(d.probability, 6), d.x, d.y) for d in found] == expected


def test_baseline_refuses_a_folder_that_prepare_did_not_write(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.json"):
        run_baseline(BaselineSettings(prep_dir=tmp_path / "nothing", out_dir=tmp_path / "out"))


def test_baseline_stage_rejects_unknown_options(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["baseline", "--prep", "P", "--out", "O", "--no-such-option", "1"])
    assert raised.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err


@pytest.mark.slow
def test_baseline_stage_writes_evaluate_shaped_metrics_detections_and_report(tmp_path):
    data, prep, out = tmp_path / "data", tmp_path / "prep", tmp_path / "out"
    write_camelyon_like_dataset(data, n_tumor=1, n_normal=1, n_test=2, size_xy_level0=(3072, 3072), seed=0, workers=1)
    assert main(["prepare", "--data", str(data), "--out", str(prep)]) == 0
    assert main(["baseline", "--prep", str(prep), "--out", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"froc", "froc_official", "froc_bundle", "auc", "slides", "seconds", "detector", "parameters"} <= set(metrics)
    assert metrics["detector"] == "colour threshold baseline" and metrics["parameters"]["map_mpp"] == 8.0
    assert metrics["froc_official"]["level"] == 5 and metrics["froc_official"]["n_slides"] == 2
    assert metrics["froc_bundle"]["level"] == 6 and metrics["froc_bundle"]["n_slides"] == 1
    assert 0 <= metrics["froc"] <= 1 and metrics["auc"]["n_tumor"] == 1 and metrics["auc"]["n_normal"] == 1
    manifest = {s["image"]: s for s in json.loads((data / "manifest.json").read_text())["slides"] if s["split"] == "test"}
    assert set(metrics["slides"]) == set(manifest)
    for name, entry in metrics["slides"].items():
        detections = read_detections_csv(out / "detections" / f"{name}.csv")
        assert len(detections) == entry["detections"] and entry["type"] == manifest[name]["type"]
        assert entry["score"] == pytest.approx(max(detections.probability, default=entry["score"]))
    official = json.loads((out / "froc_official.json").read_text())
    assert sum(len(s["false_positives"]["probability"]) for s in official["slides"]) == official["n_false_positives"]

    report = out / "report"
    with Image.open(report / "froc_curve.png") as image:
        assert image.size == PLOT_SIZE_XY
    with (report / "lesions.csv").open(newline="") as stream:
        lesions = list(csv.DictReader(stream))
    truth = [(name, lesion) for name, s in manifest.items() for lesion in s["lesions"]]
    assert len(lesions) == len(truth) > 0
    for row, (name, lesion) in zip(sorted(lesions, key=lambda r: r["slide"]), sorted(truth, key=lambda t: t[0]), strict=True):
        assert row["slide"] == name and row["size_class"] == lesion["category"]
        assert abs(float(row["size_um"]) - lesion["major_axis_um"]) < 2 * 0.243 * 32  # two level-5 pixels
        assert (
            np.hypot(float(row["centroid_x_level0"]) - lesion["centroid_xy"][0], float(row["centroid_y_level0"]) - lesion["centroid_xy"][1])
            < 64
        )
    summary = json.loads((report / "report.json").read_text())
    assert sum(c["total"] for c in summary["lesions_by_size_class"].values()) == len(truth)
    with (report / "false_positives.csv").open(newline="") as stream:
        shown = list(csv.DictReader(stream))
    assert len(shown) == summary["false_positive_gallery"]["shown"] == min(24, official["n_false_positives"])
    with Image.open(report / "false_positives.png") as image:
        assert image.size == gallery_size_xy(len(shown))
