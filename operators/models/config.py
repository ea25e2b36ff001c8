"""One config and one model card per model, shared by training and the apps.

Each model lives in ``model_zoo/<name>/`` with ``config.json`` (network, preprocessing, inference and
training parameters) and ``metadata.json`` (the model-zoo style model card). The weights file
embeds the card it was trained with, so the app reads the algorithm name and version from the
weights it actually runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_ZOO_DIR = Path(__file__).resolve().parents[2] / "model_zoo"


def model_dir(model_name: str) -> Path:
    """Folder of a model in the project's model zoo."""
    return MODEL_ZOO_DIR / model_name


def load_model_config(model_name: str) -> dict[str, Any]:
    """The shared config (``config.json``) of a model."""
    return json.loads((model_dir(model_name) / "config.json").read_text())


def load_model_card(model_name: str) -> dict[str, Any]:
    """The model card (``metadata.json``) of a model."""
    return json.loads((model_dir(model_name) / "metadata.json").read_text())
