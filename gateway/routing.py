"""Which app runs on a series: the first route whose every ``match`` attribute fits the series' attributes.

A value matches a pattern by shell-style wildcards, ignoring case (``CT``, ``*abdomen*``); a
multi-valued attribute (ImageType) matches when any of its values does; a route lists several
patterns for one attribute to accept any of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from pydicom import dcmread
from pydicom.multival import MultiValue

from gateway.config import Route


def attribute_values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def route_matches(route: Route, attributes: Mapping[str, object]) -> bool:
    for keyword, patterns in route.match.items():
        values = attribute_values(attributes.get(keyword))
        if not any(fnmatchcase(v.upper(), p.upper()) for v in values for p in patterns):
            return False
    return True


def choose_route(routes: Sequence[Route], attributes: Mapping[str, object]) -> Route | None:
    return next((route for route in routes if route_matches(route, attributes)), None)


def routing_attributes(path: Path, keywords: Sequence[str]) -> dict[str, object]:
    """The attributes routes look at, read from one instance of a series (header only)."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
    return {keyword: ds.get(keyword) for keyword in keywords if keyword in ds}


def describe(attributes: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={'/'.join(attribute_values(v))}" for k, v in sorted(attributes.items())) or "no attributes"
