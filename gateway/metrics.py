"""The gateway's Prometheus metrics (prometheus-client), in a registry of its own, served at ``/metrics`` (``gateway.health``).

- ``gateway_instances_received_total``: instances stored (C-STORE success), by calling AE title.
- ``gateway_associations_refused_total``: associations and C-STOREs refused by the disk watermark.
- ``gateway_jobs``: jobs by state, read from the queue at each scrape (so it agrees with ``gateway jobs``).
- ``gateway_app_run_seconds``: histogram of app runs, by route and outcome (``success``, ``failure``, ``timeout``, ``stopped``).
- ``gateway_export_failures_total``: outputs a destination did not take, by destination.
- ``gateway_storage_used_ratio``, ``gateway_storage_available_bytes``, ``gateway_storage_total_bytes``: the storage
  filesystem, read at each scrape.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.resources import DiskUsage

AppOutcome = Literal["success", "failure", "timeout", "stopped"]
# app runs last seconds (the fake apps) to hours (a large slide on a CPU)
RUN_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))


def app_outcome(error: str | None) -> AppOutcome:
    """The outcome label of an app run from its ``AppResult.error``."""
    if error is None:
        return "success"
    if error.startswith("stopped: timeout"):
        return "timeout"
    return "stopped" if error.startswith("stopped:") else "failure"


def jobs_by_state(states: Iterable[str], all_states: Iterable[str]) -> dict[str, int]:
    """How many jobs are in each state (every known state present, 0 when none)."""
    counts = Tally(states)
    return {state: counts.get(state, 0) for state in all_states}


class _ScrapeTimeCollector(Collector):
    """Jobs by state and the storage's use, read when Prometheus scrapes."""

    def __init__(self, job_states: Callable[[], dict[str, int]], usage: Callable[[], DiskUsage | None]) -> None:
        self._job_states = job_states
        self._usage = usage

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("gateway_jobs", "Jobs in the queue, by state", labels=["state"])
        for state, count in self._job_states().items():
            jobs.add_metric([state], count)
        yield jobs
        usage = self._usage()
        if usage is not None:
            yield GaugeMetricFamily("gateway_storage_used_ratio", "Used fraction of the storage filesystem", value=usage.used_percent / 100)
            yield GaugeMetricFamily(
                "gateway_storage_available_bytes", "Bytes still available on the storage filesystem", value=usage.available_bytes
            )
            yield GaugeMetricFamily("gateway_storage_total_bytes", "Size of the storage filesystem", value=usage.total_bytes)


class GatewayMetrics:
    """The metrics of one gateway process."""

    def __init__(self, job_states: Callable[[], dict[str, int]], usage: Callable[[], DiskUsage | None]) -> None:
        self.registry = CollectorRegistry()
        self.instances_received = Counter("gateway_instances_received", "Instances stored", ["calling_aet"], registry=self.registry)
        self.refused = Counter(
            "gateway_associations_refused", "Associations and C-STOREs refused by the disk watermark", registry=self.registry
        )
        self.app_run_seconds = Histogram(
            "gateway_app_run_seconds", "Wall time of app runs", ["route", "outcome"], buckets=RUN_SECONDS_BUCKETS, registry=self.registry
        )
        self.export_failures = Counter(
            "gateway_export_failures", "Outputs a destination did not take", ["destination"], registry=self.registry
        )
        self.registry.register(_ScrapeTimeCollector(job_states, usage))

    def app_ran(self, route: str, seconds: float, error: str | None) -> None:
        self.app_run_seconds.labels(route=route, outcome=app_outcome(error)).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
