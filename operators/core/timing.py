"""Wall time per pipeline stage, collected across operators for the run summary, and peak memory."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator


class StageTimings:
    """Seconds spent in each named stage; one instance is shared by the operators of one app run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._started

    def as_dict(self) -> dict[str, float]:
        return {name: round(seconds, 3) for name, seconds in self.seconds.items()} | {"total": round(self.elapsed_s(), 3)}


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
