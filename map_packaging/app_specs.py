"""What each packageable app needs besides its own folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_FILE = Path(__file__).resolve().parent / "artifacts.json"  # holoscan-cli 4.2.0 release artifact list, cuda 13


@dataclass(frozen=True)
class AppSpec:
    """An app under ``apps/<name>/`` and the model-zoo entries whose configs it reads at run time."""

    name: str
    model_names: tuple[str, ...]


APPS: dict[str, AppSpec] = {
    "spleen_seg_app": AppSpec("spleen_seg_app", ("spleen_ct_segmentation",)),
    "wsi_metastasis_app": AppSpec("wsi_metastasis_app", ("pathology_tumor_detection",)),
}


def app_spec(name: str) -> AppSpec:
    """The spec of a packageable app, by its folder name under ``apps/``."""
    try:
        return APPS[name]
    except KeyError:
        raise ValueError(f"unknown app {name!r}; packageable apps: {', '.join(sorted(APPS))}") from None
