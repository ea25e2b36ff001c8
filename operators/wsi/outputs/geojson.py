"""Detections and tumor contours as a GeoJSON FeatureCollection that QuPath (0.4 or later) imports.

Coordinates are level-0 pixels (x right, y down; pixel (i, j) covers [j, j+1) x [i, i+1)), which is
QuPath's image coordinate system. What QuPath reads (qupath-core ``PathObjectTypeAdapters``,
``GsonTools.PathClassTypeAdapter``): a FeatureCollection's ``features``; per feature its
``geometry`` and ``properties``: ``objectType`` ("annotation" makes editable annotations; also the
default), ``name``, ``classification`` as ``{"name": ..., "color": [r, g, b]}``, and
``measurements`` as an object of name -> number. Other properties are ignored by QuPath and kept
for other readers.

* each detection is a Point feature, its probability the measurement ``probability``;
* each region where the map is at or above the threshold is a Polygon feature traced by marching
  squares (:func:`skimage.measure.find_contours`) on the map padded with zeros, so every ring is
  closed, with holes where the region surrounds lower probabilities. Contour points are
  interpolated between cell centres and placed on level 0 with
  :meth:`ProbabilityMap.cell_centre_xy_level0`. Rings follow RFC 7946's right-hand rule on the
  coordinate values: exterior rings have positive signed (shoelace) area - counter-clockwise with
  the y axis up, so clockwise on screen where y points down - and holes negative.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage import measure

from operators.core.atomic_io import write_atomically
from operators.wsi.grid import ProbabilityMap
from operators.wsi.nms import Detection

logger = logging.getLogger(__name__)

COORDINATE_DECIMALS = 2  # 1/100 level-0 pixel


@dataclass(frozen=True)
class QuPathClass:
    """A QuPath classification: its name and display colour (r, g, b), 0..255."""

    name: str
    color_rgb: tuple[int, int, int]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "color": [int(c) for c in self.color_rgb]}


TUMOR_CLASS = QuPathClass("Tumor", (200, 0, 0))  # QuPath's built-in Tumor class colour


@dataclass(frozen=True)
class ContourPolygon:
    """A region of the map at or above the threshold: rings of (x, y) level-0 positions, closed
    (first == last), exterior first (positive signed area), then holes (negative)."""

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...]
    max_probability: float


def signed_area(ring_xy: np.ndarray) -> float:
    """Shoelace area of a closed ring of (x, y) rows: positive when counter-clockwise with y up."""
    x, y = ring_xy[:, 0], ring_xy[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _oriented(ring: np.ndarray, positive: bool) -> np.ndarray:
    return ring if (signed_area(ring) > 0) == positive else ring[::-1].copy()


def _closed(ring: np.ndarray) -> np.ndarray:
    return ring if np.array_equal(ring[0], ring[-1]) else np.vstack([ring, ring[:1]])


def tumor_contours(prob_map: ProbabilityMap, threshold: float = 0.5) -> list[ContourPolygon]:
    """Polygons around the map's regions at or above ``threshold`` (0 < threshold <= 1), largest first."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    probabilities = np.asarray(prob_map.probabilities, dtype=np.float64)
    padded = np.pad(probabilities, 1, constant_values=0.0)
    exteriors: list[np.ndarray] = []  # in map (col, row) coordinates
    holes: list[np.ndarray] = []
    for contour in measure.find_contours(padded, level=threshold, fully_connected="high", positive_orientation="high"):
        ring = _closed(contour[:, ::-1] - 1.0)  # (row, col) of the padded map -> (col, row) of the map
        if len(ring) < 4:
            continue
        area = signed_area(ring)
        if area == 0.0:
            continue
        # positive_orientation="high": exteriors wind with negative (col, row) area, holes positive
        (exteriors if area < 0 else holes).append(ring)

    polygons: list[tuple[np.ndarray, list[np.ndarray]]] = [(ring, []) for ring in exteriors]
    areas = [abs(signed_area(ring)) for ring in exteriors]
    for hole in holes:
        containing = [i for i, (ring, _) in enumerate(polygons) if measure.points_in_poly(hole[:1], ring)[0]]
        if containing:
            polygons[min(containing, key=lambda i: areas[i])][1].append(hole)
        else:  # cannot happen for a closed marching-squares contour; keep the data visible rather than drop it
            logger.warning("A hole of the tumor contour lies in no exterior ring; ignored")

    rows, cols = probabilities.shape
    results = []
    for ring, ring_holes in polygons:
        col_min, row_min = np.floor(ring.min(axis=0)).astype(int)
        col_max, row_max = np.ceil(ring.max(axis=0)).astype(int)
        rr, cc = np.mgrid[max(row_min, 0) : min(row_max, rows - 1) + 1, max(col_min, 0) : min(col_max, cols - 1) + 1]
        centres = np.column_stack([cc.ravel(), rr.ravel()]).astype(np.float64)
        inside = measure.points_in_poly(centres, ring)
        for hole in ring_holes:
            inside &= ~measure.points_in_poly(centres, hole)
        values = probabilities[rr.ravel()[inside], cc.ravel()[inside]]
        max_probability = float(values.max()) if values.size else float(threshold)
        results.append(
            ContourPolygon(
                exterior=_oriented(_ring_xy_level0(prob_map, ring), positive=True),
                holes=tuple(_oriented(_ring_xy_level0(prob_map, hole), positive=False) for hole in ring_holes),
                max_probability=max_probability,
            )
        )
    results.sort(key=lambda p: -signed_area(p.exterior))
    return results


