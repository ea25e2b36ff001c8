"""Write output files atomically: a reader (or a PACS gateway) never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from operators.core.errors import OutputWriteError


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    Any OSError of the writing (no room, a file-size limit, a short write that numpy reports without an
    errno) becomes an :class:`OutputWriteError` naming the file; the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {path.name} ({error.strerror or error})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: Path, content: Any) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(content, indent=2, default=str) + "\n"))
