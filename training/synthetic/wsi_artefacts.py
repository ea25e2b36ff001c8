"""What a hard synthetic slide adds to its scene: tumour mimics, tissue folds, pen marks, a centre and a JPEG quality.

Frames as :mod:`.wsi_scene`: level-0 pixel coordinates (x right, y down), pixel-centre axes ``X``
(columns) and ``Y`` (rows) at downsample ``d``. A stroke (a fold or a pen mark) is a polyline with a
width; its coverage is the anti-aliased band within half the width of the polyline, so a render
does not depend on how the slide is tiled. :mod:`.wsi_hard` draws these; :meth:`.SlideScene.render`
applies them: mimics are painted as tissue (:mod:`.wsi_anatomy`), folds thicken the stain before the
focus blur, and pen ink (on the coverslip, over glass and tissue alike) adds optical density after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .wsi_geometry import StarShape
from .wsi_texture import F32, ramp

Centre = Literal["A", "B"]
"""The hospital a slide comes from, as Camelyon16's two: A stains and scans as the training slides, B does not."""

FOLD_EXTRA_STAIN = 0.9
"""A fold lays the section over itself: up to this much more hematoxylin and eosin where it does."""


@dataclass(frozen=True, eq=False)
class Stroke:
    """A band of ``width_px`` about a level-0 polyline ``points_xy`` ((n, 2) float64, x, y)."""

    points_xy: np.ndarray = field(repr=False)
    width_px: float

    def bbox(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the band grown by ``margin`` px."""
        r = self.width_px / 2 + margin
        p = self.points_xy
        return float(p[:, 0].min() - r), float(p[:, 1].min() - r), float(p[:, 0].max() + r), float(p[:, 1].max() + r)

    def touches(self, x0: float, y0: float, x1: float, y1: float, margin: float = 0.0) -> bool:
        """Whether the band grown by ``margin`` may meet the rectangle (never False when it does)."""
        bx0, by0, bx1, by1 = self.bbox(margin)
        return bx0 < x1 and x0 < bx1 and by0 < y1 and y0 < by1

    def coverage(self, X: np.ndarray, Y: np.ndarray, d: float) -> np.ndarray:
        """Anti-aliased coverage (float32 (len(Y), len(X)), 0..1) of the band at the pixel centres."""
        px, py = X.astype(np.float64)[None, :], Y.astype(np.float64)[:, None]
        dist2 = np.full((Y.size, X.size), np.inf)
        for (ax, ay), (bx, by) in zip(self.points_xy[:-1], self.points_xy[1:], strict=True):
            vx, vy = bx - ax, by - ay
            t = np.clip(((px - ax) * vx + (py - ay) * vy) / max(vx * vx + vy * vy, 1e-12), 0.0, 1.0)
            np.minimum(dist2, (px - ax - t * vx) ** 2 + (py - ay - t * vy) ** 2, out=dist2)
        return ramp((self.width_px / 2 - np.sqrt(dist2)).astype(F32), max(1.0, d))


@dataclass(frozen=True, eq=False)
class PenMark:
    """Marker ink on the coverslip: ``ink_od`` is its optical density per RGB channel at full coverage."""

    stroke: Stroke
    ink_od: tuple[float, float, float]
    colour: str


@dataclass(frozen=True, eq=False)
class SceneExtras:
    """The hard cases of one slide (module docstring); an empty one renders as the plain scene."""

    centre: Centre = "A"
    mimics: tuple[StarShape, ...] = ()  # histiocyte aggregates inside the nodes (never within 180 um of a tumour)
    mimic_major_um: tuple[float, ...] = ()
    folds: tuple[Stroke, ...] = ()
    pen_marks: tuple[PenMark, ...] = ()
    reactive_follicles: int = 0  # germinal centres added to the sections' own
    jpeg_quality: int = 90
    out_of_focus: bool = False

    def pen_touches(self, x0: float, y0: float, x1: float, y1: float, margin: float) -> bool:
        return any(p.stroke.touches(x0, y0, x1, y1, margin) for p in self.pen_marks)

    def fold_factor(self, X: np.ndarray, Y: np.ndarray, d: float) -> np.ndarray | None:
        """What the folds multiply the stain concentrations by (None where no fold shows)."""
        x0, x1, y0, y1 = X[0], X[-1], Y[0], Y[-1]
        out = None
        for fold in self.folds:
            if fold.touches(x0, y0, x1, y1, d):
                cover = fold.coverage(X, Y, d)
                out = cover if out is None else np.maximum(out, cover)
        if out is None:
            return None
        out *= F32(FOLD_EXTRA_STAIN)
        out += F32(1.0)
        return out

    def ink(self, X: np.ndarray, Y: np.ndarray, d: float) -> list[tuple[np.ndarray, tuple[float, float, float]]]:
        """(coverage, ink optical density) of each pen mark that shows in the render."""
        x0, x1, y0, y1 = X[0], X[-1], Y[0], Y[-1]
        return [(p.stroke.coverage(X, Y, d), p.ink_od) for p in self.pen_marks if p.stroke.touches(x0, y0, x1, y1, d)]

    def describe(self, mpp: float) -> dict:
        """JSON-ready summary for a dataset manifest (sizes in um)."""
        return {
            "centre": self.centre,
            "histiocyte_aggregates_um": [round(v, 1) for v in self.mimic_major_um],
            "reactive_follicles": self.reactive_follicles,
            "folds_width_um": [round(f.width_px * mpp, 1) for f in self.folds],
            "pen_marks": [{"colour": p.colour, "width_um": round(p.stroke.width_px * mpp, 1)} for p in self.pen_marks],
            "jpeg_quality": self.jpeg_quality,
            "out_of_focus": self.out_of_focus,
        }
