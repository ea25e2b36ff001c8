"""Which group an instance belongs to (its study or its series), and when a group is complete."""

from __future__ import annotations

from collections.abc import Mapping


def group_key(grouping: str, study_uid: str, series_uid: str) -> str:
    """The group of an instance: ``study:<StudyInstanceUID>`` or ``series:<SeriesInstanceUID>``."""
    if grouping == "study":
        return f"study:{study_uid}"
    if grouping == "series":
        return f"series:{series_uid}"
    raise ValueError(f"unknown grouping {grouping!r}")


def quiet_groups(last_received: Mapping[str, float], now: float, quiet_period_s: float) -> list[str]:
    """Groups whose newest instance arrived at least ``quiet_period_s`` ago: complete, ready to route."""
    return sorted(key for key, last in last_received.items() if now - last >= quiet_period_s)
