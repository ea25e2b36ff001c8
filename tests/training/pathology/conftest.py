"""Fixtures the pathology stage tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.pathology.cli import main
from training.synthetic.camelyon_layout import write_camelyon_like_dataset


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """A prepared tiny Camelyon16-layout dataset: 2 + 2 training slides and 2 test slides of 3072 x 3072 px."""
    data = tmp_path_factory.mktemp("camelyon")
    write_camelyon_like_dataset(data, n_tumor=2, n_normal=2, n_test=2, size_xy_level0=(3072, 3072), seed=0, workers=1)
    out = tmp_path_factory.mktemp("prep")
    assert main(["prepare", "--data", str(data), "--out", str(out), "--heldout-per-class", "8"]) == 0
    return out
