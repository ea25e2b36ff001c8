"""Class-balanced sampling: class with p 0.5, then a slide of that class uniformly, then a patch."""

from __future__ import annotations

import numpy as np
import pytest

from training.pathology.sampling import NORMAL, TUMOR, PatchPools, draw_balanced


def _points(n: int, offset: int) -> np.ndarray:
    return np.stack([np.arange(n) + offset, np.full(n, offset)], axis=1).astype(np.int64)


# slide 0: tumor slide with few tumor and many normal candidates; slide 1: tumor slide whose normal
# patches are excluded (no normal pool); slides 2 and 3: normal slides of very different sizes
POOLS = PatchPools(
    slides=("tumor_001", "tumor_010", "normal_001", "normal_002"),
    tumor=(_points(5, 1000), _points(500, 2000), _points(0, 0), _points(0, 0)),
    normal=(_points(3000, 3000), _points(0, 0), _points(10, 4000), _points(5000, 5000)),
)
N = 40_000


@pytest.fixture(scope="module")
def draws():
    return draw_balanced(POOLS, N, (0, 0, 0))


def test_tumor_and_normal_are_drawn_with_equal_probability(draws):
    assert abs(draws.labels.mean() - 0.5) < 0.01


@pytest.mark.parametrize(("label", "slides_with_the_class"), [(TUMOR, (0, 1)), (NORMAL, (0, 2, 3))])
def test_each_slide_holding_a_class_is_equally_likely_whatever_its_candidate_count(draws, label, slides_with_the_class):
    chosen = draws.slide_index[draws.labels == label]
    shares = np.bincount(chosen, minlength=len(POOLS.slides))[list(slides_with_the_class)] / len(chosen)
    assert np.allclose(shares, 1 / len(slides_with_the_class), atol=0.015)
    assert set(np.unique(chosen)) == set(slides_with_the_class)


@pytest.mark.parametrize(
    ("label", "slide", "pool"), [(TUMOR, 0, POOLS.tumor[0]), (NORMAL, 2, POOLS.normal[2]), (NORMAL, 0, POOLS.normal[0])]
)
def test_patches_come_from_the_slides_own_pool_of_that_class_uniformly(draws, label, slide, pool):
    rows = (draws.labels == label) & (draws.slide_index == slide)
    index = {tuple(p): i for i, p in enumerate(pool.tolist())}
    hits = np.array([index[tuple(c)] for c in draws.centres_xy_level0[rows].tolist()])
    counts = np.bincount(hits, minlength=len(pool))
    if len(pool) <= 10:  # few candidates: every one drawn about equally often
        assert counts.min() > 0.7 * counts.mean()
    else:  # many: the share of candidates drawn at least once is what uniform draws with replacement give
        expected = 1 - (1 - 1 / len(pool)) ** rows.sum()
        assert abs((counts > 0).mean() - expected) < 0.03


def test_a_slide_without_normal_candidates_never_gives_a_normal_patch(draws):
    assert not ((draws.labels == NORMAL) & (draws.slide_index == 1)).any()


def test_draws_depend_only_on_the_seed_key_and_ranks_differ():
    a, b = draw_balanced(POOLS, 100, (3, 1, 0)), draw_balanced(POOLS, 100, (3, 1, 0))
    other_rank = draw_balanced(POOLS, 100, (3, 1, 1))
    assert np.array_equal(a.centres_xy_level0, b.centres_xy_level0) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.centres_xy_level0, other_rank.centres_xy_level0)


@pytest.mark.parametrize("probability", [0.2, 0.8])
def test_tumor_probability_sets_the_class_mix(probability):
    assert abs(draw_balanced(POOLS, 20_000, (1,), probability).labels.mean() - probability) < 0.015


def test_a_class_without_any_candidate_is_an_error():
    pools = PatchPools(("normal_001",), (_points(0, 0),), (_points(4, 0),))
    with pytest.raises(ValueError, match="no slide holds a tumor"):
        draw_balanced(pools, 10, (0,))
