"""The packaged apps run as the image's entrypoint runs them: ``python3 /opt/holoscan/app`` with the HOLOSCAN_*
variables of app.json, the models where the image has them, from a build context in tmp_path (so from a copy,
with another working directory and no PYTHONPATH). One run per app, shared by the tests of this module.

The app folder is made read-only as in the image (there it is root-owned and the app runs as uid 1000);
when these tests run as root that cannot stop a write, so the folder is also compared before and after.
"""

from __future__ import annotations

import json
import logging
import resource
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from holoscan_cli.runner.resources import _convert_to_bytes

from map_packaging.context import BuildContext
from map_packaging.local_run import LocalMounts, run_as_entrypoint
from operators.models.config import load_model_card
from tests.validators import dciodvfy_errors, requires_dciodvfy

from .conftest import WSI_CARD

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
QUIET = {"HOLOSCAN_LOG_LEVEL": "WARN"}


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder`` with its size, modification time and mode."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode) for p in sorted(folder.rglob("*"))}


def set_writable(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@dataclass(frozen=True)
class PackagedRun:
    context: BuildContext
    mounts: LocalMounts
    result: subprocess.CompletedProcess
    app_before: dict
    app_after: dict
    input_before: dict
    input_after: dict
    wall_s: float
    children_peak_rss_bytes: int  # the largest child of this test process so far: an upper bound for the app


def run_packaged(context: BuildContext, mounts: LocalMounts, args: list[str]) -> PackagedRun:
    app_before, input_before = snapshot(context.app_dir), snapshot(mounts.input_dir)
    set_writable(context.app_dir, False)
    try:
        start = time.monotonic()
        result = run_as_entrypoint(context, mounts, args, extra_env=QUIET, timeout_s=900)
        wall_s = time.monotonic() - start
    finally:
        set_writable(context.app_dir, True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    logger.info("%s ran in %.1f s (largest child so far %.0f MiB)", context.app_dir, wall_s, peak / 2**20)
    return PackagedRun(
        context, mounts, result, app_before, snapshot(context.app_dir), input_before, snapshot(mounts.input_dir), wall_s, peak
    )


def assert_succeeded(run: PackagedRun) -> None:
    assert run.result.returncode == 0, run.result.stderr[-3000:]


# --- spleen: the synthetic demo CT, with the committed model ------------------------------------------


@pytest.fixture(scope="module")
def spleen_run(spleen_context: BuildContext, demo_ct, tmp_path_factory: pytest.TempPathFactory) -> PackagedRun:
    root = tmp_path_factory.mktemp("spleen_mounts")
    return run_packaged(spleen_context, LocalMounts(demo_ct.dicom_dir, root / "output", root / "workdir"), [])


def spleen_summary(run: PackagedRun) -> dict:
    assert_succeeded(run)
    return json.loads((run.mounts.output_dir / "summary.json").read_text())


@requires_dciodvfy
def test_packaged_spleen_app_writes_a_seg_that_passes_dciodvfy(spleen_run: PackagedRun):
    summary = spleen_summary(spleen_run)
    assert summary["outputs"]["dicom_seg"] == "spleen_seg.dcm"
    assert dciodvfy_errors(spleen_run.mounts.output_dir / "spleen_seg.dcm") == []


def test_packaged_spleen_app_loads_the_model_from_the_image_model_folder(spleen_run: PackagedRun):
    summary = spleen_summary(spleen_run)
    assert Path(summary["model"]["path"]) == spleen_run.context.models_dir / "spleen_ct_segmentation" / "model.ts"
    card = load_model_card("spleen_ct_segmentation")
    assert (summary["model"]["name"], summary["model"]["version"]) == (card["name"], card["version"])
    assert summary["app"]["version"] == spleen_run.context.app_json["version"]
    assert summary["spleen"]["volume_ml"] > 50  # the phantom's spleen was found


def test_packaged_spleen_app_writes_nothing_into_its_app_folder_or_its_input(spleen_run: PackagedRun):
    assert_succeeded(spleen_run)
    assert spleen_run.app_after == spleen_run.app_before
    assert spleen_run.input_after == spleen_run.input_before


def test_packaged_spleen_outputs_are_plain_files_other_users_can_read(spleen_run: PackagedRun):
    assert_succeeded(spleen_run)
    outputs = sorted(spleen_run.mounts.output_dir.iterdir())
    assert {p.name for p in outputs} == {"spleen_seg.dcm", "spleen_sr.dcm", "spleen.stl", "spleen_overlay.png", "summary.json"}
    assert all(p.is_file() and p.stat().st_mode & stat.S_IROTH for p in outputs)


def test_packaged_spleen_app_peak_memory_is_within_the_pkg_json_memory(spleen_run: PackagedRun):
    summary = spleen_summary(spleen_run)
    limit = _convert_to_bytes(spleen_run.context.pkg_json["resources"]["memory"])
    assert summary["peak_memory_mib"] * 2**20 < limit
    assert spleen_run.children_peak_rss_bytes < limit


# --- WSI: a small synthetic slide, with a random-weight classifier ------------------------------------


@pytest.fixture(scope="module")
def wsi_run(wsi_context: BuildContext, tmp_path_factory: pytest.TempPathFactory) -> PackagedRun:
    from training.synthetic.wsi_slide import make_slide_scene, write_slide

    root = tmp_path_factory.mktemp("wsi_mounts")
    write_slide(make_slide_scene((4096, 3072), seed=3, tumor_sizes_um=(150.0,)), root / "input" / "node.tif", workers=2)
    return run_packaged(wsi_context, LocalMounts(root / "input", root / "output", root / "workdir"), ["--workers", "2"])


def test_packaged_wsi_app_writes_the_slide_results_with_the_packaged_classifier(wsi_run: PackagedRun):
    assert_succeeded(wsi_run)
    out = wsi_run.mounts.output_dir / "node"
    summary = json.loads((out / "summary.json").read_text())
    assert {"tissue_mask", "detections_csv", "probability_map_npy", "geojson", "overlay_png"} <= set(summary["outputs"])
    assert all((out / name).is_file() for name in summary["outputs"].values())
    assert (summary["model"]["name"], summary["model"]["version"]) == (WSI_CARD["name"], WSI_CARD["version"])
    assert Path(summary["model"]["path"]) == wsi_run.context.models_dir / "pathology_tumor_detection" / "model.pt"
    assert summary["tissue_area_mm2"] > 0
    probabilities = np.load(out / "probability_map.npy")
    assert tuple(probabilities.shape) == tuple(summary["probability_map"]["shape_rows_cols"])


def test_packaged_wsi_app_writes_nothing_into_its_app_folder_or_its_input(wsi_run: PackagedRun):
    assert_succeeded(wsi_run)
    assert wsi_run.app_after == wsi_run.app_before
    assert wsi_run.input_after == wsi_run.input_before


def test_packaged_wsi_app_peak_memory_is_within_the_pkg_json_memory(wsi_run: PackagedRun):
    assert_succeeded(wsi_run)
    summary = json.loads((wsi_run.mounts.output_dir / "node" / "summary.json").read_text())
    limit = _convert_to_bytes(wsi_run.context.pkg_json["resources"]["memory"])
    assert summary["peak_memory_mib"] * 2**20 < limit and wsi_run.children_peak_rss_bytes < limit
