"""Which group an instance belongs to (its study or its series), and when a group is complete.

A group is complete once nothing new arrived for the quiet period, counted from its newest instance
or from the gateway's start, whichever is later (time the gateway was down does not count: a sender
may have been cut off by the outage). A group whose newest instance came in an association that ended
without a release (aborted, or the gateway killed before the release) waits ``cut_off_wait_s``
instead, giving the sender time to send the study again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def group_key(grouping: str, study_uid: str, series_uid: str) -> str:
    """The group of an instance: ``study:<StudyInstanceUID>`` or ``series:<SeriesInstanceUID>``."""
    if grouping == "study":
        return f"study:{study_uid}"
    if grouping == "series":
        return f"series:{series_uid}"
    raise ValueError(f"unknown grouping {grouping!r}")


@dataclass(frozen=True)
class WaitingGroup:
    """A group with instances no job has taken yet."""

    last_received_at: float  # seconds since the epoch, as persisted
    cut_off: bool = False  # its newest instance came in an association that never saw its release


def quiet_since(group: WaitingGroup, up_since: float) -> float:
    """When the group's quiet time began: its newest instance, or the gateway's start if that is later."""
    return max(group.last_received_at, up_since)


def ready_groups(
    groups: Mapping[str, WaitingGroup], now: float, quiet_period_s: float, up_since: float = 0.0, cut_off_wait_s: float | None = None
) -> list[str]:
    """Groups quiet long enough to route: ``quiet_period_s`` (``cut_off_wait_s`` for a cut-off one) with the gateway up."""
    cut_off_wait = quiet_period_s if cut_off_wait_s is None else cut_off_wait_s
    return sorted(
        key for key, group in groups.items() if now - quiet_since(group, up_since) >= (cut_off_wait if group.cut_off else quiet_period_s)
    )
