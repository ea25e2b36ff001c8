"""SIGINT and SIGTERM end an app promptly and leave no partial output.

How signals reach an app: Holoscan installs its own SIGINT/SIGTERM handlers while a graph runs; they
ask the graph to stop and, when an operator is still inside a long compute call 3 s later, force the
process to exit with status 1, so nothing of the app's own clean-up runs and the staging folder stays.
Python's handlers cannot help either: they run only on the main thread, which waits inside the
graph's C++ run call. So :func:`install_interrupt_handler` blocks both signals before any other thread
exists (threads inherit the mask: Holoscan's scheduler, torch's and the decoders' pools), which
leaves Holoscan's handlers never called, and one thread of ours takes them with ``sigwait``.

On a signal that thread waits for any rename or set publication in flight (:func:`output_step`), then
removes everything registered with :func:`pending_output` (staging folders, temporary files, folders a
run created), writes one line naming the signal, and ends the process with ``128 + signal`` without
releasing the lock, so no other thread renames anything after the clean-up. The output folder
therefore holds its previous complete set, or the new complete set when the signal came while it was
being published, and never part of one. SIGKILL cannot be caught: a run killed by it while publishing
leaves no marker (see operators.core.output_set).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

INTERRUPT_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
Removal = Literal["remove", "remove_if_empty"]

_LOCK = threading.RLock()
_INTERRUPTED = threading.Event()
_DEPTH = threading.local()
_PENDING: dict[Path, Removal] = {}
_REMOVAL_TRIES = 5


def interrupt_exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    return 128 + signum


def interrupt_message(app_name: str, signum: int, output_folder: Path, left: Sequence[Path] = ()) -> str:
    """The one line an interrupted app leaves on stderr; ``left``: unfinished entries that could not be removed."""
    name = signal.Signals(signum).name
    if left:
        return f"{app_name}: interrupted by {name}; could not remove the unfinished {', '.join(str(p) for p in left)}"
    return f"{app_name}: interrupted by {name}; no partial outputs left in {output_folder}"


@contextmanager
def output_step() -> Iterator[None]:
    """Hold off an interrupt's clean-up while the body creates or renames output entries. A thread that
    leaves the step after an interrupt came waits there for the process to end, so a publication the
    signal waited for is followed by the interrupt's exit, not by the rest of the run."""
    with _LOCK:
        _DEPTH.steps = getattr(_DEPTH, "steps", 0) + 1
        try:
            yield
        finally:
            _DEPTH.steps -= 1
    if _INTERRUPTED.is_set() and _DEPTH.steps == 0:  # the outermost step: the lock is free for the interrupt
        threading.Event().wait()  # forever: the interrupt thread ends the process


@contextmanager
def pending_output(path: Path, removal: Removal = "remove") -> Iterator[Path]:
    """Register ``path`` for removal should an interrupt end the process inside the body. ``remove_if_empty``:
    a folder the run created, removed only when nothing else is in it."""
    register_pending(path, removal)
    try:
        yield path
    finally:
        unregister_pending(path)


def register_pending(path: Path, removal: Removal = "remove") -> None:
    with _LOCK:
        _PENDING[Path(path)] = removal


def unregister_pending(path: Path) -> None:
    with _LOCK:
        _PENDING.pop(Path(path), None)


def remove_pending_outputs() -> list[Path]:
    """Remove every registered entry (removals first, then empty folders, deepest first); returns those still there."""
    with _LOCK:
        entries = sorted(_PENDING.items(), key=lambda item: (item[1] == "remove_if_empty", -len(item[0].parts)))
        return [path for path, removal in entries if not _remove(path, removal)]


def _remove(path: Path, removal: Removal) -> bool:
    """Remove ``path``; again when a writer in flight recreated it meanwhile. True when it is gone."""
    for _ in range(_REMOVAL_TRIES):
        try:
            if removal == "remove_if_empty":
                path.rmdir()
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            return True
        except OSError:
            if removal == "remove_if_empty" and path.exists():
                return True  # not empty: it holds something else (another run's, or the user's)
        if not os.path.lexists(path):
            return True
    return False


def install_interrupt_handler(app_name: str, output_folder: Path) -> threading.Thread:
    """Block SIGINT and SIGTERM in this thread (call it before any other thread starts) and start the
    thread that handles them as the module docstring says."""
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPT_SIGNALS)
    waiter = threading.Thread(target=_wait_for_interrupt, args=(app_name, Path(output_folder)), name="interrupts", daemon=True)
    waiter.start()
    return waiter


def _wait_for_interrupt(app_name: str, output_folder: Path) -> None:
    signum = signal.sigwait(INTERRUPT_SIGNALS)
    _INTERRUPTED.set()
    _LOCK.acquire()  # never released: the process ends holding it
    message = interrupt_message(app_name, signum, output_folder, remove_pending_outputs())
    logger.error(message)
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(interrupt_exit_code(signum))
