"""Hard-negative mining for a second training pass, as Wang et al. (2016) won Camelyon16: score the
normal patch candidates of the training slides with a first model and train again with its false
positives as extra normal patches (:func:`training.pathology.sampling.draw_balanced`, ``hard_normal``).

The rule:

1. Candidates: the normal candidates of the "train" split's slides (:func:`candidates.load_pools`),
   at most ``max_candidates`` of them, spread as evenly over the slides as their counts allow
   (:func:`spread_quota`), each slide's share drawn without replacement by a generator seeded with
   ``seed``. They are read and scaled as the held-out patches are
   (:func:`training.pathology.heldout.patch_probabilities`: no jitter, no augmentation).
2. Keep (:func:`keep_hard`): the candidates whose tumor probability is at least ``threshold`` (the
   first model's false positives), at most the ``top_k`` highest of them, where ``top_k`` is
   ``ceil(KEEP_AT_MOST_FRACTION * scored)``: a pool as large as all the candidates would be no
   harder than the ordinary normal one. When none reaches ``threshold``, the ``top_k`` highest
   all the same: the pool is empty only when there is no candidate at all.

Written into the run folder (by :func:`mine_hard_negatives`, on rank 0 before the first epoch; a
resumed run reads them back with :func:`read_hard_negatives`)::

    RUN/hard_negatives.npz   slides (the train slides' names, in the pools' order), slide_index (n,)
                             int64 into slides, xy_level0 (n, 2) int64 level-0 patch centres (x, y),
                             probability (n,) float32: the first model's tumor probability
    RUN/hard_negatives.json  the first model's path and SHA-256, the rule's parameters, candidates
                             available and scored, kept (in all and per slide), the clause of the rule
                             that applied, quantiles of the scores, seconds
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.core.device import ComputeDevice
from operators.models.config import load_model_config
from operators.models.loader import load_model
from operators.models.networks import build_patch_classifier
from training.pathology.candidates import load_pools
from training.pathology.heldout import patch_probabilities
from training.pathology.sampling import NORMAL, PatchDraws
from training.pathology.settings import MODEL_NAME
from training.provenance import write_json

logger = logging.getLogger(__name__)

KEEP_AT_MOST_FRACTION = 0.25  # top_k of the keep rule, as a share of the candidates scored
QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


@dataclass(frozen=True)
class HardNegatives:
    """Per slide (the pools' order): (n, 2) int64 level-0 (x, y) centres and their (n,) float32 probabilities."""

    slides: tuple[str, ...]
    xy_level0: tuple[np.ndarray, ...]
    probability: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if not len(self.slides) == len(self.xy_level0) == len(self.probability):
            raise ValueError("slides, xy_level0 and probability must have one entry per slide")

    @property
    def count(self) -> int:
        return sum(len(xy) for xy in self.xy_level0)

    def per_slide(self) -> dict[str, int]:
        return {slide: len(xy) for slide, xy in zip(self.slides, self.xy_level0, strict=True)}


def hard_negatives_paths(run_dir: Path) -> tuple[Path, Path]:
    """``RUN/hard_negatives.npz`` and ``RUN/hard_negatives.json``."""
    return Path(run_dir) / "hard_negatives.npz", Path(run_dir) / "hard_negatives.json"


def spread_quota(counts: Sequence[int], total: int) -> np.ndarray:
    """How many of each slide's ``counts`` candidates to take, ``min(total, sum(counts))`` in all, as
    evenly as the counts allow: slides with fewer than an equal share give all of theirs, and the rest
    is shared equally by the others (the larger slides take the remainder of the division)."""
    counts = np.asarray(counts, np.int64)
    quota = np.zeros(len(counts), np.int64)
    remaining = max(int(total), 0)
    order = np.argsort(counts, kind="stable")
    for position, slide in enumerate(order):
        quota[slide] = min(int(counts[slide]), remaining // (len(order) - position))
        remaining -= int(quota[slide])
    return quota


def subsample_candidates(normal_xy_level0: Sequence[np.ndarray], max_candidates: int, seed: int) -> PatchDraws:
    """At most ``max_candidates`` of the per-slide (n, 2) candidates, :func:`spread_quota` of each slide,
    drawn without replacement (in the slides' order, each slide's in candidate order); labels all normal."""
    rng = np.random.default_rng(seed)
    quota = spread_quota([len(xy) for xy in normal_xy_level0], max_candidates)
    slide_index, centres = [], []
    for slide, (xy, take) in enumerate(zip(normal_xy_level0, quota, strict=True)):
        rows = np.sort(rng.choice(len(xy), int(take), replace=False)) if take else np.zeros(0, np.int64)
        slide_index.append(np.full(len(rows), slide, np.int64))
        centres.append(np.asarray(xy, np.int64).reshape(-1, 2)[rows])
    slide_index_all = np.concatenate(slide_index) if slide_index else np.zeros(0, np.int64)
    centres_all = np.concatenate(centres) if centres else np.zeros((0, 2), np.int64)
    return PatchDraws(slide_index_all, centres_all, np.full(len(slide_index_all), NORMAL, np.uint8))


def keep_hard(probabilities: np.ndarray, threshold: float, top_k: int) -> tuple[np.ndarray, str]:
    """Indices of the hard negatives among normal patches scored ``probabilities`` (highest first, ties
    in index order) and the clause of the rule that applied: ``threshold`` (all with p >= threshold),
    ``top_k cap`` (more reached it: the ``top_k`` highest), ``top_k fallback`` (none did: the ``top_k``
    highest) or ``no candidates``."""
    probabilities = np.asarray(probabilities, np.float64).reshape(-1)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if not len(probabilities):
        return np.zeros(0, np.int64), "no candidates"
    ranked = np.argsort(-probabilities, kind="stable")
    reaching = int((probabilities >= threshold).sum())
    if reaching == 0:
        return ranked[:top_k], "top_k fallback"
    if reaching > top_k:
        return ranked[:top_k], "top_k cap"
    return ranked[:reaching], "threshold"


def score_quantiles(probabilities: np.ndarray) -> dict[str, float] | None:
    """Quantiles of the scores, keyed ``q0`` ... ``q100`` (None when there are none)."""
    if not len(probabilities):
        return None
    values = np.quantile(np.asarray(probabilities, np.float64), QUANTILES)
    return {f"q{round(100 * q):g}": round(float(v), 6) for q, v in zip(QUANTILES, values, strict=True)}


def group_by_slide(slides: Sequence[str], slide_index: np.ndarray, xy_level0: np.ndarray, probability: np.ndarray) -> HardNegatives:
    """Flat rows (slide index, centre, probability) as one array of each per slide, rows in their given order."""
    slide_index = np.asarray(slide_index, np.int64)
    xy = np.asarray(xy_level0, np.int64).reshape(-1, 2)
    p = np.asarray(probability, np.float32).reshape(-1)
    return HardNegatives(
        tuple(slides),
        tuple(xy[slide_index == i] for i in range(len(slides))),
        tuple(p[slide_index == i] for i in range(len(slides))),
    )


def write_hard_negatives(run_dir: Path, hard: HardNegatives, summary: dict[str, Any]) -> None:
    """``RUN/hard_negatives.json`` (``summary``), then ``RUN/hard_negatives.npz`` through a temporary
    file: the npz exists only once both are complete."""
    npz_path, json_path = hard_negatives_paths(run_dir)
    write_json(json_path, summary)
    slide_index = np.concatenate([np.full(len(xy), i, np.int64) for i, xy in enumerate(hard.xy_level0)] or [np.zeros(0, np.int64)])
    tmp = npz_path.with_suffix(".npz.tmp")
    with tmp.open("wb") as stream:
        np.savez(
            stream,
            slides=np.array(hard.slides, dtype=str),
            slide_index=slide_index,
            xy_level0=np.concatenate([*hard.xy_level0, np.zeros((0, 2), np.int64)]).astype(np.int64),
            probability=np.concatenate([*hard.probability, np.zeros(0, np.float32)]).astype(np.float32),
        )
    tmp.replace(npz_path)


def read_hard_negatives(run_dir: Path, slides: Sequence[str]) -> HardNegatives:
    """``RUN/hard_negatives.npz`` per slide of ``slides`` (a slide the file does not name has none);
    a file naming a slide that ``slides`` lacks is an error: it was mined on other slides."""
    npz_path, _ = hard_negatives_paths(run_dir)
    with np.load(npz_path) as data:
        names = [str(name) for name in data["slides"]]
        unknown = sorted(set(names) - set(slides))
        if unknown:
            raise ValueError(f"{npz_path} names slides that are not training slides of this run: {unknown[:3]}")
        position = {name: slides.index(name) for name in names}
        slide_index = np.array([position[names[i]] for i in data["slide_index"]], np.int64)
        return group_by_slide(slides, slide_index, data["xy_level0"], data["probability"])


def mine_hard_negatives(
    first_model_path: Path,
    prep_dir: Path,
    run_dir: Path,
    compute: ComputeDevice,
    *,
    threshold: float = 0.5,
    max_candidates: int = 4000,
    seed: int = 0,
    batch_size: int = 64,
    workers: int = 0,
    model_name: str = MODEL_NAME,
) -> HardNegatives:
    """Score a subsample of the train slides' normal candidates with the first model (a training
    checkpoint or an exported model.pt, loaded by the app's loader, which also gives its SHA-256), keep the hard ones (module
    docstring) and write ``RUN/hard_negatives.{json,npz}``; returns them per slide."""
    started = time.monotonic()
    first_model_path = Path(first_model_path)
    config = load_model_config(model_name)
    model = load_model(first_model_path, lambda: build_patch_classifier(config["network"]), compute.device)
    slides = load_pools(prep_dir, "train")
    draws = subsample_candidates(slides.pools.normal, max_candidates, seed)
    probabilities = np.zeros(0, np.float32)
    if len(draws):
        preprocessing = config["preprocessing"]
        probabilities = patch_probabilities(
            model.module,
            slides.slide_paths,
            draws,
            preprocessing["model_mpp"],
            preprocessing["patch_size_px"],
            compute,
            batch_size,
            workers,
        )
    top_k = max(1, math.ceil(KEEP_AT_MOST_FRACTION * len(draws)))
    kept, clause = keep_hard(probabilities, threshold, top_k)
    hard = group_by_slide(slides.pools.slides, draws.slide_index[kept], draws.centres_xy_level0[kept], probabilities[kept])
    summary = {
        "first_model": {"path": str(first_model_path), "file": str(model.path), "sha256": model.sha256, "kind": model.kind},
        "threshold": threshold,
        "max_candidates": max_candidates,
        "top_k": top_k,
        "seed": seed,
        "candidates_available": int(sum(len(xy) for xy in slides.pools.normal)),
        "candidates_scored": len(draws),
        "scored_per_slide": {name: int((draws.slide_index == i).sum()) for i, name in enumerate(slides.pools.slides)},
        "reaching_threshold": int((probabilities >= threshold).sum()),
        "kept": hard.count,
        "kept_per_slide": hard.per_slide(),
        "rule": clause,
        "score_quantiles": score_quantiles(probabilities),
        "kept_score_quantiles": score_quantiles(probabilities[kept]),
        "seconds": round(time.monotonic() - started, 2),
    }
    write_hard_negatives(run_dir, hard, summary)
    logger.info(
        "hard negatives: %d of %d normal candidates scored by %s (%d reach %.2f; rule: %s) -> %s",
        hard.count,
        len(draws),
        first_model_path,
        summary["reaching_threshold"],
        threshold,
        clause,
        hard_negatives_paths(run_dir)[0],
    )
    return hard


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``RUN/hard_negatives.json``."""
    return json.loads(hard_negatives_paths(run_dir)[1].read_text())
