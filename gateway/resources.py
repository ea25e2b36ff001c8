"""Room on the storage filesystem: the disk watermark above which the gateway takes no new instances.

Use is measured as MONAI Deploy's Informatics Gateway measures it (its ``StorageInfoProvider``):
``(total - available) / total`` of the filesystem holding ``storage_dir``, where *available* is what an
unprivileged writer may still use (``statvfs`` ``f_bavail``; blocks reserved for root count as used).
Storage is refused when the use is above ``max_use_percent`` (default 75 %, as that gateway's
``storage.watermarkPercent``) or fewer than ``min_free_bytes`` are available (its ``reserveSpaceGB``).
The SCP asks ``StorageWatermark.problem()`` for each association and each C-STORE; the watermark logs
once when storage crosses it and once when it is back below, with the use.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MAX_USE_PERCENT = 75.0


@dataclass(frozen=True)
class DiskUsage:
    """One reading of a filesystem, in bytes."""

    total_bytes: int
    available_bytes: int  # what an unprivileged writer may still use

    @property
    def used_bytes(self) -> int:
        return self.total_bytes - self.available_bytes

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 100.0


def disk_usage(path: Path) -> DiskUsage:
    """The use of the filesystem that holds ``path`` (raises OSError when it cannot be read)."""
    stat = os.statvfs(path)
    return DiskUsage(stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize)


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def describe_usage(usage: DiskUsage) -> str:
    return f"{usage.used_percent:.1f} % used, {megabytes(usage.available_bytes)} available of {megabytes(usage.total_bytes)}"


def watermark_problem(usage: DiskUsage, max_use_percent: float, min_free_bytes: int) -> str | None:
    """Why storage must be refused at this use (naming the use and the limit it passed), or None when there is room."""
    if usage.used_percent > max_use_percent:
        return f"storage {describe_usage(usage)}: above the {max_use_percent:g} % watermark"
    if usage.available_bytes < min_free_bytes:
        return f"storage {describe_usage(usage)}: below min_free_bytes {megabytes(min_free_bytes)}"
    return None


class StorageWatermark:
    """The watermark of one storage folder, read on every call (``statvfs`` is cheap); thread-safe."""

    def __init__(self, storage_dir: Path, max_use_percent: float = DEFAULT_MAX_USE_PERCENT, min_free_bytes: int = 0) -> None:
        self.storage_dir = Path(storage_dir)
        self.max_use_percent = max_use_percent
        self.min_free_bytes = min_free_bytes
        self.last_usage: DiskUsage | None = None
        self._above = False
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """Why new instances are refused now, or None. Never raises: a filesystem that cannot be read refuses."""
        try:
            usage = disk_usage(self.storage_dir)
            problem = watermark_problem(usage, self.max_use_percent, self.min_free_bytes)
        except OSError as error:
            usage, problem = None, f"cannot read the use of {self.storage_dir}: {error.strerror or error}"
        with self._lock:
            self.last_usage = usage
            crossed, self._above = (problem is not None) != self._above, problem is not None
        if crossed and problem is not None:
            logger.error("Refusing new instances (A-ASSOCIATE-RJ, C-STORE 0xA700): %s of %s", problem, self.storage_dir)
        elif crossed and usage is not None:
            logger.warning("Accepting instances again: storage %s of %s", describe_usage(usage), self.storage_dir)
        return problem
