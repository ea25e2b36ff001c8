"""Star-shaped outlines of the synthetic slides' tissue sections and tumours (level-0 pixels, x right, y down).

A :class:`StarShape` is a boundary radius over the angle of a rotated, anisotropically scaled
local frame, tabulated in a LUT of ``LUT_N + 1`` samples over [-pi, pi]: cheap signed distances
on grids and at points, and polygons for the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .wsi_texture import F32

LUT_N = 2048  # samples of a star shape's radius over [-pi, pi]


@dataclass(frozen=True, eq=False)
class StarShape:
    """A smooth star-shaped blob: radius(theta) on a rotated, anisotropically scaled frame (level-0 px)."""

    centre_xy: tuple[float, float]
    angle: float  # rotation of the local frame (radians)
    scale_xy: tuple[float, float]  # level-0 px per local unit along the local axes
    radius_lut: np.ndarray = field(repr=False)  # boundary radius (local units) at theta = -pi .. pi, LUT_N + 1 samples

    @property
    def max_extent_px(self) -> float:
        return float(self.radius_lut.max() * max(self.scale_xy))

    def bbox(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Axis-aligned box (xmin, ymin, xmax, ymax) that contains the shape (a circle bound)."""
        r = self.max_extent_px + margin
        cx, cy = self.centre_xy
        return cx - r, cy - r, cx + r, cy + r

    def intersects(self, x0: float, y0: float, x1: float, y1: float, margin: float = 0.0) -> bool:
        """Whether the bounding box, grown by ``margin``, meets the rectangle (cheap, loose)."""
        bx0, by0, bx1, by1 = self.bbox(margin)
        return bx0 < x1 and x0 < bx1 and by0 < y1 and y0 < by1

    @cached_property
    def lipschitz(self) -> float:
        """Bound on how fast :meth:`depth` changes per px of motion outside the shape: 1 + max|R'| / min R."""
        lut = self.radius_lut.astype(np.float64)
        slope = np.abs(np.diff(lut)).max() * LUT_N / (2 * np.pi)
        return float(1.0 + 1.05 * slope / lut.min())

    def may_touch(self, x0: float, y0: float, x1: float, y1: float, margin: float = 0.0) -> bool:
        """Whether the shape grown by ``margin`` may meet the rectangle (never False when it does)."""
        if not self.intersects(x0, y0, x1, y1, margin):
            return False
        cx, cy = np.array([(x0 + x1) / 2]), np.array([(y0 + y1) / 2])
        half_diag = math.hypot(x1 - x0, y1 - y0) / 2
        return bool(self.depth_at(cx, cy)[0][0] > -(self.lipschitz * half_diag + margin) - 1.0)

    def _local(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cs, sn = math.cos(self.angle), math.sin(self.angle)
        sx, sy = self.scale_xy
        dx = (X - self.centre_xy[0]).astype(F32)
        dy = (Y - self.centre_xy[1]).astype(F32)
        u = (dx * F32(cs / sx))[None, :] + (dy * F32(sn / sx))[:, None]
        v = (dx * F32(-sn / sy))[None, :] + (dy * F32(cs / sy))[:, None]
        return np.hypot(u, v), np.arctan2(v, u)

    def _lut(self, theta: np.ndarray, lut: np.ndarray) -> np.ndarray:
        t = (theta + F32(np.pi)) * F32(LUT_N / (2 * np.pi))
        i = np.clip(t.astype(np.int32), 0, LUT_N - 1)
        f = t - i
        lo = lut.take(i)
        return lo + f * (lut.take(i + 1) - lo)

    def depth(self, X: np.ndarray, Y: np.ndarray, *extra_luts: np.ndarray) -> list[np.ndarray]:
        """Approximate signed distance (px, positive inside) to this boundary and to scaled variants."""
        rho, theta = self._local(X, Y)
        k = F32(min(self.scale_xy))
        return [(self._lut(theta, lut) - rho) * k for lut in (self.radius_lut, *extra_luts)]

    def depth_at(self, x: np.ndarray, y: np.ndarray, *extra_luts: np.ndarray) -> list[np.ndarray]:
        """Like :meth:`depth` but at the points (x[k], y[k]) rather than on a grid."""
        cs, sn = math.cos(self.angle), math.sin(self.angle)
        dx = np.asarray(x, np.float64) - self.centre_xy[0]
        dy = np.asarray(y, np.float64) - self.centre_xy[1]
        u = (dx * cs + dy * sn) / self.scale_xy[0]
        v = (-dx * sn + dy * cs) / self.scale_xy[1]
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        t = (theta + np.pi) * (LUT_N / (2 * np.pi))
        grid = np.arange(LUT_N + 1)
        k = min(self.scale_xy)
        return [(np.interp(t, grid, lut.astype(np.float64)) - rho) * k for lut in (self.radius_lut, *extra_luts)]

    def polygon_n(self, n: int) -> np.ndarray:
        """Boundary as an (n, 2) float64 array of (x, y) level-0 vertices at equal angles of the local frame."""
        theta = np.linspace(-np.pi, np.pi, n, endpoint=False)
        t = (theta + np.pi) * (LUT_N / (2 * np.pi))
        r = np.interp(t, np.arange(LUT_N + 1), self.radius_lut.astype(np.float64))
        u, v = r * np.cos(theta) * self.scale_xy[0], r * np.sin(theta) * self.scale_xy[1]
        cs, sn = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.centre_xy[0] + u * cs - v * sn, self.centre_xy[1] + u * sn + v * cs], axis=1)

    def polygon(self, max_chord_error_px: float = 0.5) -> np.ndarray:
        """Boundary as an (n, 2) float64 array of (x, y) level-0 vertices, with n such that chords stay within the error."""
        r_px = max(self.max_extent_px, 1.0)
        n = math.ceil(math.pi / math.acos(max(1e-12, 1 - max_chord_error_px / r_px)))
        return self.polygon_n(int(np.clip(n, 24, 720)))


def harmonic_lut(rng: np.random.Generator, base: float, amplitude: float, kmax: int = 7) -> np.ndarray:
    """Radius LUT base * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..kmax, a_k ~ amplitude / k."""
    theta = np.linspace(-np.pi, np.pi, LUT_N + 1)
    r = np.ones_like(theta)
    for k in range(2, kmax + 1):
        r += rng.uniform(0.3, 1.0) * amplitude / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return (base * r).astype(F32)


def local_to_xy(shape: StarShape, r_local: float, theta: float) -> tuple[float, float]:
    """Level-0 (x, y) of the point at radius ``r_local`` (local units) and angle ``theta`` of a shape's frame."""
    u, v = r_local * math.cos(theta) * shape.scale_xy[0], r_local * math.sin(theta) * shape.scale_xy[1]
    cs, sn = math.cos(shape.angle), math.sin(shape.angle)
    return shape.centre_xy[0] + u * cs - v * sn, shape.centre_xy[1] + u * sn + v * cs


def lut_at(lut: np.ndarray, theta: float) -> float:
    """A radius LUT at angle ``theta`` (linear interpolation)."""
    return float(np.interp((theta + np.pi) * LUT_N / (2 * np.pi), np.arange(LUT_N + 1), lut))
