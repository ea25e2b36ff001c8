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


def write_test_classifier(folder: Path, nan_head: bool = False) -> Path:
    """Random weights (seed 0) in ``folder/model.pt`` with the card training's export writes;
    ``nan_head``: a broken checkpoint that still loads, whose every logit is NaN."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = build_patch_classifier(load_model_config("pathology_tumor_detection")["network"]).state_dict()
    if nan_head:
        state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    torch.save({"model": state}, folder / "model.pt")
    (folder / "metadata.json").write_text(json.dumps(card_for_weights(CLASSIFIER_CARD, folder / "model.pt")))
    return folder / "model.pt"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return write_test_classifier(tmp_path_factory.mktemp("classifier"))
