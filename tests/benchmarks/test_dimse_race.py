"""The DIMSE race benchmark's summary, and one short real round of each kind against a real pynetdicom SCP."""

from __future__ import annotations

import json

import pytest

from benchmarks.dimse_race import main, summary


def row(guarded: bool, unanswered: int, taken: int) -> dict:
    return {"guarded": guarded, "c_stores": 400, "unanswered": unanswered, "responses_taken_by_the_reactor": taken, "seconds": 1.0}


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        (
            [row(False, 0, 0), row(True, 0, 1), row(False, 291, 1), row(True, 0, 2)],
            {
                "unguarded": {"rounds": 2, "rounds_with_unanswered": 1, "unanswered": 291, "responses_taken_by_the_reactor": 1},
                "guarded": {"rounds": 2, "rounds_with_unanswered": 0, "unanswered": 0, "responses_taken_by_the_reactor": 3},
            },
        ),
        (
            [row(True, 5, 1)],
            {
                "unguarded": {"rounds": 0, "rounds_with_unanswered": 0, "unanswered": 0, "responses_taken_by_the_reactor": 0},
                "guarded": {"rounds": 1, "rounds_with_unanswered": 1, "unanswered": 5, "responses_taken_by_the_reactor": 1},
            },
        ),
    ],
)
def test_summary_counts_rounds_unanswered_and_taken_responses_by_kind(rounds, expected):
    assert summary(rounds) == expected


def test_one_short_round_of_each_kind_runs_and_the_guarded_one_answers_everything(capsys: pytest.CaptureFixture):
    assert main(["--rounds", "1", "--stores", "20"]) == 0
    *rows, last = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["guarded"], r["c_stores"]) for r in rows] == [(False, 160), (True, 160)]
    assert last["guarded"]["unanswered"] == 0
