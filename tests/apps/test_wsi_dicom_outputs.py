"""The WSI app's slide findings as DICOM objects (Bulk Simple Annotations, Parametric Map), end to end on
the real DICOM WSI: read back by highdicom against the app's own detections and map, checked by
dciodvfy, and taken by a real Orthanc (C-STORE, STOW-RS) that returns them on WADO-RS. A TIFF slide
gets neither (nothing in an archive to reference)."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from gateway.config import Destination
from gateway.runner import dicom_outputs, output_set_problem
from gateway.sender import cstore_files, stow_files
from operators.wsi.grid import MapGrid, ProbabilityMap
from operators.wsi.outputs.bulk_annotations import DETECTIONS_LABEL, REGIONS_LABEL
from operators.wsi.outputs.dicom_seg import choose_seg_source_level
from operators.wsi.outputs.map_files import read_detections_csv
from operators.wsi.outputs.map_resampling import map_on_pixel_grid
from operators.wsi.slide.reader import open_slide
from testkit.dicomweb import wado_rs_instance
from testkit.orthanc import Orthanc
from tests.conftest import run_app
from tests.real_slides import real_dicom_wsi, real_vips_pyramid
from tests.validators import DCIODVFY_2D_ANN_FALSE_ERROR, dciodvfy_errors, requires_dciodvfy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs the app end to end (its own limit: 900 s)
FAST = ["--mpp", "0.1215", "--workers", "2"]  # as tests/apps/test_wsi_metastasis_app.py: 16x fewer windows
ANN_FILE, PM_FILE, SEG_FILE = "tumor_annotations.dcm", "tumor_probability_map.dcm", "tumor_seg.dcm"


def run(slide: Path, out: Path, model: Path) -> tuple[Path, dict]:
    result = run_app("wsi_metastasis_app", ["-i", str(slide), "-o", str(out), "-m", str(model), *FAST])
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = out.glob("*/summary.json")  # one slide, one folder (named after the slide)
    return summary.parent, json.loads(summary.read_text())


@pytest.fixture(scope="module")
def dicom_run(classifier, tmp_path_factory) -> tuple[Path, dict]:
    return run(real_dicom_wsi(), tmp_path_factory.mktemp("wsi_dicom_outputs"), classifier)


def app_map(folder: Path) -> ProbabilityMap:
    """The app's probability map with its grid, from probability_map.npy and its sidecar."""
    sidecar = json.loads((folder / "probability_map.json").read_text())
    level0_px_per_model_px = sidecar["model_mpp"] / sidecar["slide_mpp"]
    grid = MapGrid(
        sidecar["slide_mpp"],
        sidecar["model_mpp"],
        sidecar["stride_model_px"],
        sidecar["window_model_px"],
        tuple(sidecar["shape_rows_cols"]),
        sidecar["cell_0_centre_xy_level0"][0] / level0_px_per_model_px,
    )
    return ProbabilityMap(np.load(folder / "probability_map.npy"), grid)


def test_the_annotations_and_the_parametric_map_are_listed_and_exported_with_the_seg(dicom_run):
    out, summary = dicom_run
    outputs = summary["outputs"]
    assert (outputs["dicom_seg"], outputs["dicom_annotations"], outputs["dicom_parametric_map"]) == (SEG_FILE, ANN_FILE, PM_FILE)
    assert set(dicom_outputs(out)) == {out / SEG_FILE, out / ANN_FILE, out / PM_FILE}
    assert output_set_problem(out) is None


def test_one_point_per_detection_with_its_probability_and_the_geojson_outlines(dicom_run):
    out, summary = dicom_run
    detections = read_detections_csv(out / "detections.csv")
    assert len(detections) == summary["lesion_count"] > 0
    annotations = hd.ann.annread(out / ANN_FILE)
    [points] = annotations.get_annotation_groups(label=DETECTIONS_LABEL)
    coordinates = np.vstack(points.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD))
    np.testing.assert_array_equal(coordinates, [[d.x, d.y] for d in detections])
    _, probabilities, _ = points.get_measurements()
    np.testing.assert_array_equal(probabilities[:, 0], np.float32([d.probability for d in detections]))
    geojson = json.loads((out / "detections.geojson").read_text())
    polygons = [f for f in geojson["features"] if f["geometry"]["type"] == "Polygon"]
    [regions] = annotations.get_annotation_groups(label=REGIONS_LABEL)
    outlines = regions.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD)
    assert len(outlines) == len(polygons) > 0
    for outline, polygon in zip(outlines, polygons, strict=True):
        np.testing.assert_array_equal(outline, np.asarray(polygon["geometry"]["coordinates"][0])[:-1])
    source = pydicom.dcmread(sorted(real_dicom_wsi().glob("*.dcm"))[0], stop_before_pixels=True)
    assert annotations.StudyInstanceUID == source.StudyInstanceUID


def test_the_parametric_maps_values_are_the_apps_map_on_the_seg_level(dicom_run):
    out, _ = dicom_run
    prob_map = app_map(out)
    with open_slide(real_dicom_wsi()) as slide:
        level = choose_seg_source_level(slide.dicom_source, prob_map.grid.stride_level0_px)
    stored = hd.imread(out / PM_FILE).get_total_pixel_matrix()
    np.testing.assert_array_equal(stored, map_on_pixel_grid(prob_map, level.size_xy, level.downsample_xy))
    assert stored.max() == pytest.approx(float(prob_map.probabilities.max()), abs=0.05)  # a coarser level averages cells


@requires_dciodvfy
def test_the_annotations_and_the_parametric_map_pass_dciodvfy(dicom_run):
    out, _ = dicom_run
    assert all("CommonZCoordinateValue" not in group for group in pydicom.dcmread(out / ANN_FILE).AnnotationGroupSequence)
    assert [e for e in dciodvfy_errors(out / ANN_FILE) if e != DCIODVFY_2D_ANN_FALSE_ERROR] == []
    assert dciodvfy_errors(out / PM_FILE) == []


def test_orthanc_takes_seg_annotations_and_map_by_c_store_and_stow_rs_and_returns_them_on_wado_rs(dicom_run, orthanc_dicomweb: Orthanc):
    out, _ = dicom_run
    files = [out / SEG_FILE, out / ANN_FILE, out / PM_FILE]
    by_cstore = Destination(name="orthanc", type="dicom", ae_title=orthanc_dicomweb.aet, host="127.0.0.1", port=orthanc_dicomweb.dicom_port)
    assert cstore_files(files, by_cstore, "GATEWAY") == dict.fromkeys(files)
    assert stow_files(files, Destination(name="web", type="dicomweb", url=f"{orthanc_dicomweb.url}/dicom-web")) == dict.fromkeys(files)
    for path in files:
        sent = pydicom.dcmread(path)
        returned = wado_rs_instance(f"{orthanc_dicomweb.url}/dicom-web", sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID)
        assert returned == sent


def test_a_tiff_slide_gets_neither_annotations_nor_a_parametric_map(classifier, tmp_path: Path):
    out, summary = run(real_vips_pyramid(), tmp_path, classifier)
    assert not {"dicom_seg", "dicom_annotations", "dicom_parametric_map"} & set(summary["outputs"])
    assert dicom_outputs(out) == {} and (out / "detections.geojson").is_file()
