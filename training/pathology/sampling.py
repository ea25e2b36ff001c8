"""Class-balanced patch sampling as in Liu et al. (2017): pick tumor or normal with equal probability,
then a slide holding that class uniformly, then a patch of that class from the slide uniformly.

Draws are a pure function of a seed key; each epoch and each DDP rank uses its own key
``(seed, epoch, rank)``, the random-sampler equivalent of a DistributedSampler: ranks see different
patches, and a resumed run draws what an uninterrupted one would have.

Hard-negative mining (Wang et al. 2016, :mod:`training.pathology.hard_negatives`): given a pool of
hard normal patches per slide, each normal draw is, with probability ``hard_fraction``, replaced by
one from that pool (a slide holding hard negatives uniformly, then one of its hard negatives
uniformly). The replacement comes after the ordinary draws from the same generator, so the other
draws are the ones :func:`draw_balanced` makes without it, and without it nothing changes at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TUMOR, NORMAL = 1, 0


@dataclass(frozen=True)
class PatchPools:
    """Candidate patch centres per slide and class: ``tumor[i]`` and ``normal[i]`` are (n, 2) int level-0 (x, y)."""

    slides: tuple[str, ...]
    tumor: tuple[np.ndarray, ...]
    normal: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if not len(self.slides) == len(self.tumor) == len(self.normal):
            raise ValueError("slides, tumor and normal must have one entry per slide")

    def slides_with(self, label: int) -> np.ndarray:
        """Indices of the slides holding at least one candidate of ``label``."""
        pools = self.tumor if label == TUMOR else self.normal
        return np.array([i for i, pool in enumerate(pools) if len(pool)], dtype=np.int64)


@dataclass(frozen=True)
class PatchDraws:
    """One patch per row: its slide (index into ``PatchPools.slides``), nominal centre and label."""

    slide_index: np.ndarray  # (n,) int64
    centres_xy_level0: np.ndarray  # (n, 2) int64
    labels: np.ndarray  # (n,) uint8, 1 = tumor

    def __len__(self) -> int:
        return len(self.labels)


def draw_balanced(
    pools: PatchPools,
    n: int,
    seed_key: Sequence[int],
    tumor_probability: float = 0.5,
    hard_normal: Sequence[np.ndarray] | None = None,
    hard_fraction: float = 0.0,
) -> PatchDraws:
    """``n`` patches: class with P(tumor) = ``tumor_probability``, then slide, then patch, each uniform;
    then each normal draw, with probability ``hard_fraction``, from ``hard_normal`` instead (one (m, 2)
    int level-0 (x, y) array per slide of ``pools``; module docstring). No hard pool, an empty one or
    ``hard_fraction`` 0 gives exactly the draws made without it."""
    if not 0 <= hard_fraction <= 1:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    if hard_normal is not None and len(hard_normal) != len(pools.slides):
        raise ValueError(f"hard_normal has {len(hard_normal)} entries for {len(pools.slides)} slides")
    rng = np.random.default_rng(list(seed_key))
    labels = (rng.random(n) < tumor_probability).astype(np.uint8)
    slide_index = np.zeros(n, np.int64)
    centres = np.zeros((n, 2), np.int64)
    for label, pools_of_class in ((TUMOR, pools.tumor), (NORMAL, pools.normal)):
        rows = np.flatnonzero(labels == label)
        if not len(rows):
            continue
        eligible = pools.slides_with(label)
        if not len(eligible):
            raise ValueError(f"no slide holds a {'tumor' if label == TUMOR else 'normal'} patch candidate")
        _draw_rows(pools_of_class, eligible, rows, rng, slide_index, centres)
    hard_slides = np.array([i for i, pool in enumerate(hard_normal or ()) if len(pool)], dtype=np.int64)
    if hard_fraction > 0 and len(hard_slides):
        normal_rows = np.flatnonzero(labels == NORMAL)
        hard_rows = normal_rows[rng.random(len(normal_rows)) < hard_fraction]
        if len(hard_rows):
            _draw_rows(hard_normal, hard_slides, hard_rows, rng, slide_index, centres)
    return PatchDraws(slide_index, centres, labels)


def _draw_rows(
    pools_of_class: Sequence[np.ndarray],
    eligible: np.ndarray,
    rows: np.ndarray,
    rng: np.random.Generator,
    slide_index: np.ndarray,
    centres: np.ndarray,
) -> None:
    """Fill ``rows`` of ``slide_index`` and ``centres``: a slide of ``eligible`` uniformly, then a patch of its pool uniformly."""
    chosen = eligible[rng.integers(0, len(eligible), len(rows))]
    slide_index[rows] = chosen
    for slide in np.unique(chosen):
        at = rows[chosen == slide]
        pool = pools_of_class[slide]
        centres[at] = pool[rng.integers(0, len(pool), len(at))]
