"""Fixtures: staged apps and build contexts written by holoscan-cli's packager code, one per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from map_packaging.app_specs import REPO_ROOT, app_spec
from map_packaging.context import BuildContext, PackageRequest, build_context
from map_packaging.stage import stage_app

SPLEEN_MODELS = REPO_ROOT / "model_zoo" / "spleen_ct_segmentation"
WSI_CARD = {"name": "Tumor patch classifier (random test weights)", "version": "0.0.1"}


@pytest.fixture(scope="session")
def wsi_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as -m takes it: pathology_tumor_detection/ with a random-weight classifier and its card."""
    import torch

    from operators.models.config import load_model_config
    from operators.models.networks import build_patch_classifier

    folder = tmp_path_factory.mktemp("wsi_models") / "pathology_tumor_detection"
    folder.mkdir()
    torch.manual_seed(0)
    network = build_patch_classifier(load_model_config("pathology_tumor_detection")["network"])
    torch.save({"model": network.state_dict()}, folder / "model.pt")
    (folder / "metadata.json").write_text(json.dumps(WSI_CARD))
    return folder.parent


def make_context(root: Path, app: str, models: Path, tag: str) -> BuildContext:
    staged = stage_app(app_spec(app), root / "staged")
    return build_context(PackageRequest(staged, models, tag), root / "context")


@pytest.fixture(scope="session")
def spleen_context(tmp_path_factory: pytest.TempPathFactory) -> BuildContext:
    return make_context(tmp_path_factory.mktemp("spleen_map"), "spleen_seg_app", SPLEEN_MODELS, "spleen-seg")


@pytest.fixture(scope="session")
def wsi_context(tmp_path_factory: pytest.TempPathFactory, wsi_models: Path) -> BuildContext:
    return make_context(tmp_path_factory.mktemp("wsi_map"), "wsi_metastasis_app", wsi_models, "wsi-metastasis")
