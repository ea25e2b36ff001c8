"""What ``prepare`` writes into its folder, and reading it back for training and evaluation.

PREP/split.json                 training slides by split and class, test slides, exclusions
PREP/slides.json                per training slide: path, size, mpp, candidate counts, mask files
PREP/candidates/<slide>.npz     tumor_xy_level0, normal_xy_level0: (n, 2) int64 patch centres
PREP/heldout_patches.csv        slide,x_level0,y_level0,label: fixed patches of the validation slides
PREP/masks/<slide>_tumor.png    tumor mask at the stated level; <slide>_tissue.png on the app's mask grid
PREP/prepare.json               settings, layout and environment of the prepare run
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.pathology.sampling import PatchDraws, PatchPools


def candidates_path(prep_dir: Path, slide: str) -> Path:
    return Path(prep_dir) / "candidates" / f"{slide}.npz"


def write_candidates(prep_dir: Path, slide: str, tumor_xy_level0: np.ndarray, normal_xy_level0: np.ndarray) -> Path:
    path = candidates_path(prep_dir, slide)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        tumor_xy_level0=np.asarray(tumor_xy_level0, np.int64).reshape(-1, 2),
        normal_xy_level0=np.asarray(normal_xy_level0, np.int64).reshape(-1, 2),
    )
    return path


def read_split(prep_dir: Path) -> dict[str, Any]:
    return json.loads((Path(prep_dir) / "split.json").read_text())


def read_prepare_layout(prep_dir: Path) -> dict[str, Any]:
    """The dataset layout ``prepare`` read (paths as strings), from ``prepare.json``."""
    return json.loads((Path(prep_dir) / "prepare.json").read_text())["settings"]["layout"]


@dataclass(frozen=True)
class TrainingSlides:
    """Patch pools of one split's slides and where the slides are."""

    pools: PatchPools
    slide_paths: tuple[Path, ...]


def load_pools(prep_dir: Path, split: str = "train") -> TrainingSlides:
    """Tumor and normal candidates of the ``split`` ("train" or "val") slides, in the split's order."""
    layout = read_split(prep_dir)
    names = [*layout[split]["tumor"], *layout[split]["normal"]]
    tumor, normal = [], []
    for name in names:
        with np.load(candidates_path(prep_dir, name)) as data:
            tumor.append(data["tumor_xy_level0"])
            normal.append(data["normal_xy_level0"])
    paths = tuple(Path(layout["slides"][name]) for name in names)
    return TrainingSlides(PatchPools(tuple(names), tuple(tumor), tuple(normal)), paths)


def write_heldout(path: Path, slides: list[str], draws: PatchDraws) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["slide", "x_level0", "y_level0", "label"])
        for index, (x, y), label in zip(draws.slide_index, draws.centres_xy_level0, draws.labels, strict=True):
            writer.writerow([slides[index], int(x), int(y), int(label)])


def load_heldout(prep_dir: Path, limit: int | None = None) -> tuple[tuple[Path, ...], PatchDraws]:
    """The held-out patches (the first ``limit`` of them) and the paths of their slides."""
    with (Path(prep_dir) / "heldout_patches.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))[:limit]
    slide_paths = read_split(prep_dir)["slides"]
    names = sorted({row["slide"] for row in rows})
    index = {name: i for i, name in enumerate(names)}
    draws = PatchDraws(
        np.array([index[row["slide"]] for row in rows], np.int64),
        np.array([[int(row["x_level0"]), int(row["y_level0"])] for row in rows], np.int64).reshape(-1, 2),
        np.array([int(row["label"]) for row in rows], np.uint8),
    )
    return tuple(Path(slide_paths[name]) for name in names), draws
