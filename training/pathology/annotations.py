"""Lesion annotations of whole-slide images: the ASAP XML reader (the Camelyon16 format) and polygon rasterisation.

Coordinates are level-0 pixels (x, y). Output pixel (i, j) of a region with origin (x0, y0) at
downsample d is inside a polygon when its centre, level-0 (x0 + (j + 0.5) d, y0 + (i + 0.5) d),
is: the same sampling as :meth:`training.synthetic.wsi_scene.SlideScene.render`.

Camelyon16 XML, as in the challenge's ``lesion_annotations`` (and as
:func:`training.synthetic.wsi_annotations.write_asap_xml` writes it)::

    <?xml version="1.0"?>
    <ASAP_Annotations>
        <Annotations>
            <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
                <Coordinates>
                    <Coordinate Order="0" X="55486.6016" Y="59360.1992" />
                    ...
        <AnnotationGroups>
            <Group Name="Tumor" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TUMOR_GROUP = "Tumor"
EXCLUSION_GROUPS = ("_2", "Exclusion")
"""Groups that mark non-tumour areas inside tumour outlines (Camelyon16 re-annotations, Camelyon17)."""


def read_asap_xml_groups(path: str | Path) -> dict[str, list[np.ndarray]]:
    """All polygon-like annotations of an ASAP XML file by group: {group: [(n, 2) float64 x, y, ...]}.

    Reads Polygon and Spline annotations (vertices in ``Order``); skips dots and point sets and
    outlines with fewer than 3 vertices. Accepts decimal commas, seen in some Camelyon files.
    """
    root = ET.parse(path).getroot()
    out: dict[str, list[np.ndarray]] = {}
    for ann in root.iter("Annotation"):
        kind = ann.get("Type", "Polygon")
        if kind not in ("Polygon", "Spline", "Rectangle"):
            continue
        rows = []
        for c in ann.iter("Coordinate"):
            rows.append(
                (float(c.get("Order", len(rows))), float(c.get("X", "nan").replace(",", ".")), float(c.get("Y", "nan").replace(",", ".")))
            )
        if len(rows) < 3:
            logger.debug("skipping annotation %s with %d vertices", ann.get("Name"), len(rows))
            continue
        arr = np.array(sorted(rows), np.float64)[:, 1:]
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: annotation {ann.get('Name')!r} has a malformed coordinate")
        out.setdefault(ann.get("PartOfGroup", "None"), []).append(arr)
    return out


def read_asap_xml(
    path: str | Path, groups: Sequence[str] | None = None, exclude_groups: Sequence[str] = EXCLUSION_GROUPS
) -> list[np.ndarray]:
    """Tumour polygons of an ASAP XML file: list of (n, 2) float64 arrays of level-0 (x, y).

    Args:
        groups: only these groups; default all groups except ``exclude_groups``.
        exclude_groups: groups that are not lesions (Camelyon's ``_2`` / ``Exclusion``).
    """
    by_group = read_asap_xml_groups(path)
    keep = [g for g in by_group if (g in groups if groups is not None else g not in exclude_groups)]
    return [p for g in keep for p in by_group[g]]


def rasterize_polygons(
    polygons: Sequence[np.ndarray],
    region_xy_level0: tuple[float, float],
    size_xy: tuple[int, int],
    downsample: float = 1.0,
    exclusions: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Binary mask (uint8 (h, w), 1 inside any polygon and outside every exclusion) of a region at a downsample.

    Each output pixel is tested at its centre (see the module docstring) with the even-odd rule;
    polygons are OR-ed. Equivalent to ``skimage.draw.polygon`` on the vertices scaled to the
    output grid, done as a scanline fill: O(rows x edges + pixels) rather than O(pixels x edges),
    so a tile of a large lesion costs about as much as a tile of a small one.
    """
    w, h = int(size_xy[0]), int(size_xy[1])
    out = _fill(polygons, region_xy_level0, w, h, float(downsample))
    if len(exclusions) and out.any():
        out &= 1 - _fill(exclusions, region_xy_level0, w, h, float(downsample))
    return out


def _fill(polygons: Sequence[np.ndarray], region_xy_level0: tuple[float, float], w: int, h: int, d: float) -> np.ndarray:
    x0, y0 = float(region_xy_level0[0]), float(region_xy_level0[1])
    out = np.zeros((h, w), np.uint8)
    for poly in polygons:
        p = np.asarray(poly, np.float64)
        if p.ndim != 2 or p.shape[0] < 3:
            continue
        # to output pixel units where pixel centres are integers
        xa = (p[:, 0] - x0) / d - 0.5
        ya = (p[:, 1] - y0) / d - 0.5
        if xa.max() < 0 or xa.min() > w - 1 or ya.max() < 0 or ya.min() > h - 1:
            continue
        xb, yb = np.roll(xa, -1), np.roll(ya, -1)
        # edge k crosses the centres of rows r with min(ya, yb) <= r < max(ya, yb)
        r0 = np.clip(np.ceil(np.minimum(ya, yb)), 0, h).astype(np.int64)
        r1 = np.clip(np.ceil(np.maximum(ya, yb)), 0, h).astype(np.int64)
        counts = np.maximum(r1 - r0, 0)
        total = int(counts.sum())
        if total == 0:
            continue
        edge = np.repeat(np.arange(xa.size), counts)
        rows = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + r0[edge]
        t = (rows - ya[edge]) / (yb[edge] - ya[edge])
        xi = xa[edge] + t * (xb[edge] - xa[edge])
        cols = np.clip(np.ceil(xi), 0, w).astype(np.int64)  # first pixel centre at or right of the crossing
        toggles = np.bincount(rows * (w + 1) + cols, minlength=h * (w + 1)).reshape(h, w + 1)[:, :w]
        out |= (np.cumsum(toggles, axis=1) & 1).astype(np.uint8)
    return out
