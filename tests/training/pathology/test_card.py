"""The model card takes the hard benchmark's figures of its own weights only, matched by SHA-256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operators.models.loader import sha256_of
from training.pathology.cli import main
from training.pathology.export import BASELINE_RUN, add_benchmark_to_card


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    weights, other = tmp_path / "model.pt", tmp_path / "other.pt"
    weights.write_bytes(b"the card's weights")
    other.write_bytes(b"other weights")
    card = tmp_path / "metadata.json"
    card.write_text(json.dumps({"name": "m", "weights": {"file": "model.pt", "sha256": sha256_of(weights)}, "metrics": {"froc": 1.0}}))
    run = {"froc_official": 0.6, "froc_ci": [0.4, 0.9], "froc_bundle": 0.7, "auc": 0.8, "n_false_positives": 10}
    results = {
        "data": "/somewhere",
        "runs": {
            "today / auto": {**run, "model": str(weights), "runtime": "auto"},
            "mined / auto": {**run, "froc_official": 0.7, "model": str(other), "runtime": "auto"},
            BASELINE_RUN: {**run, "froc_official": 0.2},
        },
        "checks": [{"variant": "official", "passed": True}],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return card, path, other


def test_only_the_cards_weights_and_the_baseline_reach_the_card(tmp_path: Path) -> None:
    card, results, _ = _setup(tmp_path)
    assert main(["card", "--benchmark", str(results), "--card", str(card)]) == 0
    written = json.loads(card.read_text())
    entry = written["metrics"]["benchmarks"]["camelyon_hard"]
    assert list(entry["runs"]) == ["today / auto"] and entry["runs"]["today / auto"]["froc_official"] == 0.6
    assert entry["baseline"]["froc_official"] == 0.2 and entry["runtime_checks"][0]["passed"]
    assert written["metrics"]["froc"] == 1.0  # the card's own evaluation stays


def test_a_result_without_the_cards_weights_is_refused(tmp_path: Path) -> None:
    card, results, other = _setup(tmp_path)
    data = json.loads(results.read_text())
    del data["runs"]["today / auto"]
    results.write_text(json.dumps(data))
    before = card.read_text()
    with pytest.raises(ValueError, match="no run in .* evaluated model.pt"):
        add_benchmark_to_card(results, card)
    assert card.read_text() == before
