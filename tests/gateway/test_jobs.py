"""The job model's pure rules (gateway/jobs.py): which jobs a worker may claim now."""

from __future__ import annotations

import pytest

from gateway.jobs import PENDING, RUNNING, SENDING, Job, claimable


def job(job_id: int, state: str = PENDING, series: tuple[str, ...] = ("1.1",), route: str = "ct", **fields: object) -> Job:
    return Job(job_id, "study:1", route, series, state, 0, 0, None, fields.pop("next_try_at", 0.0), 0.0, 0.0, None, **fields)


@pytest.mark.parametrize(
    ("unfinished", "kwargs", "expected"),
    [
        ([job(1), job(2, series=("1.2",))], {}, [1, 2]),
        ([job(1, RUNNING), job(2)], {}, []),  # job 2 waits for job 1 on series 1.1
        ([job(1, RUNNING), job(2, route="other")], {}, [2]),  # another route's job on the series does not wait
        ([job(1, RUNNING, series=("1.1", "1.2")), job(2, series=("1.2",)), job(3, series=("1.3",))], {}, [3]),
        ([job(1, SENDING), job(2)], {}, [1]),  # a sending job is resumed; the rerun behind it waits
        ([job(1, next_try_at=50.0), job(2, series=("1.2",), next_try_at=150.0)], {}, [1]),  # not due until 150
        ([job(1), job(2, series=("1.2",))], {"busy": {1}}, [2]),
        (
            [job(1, lease_owner="a/1", heartbeat_at=95.0), job(2, series=("1.2",), lease_owner="b/1", heartbeat_at=10.0)],
            {"held_after": 40.0},
            [2],
        ),
        ([job(1), job(2, series=("1.2",))], {"only": 2}, [2]),
        ([job(1, RUNNING), job(2)], {"only": 2}, []),
    ],
    ids=["two-series", "in-order", "other-route", "shared-series", "sending", "not-due", "busy", "live-lease", "only", "only-blocked"],
)
def test_which_jobs_a_worker_may_claim(unfinished: list[Job], kwargs: dict, expected: list[int]):
    assert [j.id for j in claimable(unfinished, now=100.0, **kwargs)] == expected
