"""Write output files atomically: a reader (or a PACS gateway) never sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from operators.core.errors import OutputWriteError
from operators.core.interrupts import output_step, register_pending, unregister_pending


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    Any OSError (no room, a file-size limit, a short write that numpy reports without an errno, a folder
    that takes no new file) becomes an :class:`OutputWriteError` naming the file; the temporary file is
    removed, on an interrupt too (operators.core.interrupts), which waits for the rename when it is under way.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        with output_step():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
            temporary = Path(name)
            register_pending(temporary)
        os.close(handle)
        write(temporary)
        with output_step():
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
    except OSError as error:
        _discard(temporary)
        raise OutputWriteError(f"cannot write {path.name} ({error.strerror or error})", path.name, error.errno) from None
    except BaseException:
        _discard(temporary)
        raise
    finally:
        if temporary is not None:
            unregister_pending(temporary)
    return path


def _discard(temporary: Path | None) -> None:
    """Remove the temporary file, when there is one and its folder lets it go."""
    if temporary is not None:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def write_json_atomically(path: Path, content: Any) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(content, indent=2, default=str) + "\n"))
