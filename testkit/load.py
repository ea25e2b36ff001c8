"""Concurrent C-STORE load on the gateway: K associations in threads, N small instances in all, to one or several receivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from testkit.gateway_process import store
from testkit.gateway_samples import ct_series


@dataclass(frozen=True)
class LoadResult:
    sent_uids: list[str]
    failed_statuses: list[int | None]
    seconds: float
    unacknowledged_uids: tuple[str, ...] = ()  # no success status (failed, or the association ended first): the sender resends these

    @property
    def per_second(self) -> float:
        return len(self.sent_uids) / self.seconds


def make_load(instances: int, associations: int) -> list[list[Dataset]]:
    """One series per association, in one study, ``instances`` in all."""
    study = ct_series(1)[0].StudyInstanceUID
    sizes = [instances // associations + (i < instances % associations) for i in range(associations)]
    return [ct_series(n, study_uid=study) for n in sizes]


def send_concurrently(port: int | Sequence[int], batches: list[list[Dataset]]) -> LoadResult:
    """Each batch over its own association, all starting together (batch i to ``ports[i % len(ports)]`` when several
    receivers are given); the first error any of them raised is raised here."""
    ports = [port] if isinstance(port, int) else list(port)
    start = threading.Barrier(len(batches) + 1)

    def send(index: int, batch: list[Dataset]) -> list[int | None]:
        start.wait()
        return store(ports[index % len(ports)], batch)

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        sending = [pool.submit(send, index, batch) for index, batch in enumerate(batches)]
        start.wait()
        began = time.monotonic()
        statuses = [future.result() for future in sending]
        seconds = time.monotonic() - began
    failed = [s for batch in statuses for s in batch if s != 0x0000]
    unacknowledged = tuple(
        str(ds.SOPInstanceUID)
        for batch, answers in zip(batches, statuses, strict=True)
        for ds, s in zip(batch, answers, strict=True)
        if s != 0
    )
    return LoadResult([str(ds.SOPInstanceUID) for batch in batches for ds in batch], failed, seconds, unacknowledged)


def stored_uids(storage_dir: Path) -> list[str]:
    return [path.stem for path in (storage_dir / "incoming").glob("*/*/*.dcm")]
