"""Hard-negative mining (Wang et al. 2016): the sampling rule, the subsample and keep rules, the
settings, and a second training pass end to end on tiny synthetic slides."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from operators.models.config import load_model_config
from operators.models.loader import sha256_of
from tests.training.pathology.test_sampling import POOLS, _points
from training.distributed import weights_sha256
from training.pathology.candidates import load_pools
from training.pathology.cli import main
from training.pathology.export import checkpoint_network
from training.pathology.hard_negatives import (
    HardNegatives,
    group_by_slide,
    hard_negatives_paths,
    keep_hard,
    read_hard_negatives,
    spread_quota,
    subsample_candidates,
    write_hard_negatives,
)
from training.pathology.sampling import NORMAL, TUMOR, draw_balanced
from training.pathology.settings import TrainSettings, resolve_train
from training.pathology.train import train

CONFIG = load_model_config("pathology_tumor_detection")


# test_sampling.py's pools; the hard pool's centres are disjoint from the ordinary ones (x from 20000)
# so that a draw tells which pool it came from. Slide 2 holds no hard negative.
HARD = (_points(4, 20_000), _points(0, 0), _points(0, 0), _points(50, 21_000))
NO_HARD = tuple(_points(0, 0) for _ in POOLS.slides)
# SHA-256 of (slide_index, centres, labels) of draw_balanced(POOLS, 1000, key) before hard negatives existed
DRAWS_BEFORE = {
    (0, 0, 0): "83fc36dd4f53fa0844b9bd9cc353d3ad70e6829dbf85a9150bfbefbafd2171b7",
    (7, 3, 1): "051aef5d33147fe172f1e205b6e10f8c99b7bd21945c59c5901473400592bf83",
}


def _digest(draws) -> str:
    digest = hashlib.sha256()
    for array in (draws.slide_index, draws.centres_xy_level0, draws.labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _is_hard(draws) -> np.ndarray:
    return draws.centres_xy_level0[:, 0] >= 20_000


@pytest.mark.parametrize("key", sorted(DRAWS_BEFORE))
@pytest.mark.parametrize(("hard_normal", "fraction"), [(None, 0.0), (None, 0.7), (HARD, 0.0), (NO_HARD, 0.7), (NO_HARD, 1.0)], ids=str)
def test_without_a_hard_pool_or_share_the_draws_are_the_ones_made_before(key, hard_normal, fraction):
    assert _digest(draw_balanced(POOLS, 1000, key, 0.5, hard_normal, fraction)) == DRAWS_BEFORE[key]


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8, 1.0])
def test_a_share_of_the_normal_draws_comes_from_the_hard_pool_and_the_others_stay(fraction):
    plain = draw_balanced(POOLS, 20_000, (1, 2, 0))
    mixed = draw_balanced(POOLS, 20_000, (1, 2, 0), 0.5, HARD, fraction)
    hard = _is_hard(mixed)
    assert np.array_equal(mixed.labels, plain.labels) and not (hard & (mixed.labels == TUMOR)).any()
    share = hard[mixed.labels == NORMAL].mean()
    assert share == 1.0 if fraction == 1.0 else abs(share - fraction) < 0.015
    ordinary = ~hard
    assert np.array_equal(mixed.centres_xy_level0[ordinary], plain.centres_xy_level0[ordinary])
    assert np.array_equal(mixed.slide_index[ordinary], plain.slide_index[ordinary])


def test_hard_draws_pick_a_slide_holding_hard_negatives_uniformly_then_one_of_its_own():
    draws = draw_balanced(POOLS, 20_000, (5,), 0.5, HARD, 1.0)
    rows = draws.labels == NORMAL
    slides = draws.slide_index[rows]
    assert set(np.unique(slides)) == {0, 3}  # slide 2 has normal candidates but no hard negative
    assert abs((slides == 0).mean() - 0.5) < 0.015
    for slide in (0, 3):
        centres = {tuple(c) for c in draws.centres_xy_level0[rows][slides == slide].tolist()}
        assert centres == {tuple(c) for c in HARD[slide].tolist()}


@pytest.mark.parametrize(
    ("hard_normal", "fraction", "message"),
    [(HARD, -0.1, "hard_fraction"), (HARD, 1.5, "hard_fraction"), (HARD[:2], 0.5, "2 entries for 4 slides")],
)
def test_bad_hard_pool_arguments_are_errors(hard_normal, fraction, message):
    with pytest.raises(ValueError, match=message):
        draw_balanced(POOLS, 10, (0,), 0.5, hard_normal, fraction)


@pytest.mark.parametrize(
    ("probabilities", "threshold", "top_k", "kept", "clause"),
    [
        ([0.1, 0.9, 0.6, 0.3], 0.5, 3, [1, 2], "threshold"),
        ([0.5, 0.2], 0.5, 1, [0], "threshold"),  # p == threshold is a false positive
        ([0.9, 0.6, 0.8, 0.7], 0.5, 2, [0, 2], "top_k cap"),
        ([0.5, 0.5, 0.5], 0.5, 2, [0, 1], "top_k cap"),  # ties in index order
        ([0.1, 0.3, 0.2, 0.05], 0.5, 2, [1, 2], "top_k fallback"),
        ([0.1], 0.5, 4, [0], "top_k fallback"),
        ([], 0.5, 3, [], "no candidates"),
    ],
)
def test_keep_rule(probabilities, threshold, top_k, kept, clause):
    indices, applied = keep_hard(np.array(probabilities), threshold, top_k)
    assert indices.tolist() == kept and applied == clause


def test_keep_rule_needs_a_positive_top_k():
    with pytest.raises(ValueError, match="top_k"):
        keep_hard(np.array([0.7]), 0.5, 0)


@pytest.mark.parametrize(
    ("counts", "total", "quota"),
    [
        ([10, 10, 10], 12, [4, 4, 4]),
        ([2, 100, 100], 12, [2, 5, 5]),
        ([0, 5, 100], 50, [0, 5, 45]),
        ([7, 7, 7], 10, [3, 3, 4]),
        ([3, 3], 100, [3, 3]),
        ([5, 5], 0, [0, 0]),
        ([], 5, []),
    ],
)
def test_spread_quota(counts, total, quota):
    assert spread_quota(counts, total).tolist() == quota


def test_subsample_takes_each_slides_quota_of_distinct_own_candidates_and_depends_on_the_seed_alone():
    normal = (_points(3000, 3000), _points(0, 0), _points(10, 4000), _points(5000, 5000))
    draws = subsample_candidates(normal, 100, seed=3)
    assert np.bincount(draws.slide_index, minlength=4).tolist() == [45, 0, 10, 45] and not draws.labels.any()
    for slide, pool in enumerate(normal):
        centres = [tuple(c) for c in draws.centres_xy_level0[draws.slide_index == slide].tolist()]
        assert len(set(centres)) == len(centres) and set(centres) <= {tuple(c) for c in pool.tolist()}
    again, other = subsample_candidates(normal, 100, seed=3), subsample_candidates(normal, 100, seed=4)
    assert np.array_equal(again.centres_xy_level0, draws.centres_xy_level0)
    assert not np.array_equal(other.centres_xy_level0, draws.centres_xy_level0)


def test_hard_negatives_file_round_trips_in_the_readers_slide_order(tmp_path):
    hard = group_by_slide(("a", "b", "c"), np.array([2, 0, 2]), _points(3, 10), np.array([0.9, 0.8, 0.7]))
    write_hard_negatives(tmp_path, hard, {"kept": 3})
    back = read_hard_negatives(tmp_path, ("c", "d", "a", "b"))
    assert back.per_slide() == {"c": 2, "d": 0, "a": 1, "b": 0}
    assert back.xy_level0[0].tolist() == [[10, 10], [12, 10]] and back.xy_level0[0].dtype == np.int64
    assert np.allclose(back.probability[0], [0.9, 0.7]) and np.allclose(back.probability[2], [0.8])
    with pytest.raises(ValueError, match="not training slides"):
        read_hard_negatives(tmp_path, ("a", "b"))
    with pytest.raises(ValueError, match="one entry per slide"):
        HardNegatives(("a",), (), ())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hard_negative_fraction": 1.2}, "hard_negative_fraction"),
        ({"hard_negative_fraction": -0.5}, "hard_negative_fraction"),
        ({"hard_negative_threshold": 1.5}, "hard_negative_threshold"),
        ({"hard_negative_max_candidates": 0}, "hard_negative_max_candidates"),
    ],
)
def test_settings_refuse_bad_hard_negative_values(override, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(prep_dir=Path("P"), run_dir=Path("R"), **override)


def test_hard_negative_settings_are_recorded_only_for_a_second_pass():
    first = resolve_train(TrainSettings(Path("P"), Path("R")), CONFIG, 1)
    assert first["hard_negatives_from"] is None and first["init_from"] is None
    assert first["hard_negative_fraction"] is first["hard_negative_threshold"] is first["hard_negative_max_candidates"] is None
    second = resolve_train(TrainSettings(Path("P"), Path("R"), hard_negatives_from=Path("M"), init_from=Path("I")), CONFIG, 1)
    assert second["hard_negatives_from"] == "M" and second["init_from"] == "I"
    assert (second["hard_negative_fraction"], second["hard_negative_threshold"], second["hard_negative_max_candidates"]) == (0.5, 0.5, 4000)


@pytest.mark.slow
def test_a_second_pass_mines_the_first_models_false_positives_once_and_starts_from_its_weights(prep, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # train.log copies the root logger's records
    first = train(
        TrainSettings(prep_dir=prep, run_dir=tmp_path / "first", epochs=1, steps_per_epoch=2, batch_size=4, heldout_limit=8, workers=0)
    )
    best = first.best_checkpoint
    run = tmp_path / "second"
    common = ["train", "--prep", str(prep), "--run-dir", str(run), "--steps-per-epoch", "2", "--batch-size", "4"]
    second_pass = ["--heldout-limit", "8", "--workers", "0", "--hard-negatives-from", str(best), "--init-from", str(best)]
    second_pass += ["--hard-negative-max-candidates", "24", "--hard-negative-fraction", "0.75"]
    assert main([*common, "--epochs", "1", *second_pass]) == 0

    npz_path, json_path = hard_negatives_paths(run)
    summary = json.loads(json_path.read_text())
    assert summary["first_model"]["sha256"] == sha256_of(best) and summary["first_model"]["path"] == str(best)
    assert summary["candidates_scored"] == 24 == sum(summary["scored_per_slide"].values()) and summary["top_k"] == 6
    pools = load_pools(prep, "train").pools
    hard = read_hard_negatives(run, pools.slides)
    assert hard.count == summary["kept"] == sum(summary["kept_per_slide"].values()) and 1 <= hard.count <= 6
    for slide, xy, p in zip(range(len(pools.slides)), hard.xy_level0, hard.probability, strict=True):
        assert {tuple(c) for c in xy.tolist()} <= {tuple(c) for c in pools.normal[slide].tolist()}
        assert ((p >= 0) & (p <= 1)).all()
    kept = np.concatenate(hard.probability)
    assert kept.max() == pytest.approx(summary["score_quantiles"]["q100"], abs=1e-6)
    if summary["rule"] == "top_k fallback":
        assert hard.count == 6 and (kept < 0.5).all()
    else:
        assert summary["rule"] in ("threshold", "top_k cap") and (kept >= 0.5).all()

    config = json.loads((run / "config.json").read_text())
    assert config["hard_negatives_from"] == str(best) and config["init_from"] == str(best)
    assert (config["hard_negative_fraction"], config["hard_negative_threshold"], config["hard_negative_max_candidates"]) == (0.75, 0.5, 24)
    metrics = json.loads((run / "metrics.json").read_text())
    first_net = checkpoint_network(best)
    assert metrics["init_from"]["sha256"] == sha256_of(best) and metrics["init_from"]["weights_sha256"] == weights_sha256(first_net)
    first_heldout = json.loads((tmp_path / "first" / "metrics.json").read_text())["epochs"][0]["heldout"]
    assert metrics["initial_heldout"]["loss"] == pytest.approx(first_heldout["loss"], rel=1e-5)
    assert metrics["hard_negatives"]["kept"] == hard.count and metrics["hard_negatives"]["first_model_sha256"] == sha256_of(best)
    assert metrics["weights_sha256_per_rank"][0] != weights_sha256(first_net)  # the second pass trained

    written = (npz_path.stat().st_mtime_ns, npz_path.read_bytes(), json_path.read_text())
    assert main([*common, "--epochs", "2", *second_pass]) == 0
    assert (npz_path.stat().st_mtime_ns, npz_path.read_bytes(), json_path.read_text()) == written
    assert json.loads((run / "metrics.json").read_text())["epochs_done"] == 2
    log = (run / "train.log").read_text()
    assert log.count(f"mined into {npz_path}") == 1 and log.count(f"read from {npz_path}") == 1
    with pytest.raises(ValueError, match="hard_negative_fraction"):
        main([*common, "--epochs", "3", *second_pass[:-1], "0.5"])
