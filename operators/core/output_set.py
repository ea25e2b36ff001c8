"""All of a run's outputs or none: the output folder is checked before any work, the files are written
into a staging folder, and the set is published in one step at the end.

Why a staging folder *inside* the output folder, published file by file with the marker last: the
output folder may be a mount point (a MAP's HOLOSCAN_OUTPUT_PATH is a bind mount), so its parent is
neither writable nor on the same filesystem, and the folder itself cannot be renamed. Inside it,
every ``os.replace`` is an atomic rename on one filesystem, and needs no room: everything that can run
out of space (or fail in any other way) happens before the first rename, in the staging folder,
which a failure deletes, leaving the previous outputs as they were.

Publishing order: the previous marker (``summary.json``) and error record (``error.json``) are
removed first, so from then on the folder no longer claims a complete set; the new files are renamed
in; files of the previous set that the new one lacks (e.g. an STL when no organ is found now) are
removed; the marker is renamed in last. A reader therefore takes a set only when its marker is there,
and then every file beside it belongs to the same run. A run killed while publishing leaves no
marker, and a ``.partial-*`` folder that the next run does not touch (it may be another run's).

SIGINT and SIGTERM (operators.core.interrupts) wait for a publication under way to finish, then remove
the staging folder, and a destination folder the run created if it is empty: an interrupted run
leaves the previous set or the new one, complete, never a mixture.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from operators.core.errors import OutputFolderError, OutputWriteError
from operators.core.interrupts import output_step, register_pending, unregister_pending

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".partial-"
MARKER = "summary.json"
ERROR_RECORD = "error.json"
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def check_output_folder(path: Path, needed_bytes: int) -> Path:
    """Create ``path`` if absent and check that a file can be created in it and that its filesystem has
    ``needed_bytes`` free for an unprivileged writer; raise :class:`OutputFolderError` naming the problem."""
    path = Path(path).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=STAGING_PREFIX + "probe-", dir=path)
        os.close(handle)
        os.unlink(probe)
        stats = os.statvfs(path)
    except OSError as error:
        raise OutputFolderError(f"output folder {path} is not writable ({error.strerror or error})") from None
    free = stats.f_bavail * stats.f_frsize
    if free < needed_bytes:
        raise OutputFolderError(
            f"output folder {path} has {free / 2**20:.1f} MiB free, the outputs need about {needed_bytes / 2**20:.1f} MiB"
        )
    return path


def publish_output_set(staging: Path, destination: Path, outputs: Collection[str], marker: str = MARKER) -> list[str]:
    """Move every file of ``staging`` into ``destination`` in the order the module docstring states, the
    marker last; remove files named in ``outputs`` (every name the app may write) that the new set lacks,
    and the previous error record. Returns the published names. An interrupt waits until it is done."""
    staged = sorted(p.name for p in staging.iterdir() if p.is_file())
    if marker not in staged:
        raise RuntimeError(f"{staging} holds no {marker}: refusing to publish an incomplete set")
    with output_step():
        for name in (marker, ERROR_RECORD):
            (destination / name).unlink(missing_ok=True)
        for name in staged:
            if name != marker:
                os.replace(staging / name, destination / name)
        for name in set(outputs) - set(staged) - {marker, ERROR_RECORD}:
            (destination / name).unlink(missing_ok=True)
        os.replace(staging / marker, destination / marker)
    _fsync_folder(destination)
    return staged


@contextmanager
def staged_output_set(destination: Path, outputs: Collection[str], marker: str = MARKER) -> Iterator[Path]:
    """A staging folder inside ``destination`` for the body to write into; published when the body
    returns, deleted in any case (on SIGINT/SIGTERM too). An output that could not be written
    (:class:`OutputWriteError`, or a filesystem out of room) or a publication the folder refuses becomes
    an :class:`OutputFolderError` naming the folder and saying what it holds now."""
    destination = Path(destination)
    created = not destination.exists()
    try:
        with output_step():
            destination.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=destination))
            register_pending(staging)
            if created:  # stays registered: an interrupt removes it while it is empty
                register_pending(destination, "remove_if_empty")
    except OSError as error:
        raise OutputFolderError(f"output folder {destination} is not writable ({error.strerror or error})") from None
    kept = "the previous outputs are kept"
    try:
        try:
            yield staging
        except OSError as error:  # a write that did not go through write_atomically
            if error.errno not in NO_ROOM_ERRNOS:
                raise
            reason = f"no space left ({error.strerror}); {kept}"
            raise OutputFolderError(f"cannot write the outputs into {destination}: {reason}{_remove_staging(staging)}") from None
        try:
            publish_output_set(staging, destination, outputs, marker)
        except OSError as error:
            reason = error.strerror or error
            holds = _now_holds(destination, marker)
            raise OutputFolderError(
                f"cannot publish the outputs into {destination} ({reason}); {holds}{_remove_staging(staging)}"
            ) from None
    except OutputWriteError as error:
        reason = f"{write_failure(error)}; {kept}"
        raise OutputFolderError(f"cannot write the outputs into {destination}: {reason}{_remove_staging(staging)}") from None
    finally:
        _remove_staging(staging)
        unregister_pending(staging)


def write_failure(error: OutputWriteError) -> str:
    """What went wrong with one output file, saying "no space left" when the system ran out of room for it."""
    if error.errno in NO_ROOM_ERRNOS:
        return f"no space left for {error.file_name} ({os.strerror(error.errno)})"
    return str(error)


def _remove_staging(staging: Path) -> str:
    """Remove the staging folder; what to add to an error when the output folder does not let it go."""
    shutil.rmtree(staging, ignore_errors=True)
    return f"; {staging} could not be removed" if staging.exists() else ""


def _now_holds(destination: Path, marker: str) -> str:
    """What a publication that failed part way left: the previous set while its marker is there."""
    if (destination / marker).exists():
        return "the previous outputs are kept"
    return f"the folder holds no complete set (no {marker})"


def _fsync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
