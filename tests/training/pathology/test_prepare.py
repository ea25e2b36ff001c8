"""Which slides give normal patches, the slide split, the held-out patch set and the test slide types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.pathology.prepare import heldout_draws, split_slides, types_of_test_slides
from training.pathology.sampling import PatchPools
from training.pathology.settings import (
    INCOMPLETE_ANNOTATION_TUMOR_SLIDES,
    NORMAL_SLIDES_WITH_TUMOR,
    CamelyonLayout,
    normal_patches_excluded,
)


@pytest.mark.parametrize(
    ("slide", "excluded"),
    [
        ("tumor_010", "incomplete annotations"),
        ("tumor_015", "incomplete annotations"),
        ("tumor_110", "incomplete annotations"),
        ("tumor_001", None),
        ("tumor_011", None),
        ("tumor_111", None),
        ("normal_086", "contains unannotated tumor"),
        ("normal_144", "contains unannotated tumor"),
        ("normal_001", None),
        ("normal_085", None),
        ("test_010", None),
    ],
)
def test_normal_patches_are_excluded_from_the_slides_the_paper_names(slide, excluded):
    reason = normal_patches_excluded(slide)
    assert (reason is None) if excluded is None else (excluded in reason)


def test_the_exclusion_lists_are_the_guides_20_tumor_and_2_normal_slides():
    assert len(INCOMPLETE_ANNOTATION_TUMOR_SLIDES) == 20 and NORMAL_SLIDES_WITH_TUMOR == {"normal_086", "normal_144"}


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(1, 0.25, 0), (2, 0.25, 1), (4, 0.25, 1), (8, 0.25, 2), (6, 0.0, 0), (3, 0.9, 2)])
def test_split_holds_out_a_fraction_of_the_slides_and_keeps_one_for_training(n, fraction, n_val):
    names = [f"tumor_{i:03d}" for i in range(n)]
    train, val = split_slides(names, fraction, seed=0, salt=1)
    assert len(val) == n_val and sorted(train + val) == names
    assert split_slides(names, fraction, seed=0, salt=1) == (train, val)


def test_heldout_patches_are_distinct_balanced_and_shuffled():
    pools = PatchPools(
        ("tumor_001", "normal_001"),
        (np.arange(40).reshape(20, 2), np.zeros((0, 2), np.int64)),
        (np.arange(1000).reshape(500, 2), np.arange(1000, 2000).reshape(500, 2)),
    )
    draws = heldout_draws(pools, per_class=16, seed=0)
    assert len(draws) == 32 and draws.labels.sum() == 16
    assert len({(int(s), *map(int, c)) for s, c in zip(draws.slide_index, draws.centres_xy_level0, strict=True)}) == 32
    assert 0 < draws.labels[:8].sum() < 8  # any prefix mixes the classes
    assert len(heldout_draws(pools, per_class=100, seed=0)) == 20 + 100  # a class with fewer candidates gives all of them


def test_test_slide_types_come_from_the_reference_csv_or_from_the_ground_truth(tmp_path: Path):
    reference = tmp_path / "testing" / "reference"
    reference.mkdir(parents=True)
    (reference / "test_002.xml").write_text("<ASAP_Annotations><Annotations /></ASAP_Annotations>")
    layout = CamelyonLayout.from_root(tmp_path, test_reference_csv=tmp_path / "absent.csv")
    assert types_of_test_slides(layout, ["test_001", "test_002"]) == {"test_001": "Normal", "test_002": "Tumor"}
    (tmp_path / "reference.csv").write_text("image,type\ntest_001,Tumor\ntest_002,Normal\n")
    layout = CamelyonLayout.from_root(tmp_path, test_reference_csv=tmp_path / "reference.csv")
    assert types_of_test_slides(layout, ["test_001", "test_002"]) == {"test_001": "Tumor", "test_002": "Normal"}


def test_layout_options_replace_only_the_paths_given(tmp_path: Path):
    layout = CamelyonLayout.from_root(tmp_path, normal_dir=tmp_path / "elsewhere", tumor_dir=None)
    assert layout.normal_dir == tmp_path / "elsewhere" and layout.tumor_dir == tmp_path / "training" / "tumor"
    assert layout.annotations_dir == tmp_path / "training" / "lesion_annotations"
