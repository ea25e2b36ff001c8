"""Received instances on disk: one file per SOP instance, written atomically, laid out by study and series.

``incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Each name is a checked UID
(digits and dots, ``operators.dicom.uids``), so no received value can reach outside ``incoming/``. A
file is written to a temporary name in the same folder, flushed and fsynced, renamed over the final
name, and the folder is fsynced, so that after a crash a file is either absent or whole. A write that
fails (a full disk, a file-size limit) leaves neither the temporary file nor the folders it made.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from operators.dicom.uids import uid_problem

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".incoming-"
NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})  # a full disk, a file-size limit, a quota


class UnsafeNameError(ValueError):
    """A value that was to name a folder or file is not a UID."""


def uid_name(keyword: str, value: str) -> str:
    """``value`` as a folder or file name: only a valid UID (digits and dots, never ``..``, ``/`` or empty)."""
    problem = uid_problem(value)
    if problem:
        raise UnsafeNameError(f"{keyword} {value!r} cannot name a file: {problem}")
    return value


def instance_path(incoming_dir: Path, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
    """Where an instance is kept; raises UnsafeNameError for a UID that is not one."""
    return (
        Path(incoming_dir)
        / uid_name("StudyInstanceUID", study_uid)
        / uid_name("SeriesInstanceUID", series_uid)
        / f"{uid_name('SOPInstanceUID', sop_instance_uid)}.dcm"
    )


def write_failure(error: OSError) -> str:
    """One line for a failed write: what ran out (ENOSPC, EFBIG, EDQUOT), else the error itself."""
    name = errno.errorcode.get(error.errno or 0, "")
    if error.errno in NO_ROOM:
        return f"no room to write ({name}: {error.strerror})"
    return f"write failed ({name or type(error).__name__}: {error.strerror or error})"


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
    temp_name = None
    try:
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        remove_empty_dirs(new_dirs)
        raise
    fsync_dir(path.parent)
    for folder in new_dirs:  # a new folder's own entry must reach the disk too
        fsync_dir(folder.parent)


def remove_empty_dirs(folders: Iterable[Path]) -> None:
    """Remove the folders (deepest first) that are empty; one another writer has just filled stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def written_before(path: Path, when: float) -> bool:
    """Whether the file was last written before ``when`` (seconds since the epoch); False for one gone meanwhile."""
    try:
        return path.stat().st_mtime < when
    except FileNotFoundError:
        return False


def remove_temp_files(incoming_dir: Path, older_than: float | None = None) -> int:
    """Delete temporary files left by a crash mid-write (their C-STORE never got a success status); with ``older_than``
    (seconds since the epoch) only those last written before it (another receiver may be writing the newer ones)."""
    removed = 0
    for temp in Path(incoming_dir).rglob(f"{TEMP_PREFIX}*"):
        if older_than is not None and not written_before(temp, older_than):
            continue
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
