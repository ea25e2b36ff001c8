"""Fixtures shared by the app tests: one WSI patch classifier with random weights and a verified card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from operators.models.config import load_model_config
from operators.models.loader import card_for_weights
from operators.models.networks import build_patch_classifier

CLASSIFIER_CARD = {"name": "Tumor patch classifier (random test weights)", "version": "0.0.1"}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    torch.save(
        {"model": build_patch_classifier(load_model_config("pathology_tumor_detection")["network"]).state_dict()}, folder / "model.pt"
    )
    (folder / "metadata.json").write_text(
        json.dumps(card_for_weights(CLASSIFIER_CARD, folder / "model.pt"))
    )  # as training's export writes it
    return folder / "model.pt"
