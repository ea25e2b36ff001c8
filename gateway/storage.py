"""Received instances on disk: one file per SOP instance, written atomically, laid out by study and series.

``incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file is written to a
temporary name in the same folder, flushed and fsynced, renamed over the final name, and the folder
is fsynced, so that after a crash a file is either absent or whole.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".incoming-"


def instance_path(incoming_dir: Path, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
    """Where an instance is kept (the UIDs were checked to be UIDs, so they are safe file names)."""
    return Path(incoming_dir) / study_uid / series_uid / f"{sop_instance_uid}.dcm"


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers (and a crash) see the old file, no file, or all of ``data``."""
    path = Path(path)
    new_dirs = [p for p in (path.parent, path.parent.parent) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    for folder in new_dirs:  # a new folder's own entry must reach the disk too
        fsync_dir(folder.parent)


def remove_temp_files(incoming_dir: Path) -> int:
    """Delete temporary files left by a crash mid-write (their C-STORE never got a success status)."""
    removed = 0
    for temp in Path(incoming_dir).rglob(f"{TEMP_PREFIX}*"):
        temp.unlink(missing_ok=True)
        removed += 1
    return removed


def stored_files(incoming_dir: Path) -> Iterable[Path]:
    return sorted(Path(incoming_dir).glob("*/*/*.dcm"))


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` a hard link to ``source`` (a copy across file systems); the original stays."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
