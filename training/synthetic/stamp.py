"""A stamp of what wrote a cached synthetic input: the generator's sources and its parameters."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

SYNTHETIC_DIR = Path(__file__).resolve().parent


def generator_stamp(source_names: Iterable[str], parameters: object) -> str:
    """SHA-256 of ``parameters`` (JSON) and of the named files of ``training/synthetic``.

    An input cached under another stamp was written by other code or settings and is stale.
    """
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    for name in source_names:
        digest.update((SYNTHETIC_DIR / name).read_bytes())
    return digest.hexdigest()
