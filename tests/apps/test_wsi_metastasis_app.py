"""The WSI app end to end through its command line, on the real slides and on bad inputs.

A random-weight classifier exercises the pipeline (the default model is trained separately);
``--mpp`` claims a finer scan than the real 0.499 um/px so each run classifies about 16x fewer
windows and stays fast on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.models.config import load_model_config
from operators.models.networks import build_spleen_unet
from operators.wsi.outputs.map_files import read_detections_csv
from tests.apps.conftest import CLASSIFIER_CARD as CARD
from tests.conftest import run_app
from tests.real_slides import real_dicom_wsi, real_svs, real_vips_pyramid
from tests.validators import dciodvfy_errors, requires_dciodvfy
from tests.wsi_factories import write_pyramid

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs an app end to end (its own limit: 900 s)
APP = "wsi_metastasis_app"
FAST = ["--mpp", "0.1215", "--workers", "2"]


def run(slide: Path, out: Path, model: Path, *extra: str):
    return run_app(APP, ["-i", str(slide), "-o", str(out), "-m", str(model), *FAST, *extra])


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@requires_dciodvfy
def test_dicom_wsi_gives_every_output_and_a_valid_fractional_seg(classifier, tmp_path: Path):
    slide = real_dicom_wsi()
    result = run(slide, tmp_path, classifier)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / slide.name
    summary = summary_of(out)
    assert set(summary["outputs"]) == {
        "tissue_mask",
        "detections_csv",
        "probability_map_npy",
        "probability_map_tiff",
        "probability_map_geometry",
        "geojson",
        "overlay_png",
        "dicom_seg",
        "dicom_annotations",
        "dicom_parametric_map",
    }
    assert (summary["model"]["name"], summary["model"]["version"]) == (CARD["name"], CARD["version"])
    assert summary["model"]["integrity"]["status"] == "verified" and summary["flags"] == []
    assert summary["slide"]["mpp"] == pytest.approx(0.1215) and summary["slide"]["dicom"] is True
    assert dciodvfy_errors(out / "tumor_seg.dcm") == []
    detections = read_detections_csv(out / "detections.csv")
    assert len(detections) == summary["lesion_count"]
    assert all(0 <= d.x < 2220 and 0 <= d.y < 2967 for d in detections)
    probabilities = np.load(out / "probability_map.npy")
    assert tuple(probabilities.shape) == tuple(summary["probability_map"]["shape_rows_cols"])
    assert summary["slide_score"] == pytest.approx(float(probabilities.max()), abs=1e-6)
    geojson = json.loads((out / "detections.geojson").read_text())
    assert geojson["type"] == "FeatureCollection"


@pytest.mark.parametrize("mode", ["dense", "patch"])
def test_svs_and_its_libvips_pyramid_give_the_same_map(classifier, tmp_path: Path, mode):
    maps = {}
    for name, slide in (("svs", real_svs()), ("vips", real_vips_pyramid())):
        result = run(slide, tmp_path / name, classifier, "--mode", mode)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = summary_of(tmp_path / name / slide.stem)
        assert summary["probability_map"]["mode"] == mode
        maps[name] = np.load(tmp_path / name / slide.stem / "probability_map.npy")
    assert maps["svs"].shape == maps["vips"].shape
    assert np.abs(maps["svs"] - maps["vips"]).mean() < 0.02  # libvips re-encoded the JPEG tiles


def test_slide_without_tissue_gives_an_empty_result(classifier, tmp_path: Path):
    write_pyramid(tmp_path / "blank.tif", np.full((1024, 1024, 3), 242, np.uint8), levels=2, mpp=0.243)
    result = run_app(APP, ["-i", str(tmp_path / "blank.tif"), "-o", str(tmp_path / "out"), "-m", str(classifier)])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(tmp_path / "out" / "blank")
    assert (summary["lesion_count"], summary["slide_score"], summary["tissue_area_mm2"]) == (0, 0.0, 0.0)
    assert (tmp_path / "out" / "blank" / "detections.csv").read_text() == ""


def truncated_copy(folder: Path) -> Path:
    target = folder / "truncated.svs"
    data = real_svs().read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def not_a_slide(folder: Path) -> Path:
    target = folder / "notes.svs"
    target.write_text("this is not a slide")
    return target


def no_mpp(folder: Path) -> Path:
    write_pyramid(folder / "no_mpp.tif", np.full((512, 512, 3), 200, np.uint8), levels=2, mpp=None)
    return folder / "no_mpp.tif"


BAD_SLIDES = {
    "truncated": (truncated_copy, "truncated"),
    "not-a-slide": (not_a_slide, "notes.svs"),
    "missing-mpp": (no_mpp, "mpp override"),
}


@pytest.mark.parametrize("case", BAD_SLIDES, ids=list(BAD_SLIDES))
def test_bad_slide_among_good_ones_is_reported_and_the_good_one_is_processed(classifier, tmp_path: Path, case):
    make, fragment = BAD_SLIDES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(real_svs(), folder / "good.svs")
    bad = make(folder)
    result = run_app(
        APP,
        ["-i", str(folder), "-o", str(tmp_path / "out"), "-m", str(classifier), "--workers", "2"]
        + (["--mpp", "0.1215"] if case != "missing-mpp" else []),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("wsi_metastasis_app: error: 1 of 2 slides failed")
    assert "Traceback" not in result.stderr
    error = json.loads((tmp_path / "out" / bad.stem / "error.json").read_text())
    assert fragment in error["error"]
    assert (tmp_path / "out" / "good" / "summary.json").exists()


def test_weights_of_another_network_are_refused_before_any_slide_is_read(tmp_path: Path):
    torch.save(build_spleen_unet(load_model_config("spleen_ct_segmentation")["network"]).state_dict(), tmp_path / "model.pt")
    result = run(real_svs(), tmp_path / "out", tmp_path / "model.pt")
    assert result.returncode == 2
    assert "do not fit the network" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "cmu_small_region").exists()


@pytest.fixture(scope="module")
def tumor_and_normal_slides(tmp_path_factory) -> tuple[Path, Path]:
    """A 6144 px synthetic node with a 600 um metastasis, a normal one, and their ground truth."""
    from training.synthetic.camelyon_layout import write_ground_truth
    from training.synthetic.wsi_scene import make_slide_scene
    from training.synthetic.wsi_tiff import write_slide

    root = tmp_path_factory.mktemp("golden")
    (root / "slides").mkdir()
    for name, tumor_sizes_um, seed in (("tumor_slide", (600.0,), 11), ("normal_slide", (), 12)):
        scene = make_slide_scene((6144, 6144), seed, tumor_sizes_um)
        write_slide(scene, root / "slides" / f"{name}.tif")
        write_ground_truth(scene, root / "truth" / f"{name}.xml", root / "truth" / f"{name}.tif")
    return root / "slides", root / "truth"


def test_default_model_finds_the_metastasis_and_scores_the_tumor_slide_above_the_normal_one(tumor_and_normal_slides, tmp_path: Path):
    from training.pathology.evaluation_masks import CAMELYON16_MPP, OFFICIAL_LEVEL, find_ground_truth
    from training.pathology.froc import SlidePlan, evaluate_slide
    from training.pathology.slide_report import lesion_lines

    slides, truth = tumor_and_normal_slides
    result = run_app(APP, ["-i", str(slides), "-o", str(tmp_path), "--workers", "2"])  # the default model, its own settings
    assert result.returncode == 0, result.stderr[-3000:]
    tumor, normal = summary_of(tmp_path / "tumor_slide"), summary_of(tmp_path / "normal_slide")
    assert tumor["model"]["name"] == "pathology_tumor_detection" and tumor["probability_map"]["mode"] == "dense"
    assert tumor["slide"]["mpp"] == pytest.approx(0.243, abs=1e-3)
    assert tumor["slide_score"] > 0.9 and tumor["slide_score"] > normal["slide_score"]
    report = evaluate_slide(
        SlidePlan("tumor_slide", tmp_path / "tumor_slide" / "detections.csv", find_ground_truth(truth)["tumor_slide"]),
        OFFICIAL_LEVEL,
        CAMELYON16_MPP,
    )
    lesions = [lesion for lesion in report.lesions if not lesion.is_itc]
    assert len(lesions) == 1 and lesions[0].label in report.outcome.best_detection  # the metastasis is hit (Camelyon16 rules)
    lines = lesion_lines(tmp_path / "tumor_slide", "tumor_slide", truth)  # what the demo prints
    assert lines[0].startswith("  lesion ") and lines[0].endswith(f"found, p={tumor['slide_score']:.3f}")


def test_the_default_runtime_finds_the_float32_torch_lesions_at_the_same_places(tumor_and_normal_slides, tmp_path: Path):
    """Clinical parity: the default runtime (the model config's for this CPU) against torch float32 on the
    tumour slide: every float32 detection matched within 50 um and 0.02, the slide score within 0.01."""
    slides, _ = tumor_and_normal_slides
    runs = {}
    for name, extra in (("default", ()), ("torch-fp32", ("--backend", "torch", "--precision", "fp32"))):
        result = run_app(APP, ["-i", str(slides / "tumor_slide.tif"), "-o", str(tmp_path / name), "--workers", "2", *extra])
        assert result.returncode == 0, result.stderr[-3000:]
        summary = summary_of(tmp_path / name / "tumor_slide")
        detections = np.loadtxt(tmp_path / name / "tumor_slide" / "detections.csv", delimiter=",", ndmin=2)
        runs[name] = (summary, detections)
    (default, found), (reference, expected) = runs["default"], runs["torch-fp32"]
    assert reference["backend"] == "torch" and default["backend"] in ("torch", "openvino")
    assert default["slide_score"] == pytest.approx(reference["slide_score"], abs=0.01)
    assert len(found) == len(expected) > 0
    radius_px = 50.0 / reference["slide"]["mpp"]
    for probability, x, y in expected:
        distance = np.hypot(found[:, 1] - x, found[:, 2] - y)
        nearest = int(np.argmin(distance))
        assert distance[nearest] <= radius_px and abs(found[nearest, 0] - probability) <= 0.02
