"""DICOM UID syntax (PS3.5 9.1): what an option naming a UID must look like before it reaches a dataset."""

from __future__ import annotations

import re

UID_MAX_LENGTH = 64
_COMPONENT = re.compile(r"0|[1-9][0-9]*")


def uid_problem(uid: str) -> str | None:
    """Why ``uid`` is not a valid DICOM UID, or None when it is: digits and dots only, at most 64
    characters, no empty component, and no component with a leading zero (``0`` itself is allowed)."""
    if not uid:
        return "it is empty"
    if len(uid) > UID_MAX_LENGTH:
        return f"it has {len(uid)} characters, more than {UID_MAX_LENGTH}"
    for component in uid.split("."):
        if not component:
            return "it has an empty component (two dots in a row, or a dot at either end)"
        if not component.isascii() or not component.isdigit():
            return f"component {component!r} is not digits only"
        if not _COMPONENT.fullmatch(component):
            return f"component {component!r} has a leading zero"
    return None