def _ring_xy_level0(prob_map: ProbabilityMap, ring_col_row: np.ndarray) -> np.ndarray:
    """Map positions (col, row), fractional, -> level-0 (x, y)."""
    x, y = prob_map.cell_centre_xy_level0(ring_col_row[:, 1], ring_col_row[:, 0])
    return np.column_stack([x, y])


def _ring_coordinates(ring: np.ndarray) -> list[list[float]]:
    """Rounded positions with consecutive repeats dropped; stays closed."""
    rounded = np.round(ring, COORDINATE_DECIMALS)
    keep = np.ones(len(rounded), dtype=bool)
    keep[1:] = np.any(rounded[1:] != rounded[:-1], axis=1)
    kept = rounded[keep]
    if not np.array_equal(kept[0], kept[-1]):
        kept = np.vstack([kept, kept[:1]])
    return kept.tolist()


def _properties(name: str, qupath_class: QuPathClass, measurements: dict[str, float]) -> dict[str, Any]:
    return {"objectType": "annotation", "name": name, "classification": qupath_class.as_json(), "measurements": measurements}


def detections_and_contours_geojson(
    detections: Sequence[Detection],
    prob_map: ProbabilityMap,
    threshold: float = 0.5,
    qupath_class: QuPathClass = TUMOR_CLASS,
) -> dict[str, Any]:
    """A FeatureCollection: one Point per detection, then one Polygon per region >= ``threshold``."""
    features: list[dict[str, Any]] = []
    for rank, detection in enumerate(detections, start=1):
        probability = float(detection.probability)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [int(detection.x), int(detection.y)]},
                "properties": _properties(f"Detection {rank} (p={probability:.3f})", qupath_class, {"probability": probability}),
            }
        )
    mpp = prob_map.grid.slide_mpp
    index = 0
    for polygon in tumor_contours(prob_map, threshold):
        rings = [_ring_coordinates(ring) for ring in (polygon.exterior, *polygon.holes)]
        if len(rings[0]) < 4:  # collapsed by the rounding (a sub-pixel region)
            continue
        index += 1
        area_um2 = (signed_area(polygon.exterior) + sum(signed_area(h) for h in polygon.holes)) * mpp * mpp
        measurements = {"max probability": polygon.max_probability, "area um^2": area_um2, "threshold": float(threshold)}
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [rings[0], *(ring for ring in rings[1:] if len(ring) >= 4)]},
                "properties": _properties(f"Tumor region {index} (p>={threshold:g})", qupath_class, measurements),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(feature_collection: dict[str, Any], path: Path) -> Path:
    """Write compact GeoJSON (UTF-8) atomically."""
    text = json.dumps(feature_collection, separators=(",", ":"), allow_nan=False)
    return write_atomically(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
