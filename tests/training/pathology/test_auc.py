"""Slide-level AUC: known values, the bootstrap interval, readers and the command line."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from training.pathology.auc import (
    bootstrap_auc_interval,
    main,
    read_reference_csv,
    read_scores_csv,
    roc_auc,
    slide_scores_from_detections,
)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], 1.0),  # perfect
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.0),  # reversed
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),  # all tied
        # hand case: positives .8 .4, negatives .6 .4 .1; pairs (pos > neg = 1, tie = 1/2):
        # .8: 1 1 1; .4: 0 .5 1 -> 4.5 / 6 = 0.75
        ([0.8, 0.4, 0.6, 0.4, 0.1], [1, 1, 0, 0, 0], 0.75),
        ([0.3, 0.9], [True, False], 0.0),
    ],
)
def test_roc_auc_known_values(scores: list[float], labels: list[int], expected: float) -> None:
    assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_equals_pairwise_definition_on_random_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        y = rng.uniform(size=n) < 0.4
        y[0], y[1] = True, False
        s = rng.integers(0, 6, n) / 5.0  # many ties
        pos, neg = s[y], s[~y]
        pairwise = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in product(pos, neg)])
        assert roc_auc(s, y) == pytest.approx(pairwise, abs=1e-12)


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([0.1, 0.2], [1, 1])


def test_bootstrap_interval_contains_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(30, bool), np.zeros(50, bool)]
    s = np.where(y, rng.normal(1.0, 1.0, y.size), rng.normal(0.0, 1.0, y.size))
    a = bootstrap_auc_interval(s, y, seed=7)
    b = bootstrap_auc_interval(s, y, seed=7)
    c = bootstrap_auc_interval(s, y, seed=8)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.auc < a.ci_high
    assert 0.0 <= a.ci_low and a.ci_high <= 1.0
    assert (a.n_bootstrap, a.n_tumor, a.n_normal) == (2000, 30, 50)
    assert a.ci_high - a.ci_low < 0.35


def test_bootstrap_of_a_perfect_separation_is_degenerate() -> None:
    r = bootstrap_auc_interval([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], n_bootstrap=200)
    assert (r.auc, r.ci_low, r.ci_high) == (1.0, 1.0, 1.0)  # stratified: every replicate keeps both classes


def test_readers(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("Test_001,Tumor,Macro,Field\nTest_002,Normal\n")
    assert read_reference_csv(tmp_path / "ref.csv") == {"Test_001": True, "Test_002": False}
    (tmp_path / "ref2.csv").write_text("image,type\ntest_001.tif,tumor\n")
    assert read_reference_csv(tmp_path / "ref2.csv") == {"test_001": True}
    (tmp_path / "scores.csv").write_text("image,score\ntest_001,0.25\ntest_002,1\n")
    assert read_scores_csv(tmp_path / "scores.csv") == {"test_001": 0.25, "test_002": 1.0}
    det = tmp_path / "det"
    det.mkdir()
    (det / "a.csv").write_text("0.3,1,2\n0.7,3,4\n")
    (det / "b.csv").write_text("")
    assert slide_scores_from_detections(det) == {"a": 0.7, "b": 0.0}


def test_cli(tmp_path: Path) -> None:
    det, gt = tmp_path / "det", tmp_path / "gt"
    det.mkdir()
    gt.mkdir()
    scores = {"s1": 0.9, "s2": 0.4, "s3": 0.6, "s4": 0.4, "s5": 0.1}  # tumor: s1, s2 -> AUC 0.75 (hand case above)
    for name, p in scores.items():
        (det / f"{name}.csv").write_text(f"{p},10,10\n0.05,1,1\n")
    for name in ("s1", "s2"):
        (gt / f"{name}.xml").write_text("<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    (tmp_path / "reference.csv").write_text("image,type\n" + "".join(f"{n},{'Tumor' if n in ('s1', 's2') else 'Normal'}\n" for n in scores))
    for labels in (["--ground-truth", str(gt)], ["--reference", str(tmp_path / "reference.csv")]):
        out = tmp_path / "auc.json"
        assert main(["--detections", str(det), *labels, "--json", str(out), "--n-bootstrap", "500", "--seed", "3"]) == 0
        r = json.loads(out.read_text())
        assert r["auc"] == pytest.approx(0.75)
        assert r["ci_low"] <= r["auc"] <= r["ci_high"]
        assert (r["n_tumor"], r["n_normal"], r["n_bootstrap"], r["seed"]) == (2, 3, 500, 3)
    (tmp_path / "reference.csv").write_text("image,type\ns1,Tumor\ns9,Normal\n")
    assert main(["--detections", str(det), "--reference", str(tmp_path / "reference.csv"), "--json", str(out)]) == 1  # s9: no score
    with pytest.raises(SystemExit):
        main(["--detections", str(det), "--scores", str(tmp_path / "x.csv"), "--reference", "r.csv", "--json", str(out)])
