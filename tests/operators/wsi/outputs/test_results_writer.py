"""A slide through every stage as the app runs it: the files it writes, and its backend decided once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.core.device import choose_compute_device
from operators.models.loader import LoadedModel
from operators.models.runtime import torch_runtime
from operators.wsi.classifier import PatchClassifier
from operators.wsi.inference import InferenceSettings, slide_probability_map
from operators.wsi.nms import detect_lesions
from operators.wsi.outputs.results_writer import slide_summary, write_slide_results
from operators.wsi.slide import reader
from operators.wsi.slide.sources import SlideSource
from operators.wsi.tissue_mask import compute_slide_tissue
from tests.real_slides import real_dicom_wsi

MODEL_MPP, MASK_STRIDE, WINDOW, DENSE_STRIDE = 0.243, 64, 224, 32
RUN_INFO = {
    "model": {"name": "Mean darkness (test)", "version": "0.0.1"},
    "equipment": {"manufacturer": "clinical-ai-apps", "model_name": "test", "software_version": "0", "device_serial_number": "test"},
}


class MeanDarkness(torch.nn.Module):
    """Fully convolutional like the bundle's network (224 window, output stride 32): darker windows score higher."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -4.0 * torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), kernel_size=WINDOW, stride=DENSE_STRIDE)


def _counted(calls: dict[str, int], name: str, function):
    def wrapper(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return function(*args, **kwargs)

    return wrapper


@pytest.fixture
def decisions(monkeypatch) -> dict[str, int]:
    """Counts, through a run, of every decision open_slide makes and of every re-opening of the resolved slide."""
    calls: dict[str, int] = {}
    for name in ("scan_dicom_slide_folder", "choose_backend", "work_around_dicom_levels", "_resolve_mpp"):
        monkeypatch.setattr(reader, name, _counted(calls, name, getattr(reader, name)))
    monkeypatch.setattr(reader.ResolvedSlide, "open", _counted(calls, "reopen", reader.ResolvedSlide.open))
    return calls


def test_a_dicom_slide_run_decides_its_backend_once_and_writes_every_output(decisions, tmp_path: Path):
    workers = 2
    tissue = compute_slide_tissue(SlideSource("dicom", real_dicom_wsi()), MODEL_MPP, MASK_STRIDE, WINDOW, mpp_override=0.1215)
    network = MeanDarkness()
    model = LoadedModel(network, tmp_path / "model.pt", "state_dict", RUN_INFO["model"]["name"], RUN_INFO["model"]["version"], "0")
    settings = InferenceSettings(mode="dense", batch_size=64, tile_windows=4, workers=workers)
    compute = choose_compute_device(device="cpu")
    probability = slide_probability_map(
        tissue, PatchClassifier(model, network, DENSE_STRIDE, torch_runtime(compute)), compute, settings, DENSE_STRIDE
    )
    result = detect_lesions(probability, 155.5, 0.5)
    files = write_slide_results(result, tmp_path, RUN_INFO, 0.5)

    assert {
        key: decisions.get(key) for key in ("scan_dicom_slide_folder", "choose_backend", "work_around_dicom_levels", "_resolve_mpp")
    } == {
        "scan_dicom_slide_folder": 1,
        "choose_backend": 1,
        "work_around_dicom_levels": 1,
        "_resolve_mpp": 1,
    }
    assert 2 <= decisions["reopen"] <= workers + 1  # one handle per decoding thread, one for the writer
    assert tissue.is_dicom and tissue.backend == "openslide" and tissue.mpp == pytest.approx(0.1215)
    assert files["dicom_seg"] == "tumor_seg.dcm" and all((tmp_path / name).is_file() for name in files.values())
    summary = slide_summary(result, files, {"model": RUN_INFO["model"]}, {})
    assert summary["slide"]["reader"] == "openslide" and summary["slide"]["dicom"] is True
    assert np.load(tmp_path / "probability_map.npy").shape == tuple(summary["probability_map"]["shape_rows_cols"])
    assert json.loads(json.dumps(summary)) == summary
