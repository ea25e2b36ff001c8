"""The cluster benchmark's scaling rule: each rate over the one-process rate, and where adding a process stops paying."""

from __future__ import annotations

import pytest

from benchmarks.gateway_cluster_load import scaling


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({1: 10.0, 2: 20.0, 3: 30.0}, ({1: 1.0, 2: 2.0, 3: 3.0}, None)),  # linear: never stops
        ({1: 10.0, 2: 18.0, 3: 18.5}, ({1: 1.0, 2: 1.8, 3: 1.85}, 3)),  # the third adds under 10 %
        ({1: 10.0, 2: 10.9, 3: 30.0}, ({1: 1.0, 2: 1.09, 3: 3.0}, 2)),  # the first count that adds under 10 %
        ({1: 10.0, 2: 8.0}, ({1: 1.0, 2: 0.8}, 2)),  # slower with two
        ({1: 10.0}, ({1: 1.0}, None)),
    ],
)
def test_scaling_is_relative_to_one_process_and_stops_at_the_first_count_adding_under_10_percent(rates, expected):
    assert scaling(rates) == expected
