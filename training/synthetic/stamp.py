"""A stamp of what wrote a cached synthetic input: the generator's sources and its parameters."""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

SYNTHETIC_DIR = Path(__file__).resolve().parent
REPO_ROOT = SYNTHETIC_DIR.parent.parent
PROJECT_PACKAGE = "training"
"""Imports of this package count as the generator's sources; third-party ones do not."""


def generator_sources(source_names: Iterable[str]) -> list[Path]:
    """The named files of ``training/synthetic`` and every module of ``training`` they import, transitively.

    Imports are read from the sources (also those inside functions), so a generator split over
    more modules, or one that calls a reader elsewhere in ``training``, is covered without a list
    to keep up to date. Sorted by path.
    """
    todo = [SYNTHETIC_DIR / name for name in source_names]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imported_files(path))
    return sorted(seen)


def _imported_files(path: Path) -> list[Path]:
    """Files of the project package that ``path`` imports (modules, and modules named in ``from package import name``)."""
    package = path.parent.relative_to(REPO_ROOT).parts
    modules: list[tuple[str, ...]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.extend(tuple(alias.name.split(".")) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = (*base, *(node.module.split(".") if node.module else ()))
            modules.append(module)
            modules.extend((*module, alias.name) for alias in node.names)
    files = []
    for parts in modules:
        if parts[:1] != (PROJECT_PACKAGE,):
            continue
        file = REPO_ROOT.joinpath(*parts).with_suffix(".py")
        if file.is_file():
            files.append(file)
    return files


def generator_stamp(source_names: Iterable[str], parameters: object) -> str:
    """SHA-256 of ``parameters`` (JSON) and of :func:`generator_sources` of the named files of ``training/synthetic``.

    An input cached under another stamp was written by other code or settings and is stale.
    """
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    for path in generator_sources(source_names):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
