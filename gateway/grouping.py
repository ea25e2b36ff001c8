"""Which group an instance belongs to (its study or its series), and when a group is complete.

A group is complete once nothing new arrived for the quiet period, counted from its newest instance
or from the gateway's start, whichever is later (time the gateway was down does not count: a sender
may have been cut off by the outage). A group whose newest instance came in an association that ended
without a release (aborted, or the gateway killed before the release) waits ``cut_off_wait_s``
instead, giving the sender time to send the study again. With several receivers (the cluster mode) a
group is also cut off when another association that brought some of it was cut off and no later one
brought more (a receiver killed mid-study while another finished its part), and it does not close
while a receiver still has an association open that brought some of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CUT_OFF_STATES = ("aborted", "killed")


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
    cut_off: bool = False  # its newest instance came in an association that never saw its release (see ``cut_off``)
    receiving: bool = False  # an association of a receiver in the cluster mode that brought some of it is still open


@dataclass(frozen=True)
class Delivery:
    """An association that brought some of a group's waiting instances."""

    state: str  # open, released, aborted, killed
    started_at: float
    ended_at: float | None = None
    owned: bool = False  # recorded with its receiver (the cluster mode), which renews it while it lives


def cut_off(newest_cut_off: bool, deliveries: Iterable[Delivery]) -> bool:
    """Whether a group waits the cut-off wait: its newest instance's association was cut off, or another association
    that brought some of it was (two receivers, one killed mid-study) and no association bringing it started after
    that one ended (the sender's resend, which answers the cut-off)."""
    deliveries = list(deliveries)
    return newest_cut_off or any(
        d.state in CUT_OFF_STATES and not any(o is not d and o.started_at > (d.ended_at or d.started_at) for o in deliveries)
        for d in deliveries
    )


def receiving(deliveries: Iterable[Delivery]) -> bool:
    """Whether a receiver in the cluster mode still has open an association that brought some of the group: the study
    is still coming in (through another host, maybe), so its quiet period has not begun."""
    return any(d.state == "open" and d.owned for d in deliveries)


def quiet_since(group: WaitingGroup, up_since: float) -> float:
    """When the group's quiet time began: its newest instance, or the gateway's start if that is later."""
    return max(group.last_received_at, up_since)


def ready_groups(
    groups: Mapping[str, WaitingGroup], now: float, quiet_period_s: float, up_since: float = 0.0, cut_off_wait_s: float | None = None
) -> list[str]:
    """Groups quiet long enough to route: ``quiet_period_s`` (``cut_off_wait_s`` for a cut-off one) with the gateway up."""
    cut_off_wait = quiet_period_s if cut_off_wait_s is None else cut_off_wait_s
    return sorted(
        key
        for key, group in groups.items()
        if not group.receiving and now - quiet_since(group, up_since) >= (cut_off_wait if group.cut_off else quiet_period_s)
    )
