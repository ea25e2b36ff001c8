"""Procedural H&E lymph-node scene for synthetic whole-slide images (Camelyon16-like).

Frame: everything is defined in level-0 pixel coordinates (x to the right, y down) at ``mpp``
micrometres per pixel (0.243 um/px, Camelyon16's 40x). A pixel ``(row i, column j)`` of a render
with origin ``(x0, y0)`` and downsample ``d`` covers level-0 ``[x0 + j d, x0 + (j + 1) d)`` and is
sampled at its centre ``x0 + (j + 0.5) d``; annotation polygons use the same continuous frame.

The scene is a pure function of its parameters: :meth:`SlideScene.render` draws ANY rectangle at
ANY downsample, so a region's pixels do not depend on how a slide is tiled, and a low level is
approximately the box-downsampled high level (nuclei and fine texture fade to their mean below the
pixel size). Texture comes from hashing integer cell coordinates (:mod:`.wsi_texture`), so a render
costs O(region size) in vectorised numpy.

Anatomy: a few tissue sections (smooth star-shaped blobs on glass), each a lymph node (dense small
dark lymphocytes; paler germinal centres of larger nuclei; sinuses with sparse pale histiocytes;
a fibrous capsule with spindle nuclei) inside a rim of perinodal fat. Metastases are smooth
irregular blobs inside a node: cohesive nests of large (10-16 um) pale vesicular nuclei with
nucleoli and pink cytoplasm, separated by fibrous stroma. Their outlines, as polygons, are the
ground truth. Colours come from a Beer-Lambert H&E stain model whose stain vectors, intensities,
glass colour and focus blur vary per slide, plus regional stain unevenness, so that mean colour
alone does not tell tumour from normal tissue; nuclear size and texture do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage

from .wsi_nuclei import CENTROBLASTS, HISTIOCYTES, LYMPHOCYTES, SPARSE_LYMPHOCYTES, SPINDLE, TUMOR_CELLS, nuclei
from .wsi_texture import F32, contour_field, fade, fat_membranes, fine_texture, ramp, subkey, value_noise, value_noise_at

logger = logging.getLogger(__name__)

CAMELYON_MPP = 0.243
"""Level-0 resolution of Camelyon16 slides (um per pixel)."""

DEFAULT_TUMOR_SIZES_UM: tuple[float, ...] = (2100.0, 600.0, 250.0, 80.0)
"""One macro-metastasis (> 2 mm), two micro-metastases (0.2-2 mm) and one isolated tumour cell cluster.

Sizes are max Feret diameters. The official Camelyon16 evaluation grows each lesion by 75 um and
ignores those whose grown major axis is below 275 um, so ITC clusters should stay at or below
~100 um to be ignored robustly, and micro-metastases at or above ~200 um to be counted robustly.
These defaults fit a 16384 x 12288 (4.0 x 3.0 mm) slide.
"""

MACRO_MIN_UM = 2000.0
MICRO_MIN_UM = 200.0

NEST_MIN_UM = 250.0  # tumours at least this big grow in nests separated by stroma
NEST_LATTICE_UM = (45.0, 120.0)
NEST_LATTICE_WEIGHT = 0.6
NEST_OFFSET = 0.45  # higher: more tumour cells, less stroma

_TUMOR_GAP_UM = 180.0  # between lesions: Camelyon16's evaluation grows each by 75 um
_TISSUE_EDGE_UM = 2.5  # anti-aliasing width of tissue outlines
_ANCHOR_PX = 8  # smooth fields are computed every this many output pixels and interpolated

_LUT_N = 2048  # samples of a star shape's radius over [-pi, pi]
_F32 = F32


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StarShape:
    """A smooth star-shaped blob: radius(theta) on a rotated, anisotropically scaled frame (level-0 px)."""

    centre_xy: tuple[float, float]
    angle: float  # rotation of the local frame (radians)
    scale_xy: tuple[float, float]  # level-0 px per local unit along the local axes
    radius_lut: np.ndarray = field(repr=False)  # boundary radius (local units) at theta = -pi .. pi, _LUT_N + 1 samples

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
        slope = np.abs(np.diff(lut)).max() * _LUT_N / (2 * np.pi)
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
        dx = (X - self.centre_xy[0]).astype(_F32)
        dy = (Y - self.centre_xy[1]).astype(_F32)
        u = (dx * _F32(cs / sx))[None, :] + (dy * _F32(sn / sx))[:, None]
        v = (dx * _F32(-sn / sy))[None, :] + (dy * _F32(cs / sy))[:, None]
        return np.hypot(u, v), np.arctan2(v, u)

    def _lut(self, theta: np.ndarray, lut: np.ndarray) -> np.ndarray:
        t = (theta + _F32(np.pi)) * _F32(_LUT_N / (2 * np.pi))
        i = np.clip(t.astype(np.int32), 0, _LUT_N - 1)
        f = t - i
        lo = lut.take(i)
        return lo + f * (lut.take(i + 1) - lo)

    def depth(self, X: np.ndarray, Y: np.ndarray, *extra_luts: np.ndarray) -> list[np.ndarray]:
        """Approximate signed distance (px, positive inside) to this boundary and to scaled variants."""
        rho, theta = self._local(X, Y)
        k = _F32(min(self.scale_xy))
        return [(self._lut(theta, lut) - rho) * k for lut in (self.radius_lut, *extra_luts)]

    def depth_at(self, x: np.ndarray, y: np.ndarray, *extra_luts: np.ndarray) -> list[np.ndarray]:
        """Like :meth:`depth` but at the points (x[k], y[k]) rather than on a grid."""
        cs, sn = math.cos(self.angle), math.sin(self.angle)
        dx = np.asarray(x, np.float64) - self.centre_xy[0]
        dy = np.asarray(y, np.float64) - self.centre_xy[1]
        u = (dx * cs + dy * sn) / self.scale_xy[0]
        v = (-dx * sn + dy * cs) / self.scale_xy[1]
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        t = (theta + np.pi) * (_LUT_N / (2 * np.pi))
        grid = np.arange(_LUT_N + 1)
        k = min(self.scale_xy)
        return [(np.interp(t, grid, lut.astype(np.float64)) - rho) * k for lut in (self.radius_lut, *extra_luts)]

    def polygon_n(self, n: int) -> np.ndarray:
        """Boundary as an (n, 2) float64 array of (x, y) level-0 vertices at equal angles of the local frame."""
        theta = np.linspace(-np.pi, np.pi, n, endpoint=False)
        t = (theta + np.pi) * (_LUT_N / (2 * np.pi))
        r = np.interp(t, np.arange(_LUT_N + 1), self.radius_lut.astype(np.float64))
        u, v = r * np.cos(theta) * self.scale_xy[0], r * np.sin(theta) * self.scale_xy[1]
        cs, sn = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.centre_xy[0] + u * cs - v * sn, self.centre_xy[1] + u * sn + v * cs], axis=1)

    def polygon(self, max_chord_error_px: float = 0.5) -> np.ndarray:
        """Boundary as an (n, 2) float64 array of (x, y) level-0 vertices, with n such that chords stay within the error."""
        r_px = max(self.max_extent_px, 1.0)
        n = math.ceil(math.pi / math.acos(max(1e-12, 1 - max_chord_error_px / r_px)))
        return self.polygon_n(int(np.clip(n, 24, 720)))


def _harmonic_lut(rng: np.random.Generator, base: float, amplitude: float, kmax: int = 7) -> np.ndarray:
    """Radius LUT base * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..kmax, a_k ~ amplitude / k."""
    theta = np.linspace(-np.pi, np.pi, _LUT_N + 1)
    r = np.ones_like(theta)
    for k in range(2, kmax + 1):
        r += rng.uniform(0.3, 1.0) * amplitude / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return (base * r).astype(_F32)


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TissueSection:
    """One lymph-node section: outer outline (tissue edge), node outline (inside the perinodal fat), follicles."""

    shape: StarShape
    node_lut: np.ndarray = field(repr=False)  # node boundary radius LUT in the shape's local frame
    capsule_px: float = 80.0
    follicles_xyr: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3)))  # (n, 3): x, y, radius px


@dataclass(frozen=True, eq=False)
class TumorRegion:
    """A metastasis: a smooth blob whose polygon is its ground-truth annotation."""

    shape: StarShape
    major_axis_um: float  # max Feret diameter
    category: str  # "macro" | "micro" | "itc"
    polygon_xy: np.ndarray = field(repr=False)  # (n, 2) level-0 (x, y)


@dataclass(frozen=True)
class StainParams:
    """Per-slide Beer-Lambert stain model: RGB = glass * exp(-(H * h_scale * h_vector + E * e_scale * e_vector))."""

    h_vector: tuple[float, float, float]
    e_vector: tuple[float, float, float]
    h_scale: float
    e_scale: float
    glass_rgb: tuple[float, float, float]  # integers, so that glass renders exactly
    blur_px: float  # Gaussian focus blur (sigma, level-0 px)


def tumor_category(major_axis_um: float) -> str:
    """Camelyon16 size classes: macro (> 2 mm), micro (0.2-2 mm), isolated tumour cells (< 0.2 mm)."""
    if major_axis_um > MACRO_MIN_UM:
        return "macro"
    if major_axis_um >= MICRO_MIN_UM:
        return "micro"
    return "itc"


class _AnchorGrid:
    """Anchors every ``spacing`` level-0 px (absolute multiples, so tiling-independent) and bilinear interpolation."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, spacing: float) -> None:
        self.spacing = spacing
        tx, ty = X / spacing, Y / spacing
        ix, iy = np.floor(tx), np.floor(ty)
        self.fx = (tx - ix).astype(F32)
        self.fy = (ty - iy).astype(F32)[:, None]
        self.cx = (ix - ix.min()).astype(np.intp)
        self.cy = (iy - iy.min()).astype(np.intp)
        self.ax = np.arange(ix.min(), ix.max() + 2) * spacing
        self.ay = np.arange(iy.min(), iy.max() + 2) * spacing

    def interp(self, field: np.ndarray) -> np.ndarray:
        """(len(ay), len(ax)) anchor values -> (len(Y), len(X)) pixel values (float32)."""
        field = field.astype(F32, copy=False)
        lo = field[:, self.cx]
        rows = field[:, self.cx + 1] - lo
        rows *= self.fx
        rows += lo
        lo = rows[self.cy]
        out = rows[self.cy + 1]
        out -= lo
        out *= self.fy
        out += lo
        return out

    def banded(self, field: np.ndarray, lo: float, hi: float) -> np.ndarray | np.floating:
        """:meth:`interp`, or the scalar ``hi`` / ``lo`` when every anchor is >= hi / <= lo.

        For fields only ever used through ramps inside [lo, hi]: the interpolation stays within the
        anchors' range, so the constant gives exactly the same ramps.
        """
        if field.min() >= hi:
            return F32(hi)
        if field.max() <= lo:
            return F32(lo)
        return self.interp(field)


@dataclass(frozen=True, eq=False)
class SlideScene:
    """A synthetic H&E lymph-node slide, renderable at any region and downsample (see the module docstring)."""

    size_xy: tuple[int, int]
    seed: int
    mpp: float
    sections: tuple[TissueSection, ...]
    tumors: tuple[TumorRegion, ...]
    stain: StainParams

    @property
    def is_tumor(self) -> bool:
        return bool(self.tumors)

    @property
    def tumor_polygons(self) -> list[np.ndarray]:
        """Ground-truth polygons ((n, 2) float64, level-0 x, y), one per tumour region, in ``tumors`` order."""
        return [t.polygon_xy.copy() for t in self.tumors]

    @property
    def glass_rgb_u8(self) -> np.ndarray:
        """The background (glass) colour, exactly what renders of empty regions contain."""
        return np.asarray(self.stain.glass_rgb, np.float64).round().astype(np.uint8)

    def blur_margin(self, downsample: float) -> int:
        """Output pixels a render needs around a region for the focus blur."""
        sigma = self.stain.blur_px / downsample
        return 0 if sigma < 0.3 else int(math.ceil(3.5 * sigma)) + 1

    def has_tissue(self, region_xy_level0: tuple[float, float], size_xy_level0: tuple[float, float], downsample: float = 1.0) -> bool:
        """Whether tissue can show in a level-0 rectangle rendered at ``downsample`` (conservative).

        When False, a render of the rectangle is exactly the glass colour.
        """
        x0, y0 = region_xy_level0
        x1, y1 = x0 + size_xy_level0[0], y0 + size_xy_level0[1]
        m = (self.blur_margin(downsample) + 1) * downsample + max(_TISSUE_EDGE_UM / self.mpp, downsample)
        return any(s.shape.may_touch(x0, y0, x1, y1, m) for s in self.sections)

    def render(self, region_xy_level0: tuple[float, float], size_xy: tuple[int, int], downsample: float = 1.0) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``size_xy`` output pixels from level-0 origin ``region_xy_level0`` at ``downsample``.

        Output pixel (i, j) samples level-0 point (x0 + (j + 0.5) d, y0 + (i + 0.5) d). Regions
        outside the slide render too (glass, or tissue continuing past the edge).
        """
        x0, y0 = float(region_xy_level0[0]), float(region_xy_level0[1])
        w, h = int(size_xy[0]), int(size_xy[1])
        d = float(downsample)
        if w <= 0 or h <= 0 or not d > 0:
            raise ValueError(f"invalid render request: size {size_xy}, downsample {downsample}")
        if not self.has_tissue((x0, y0), (w * d, h * d), d):
            return np.broadcast_to(self.glass_rgb_u8, (h, w, 3)).copy()
        m = self.blur_margin(d)
        X = x0 + (np.arange(-m, w + m, dtype=np.float64) + 0.5) * d
        Y = y0 + (np.arange(-m, h + m, dtype=np.float64) + 0.5) * d
        H, E = self._concentrations(X, Y, d)
        if m:
            sigma = self.stain.blur_px / d
            H = ndimage.gaussian_filter(H, sigma, truncate=3.5, mode="nearest")[m:-m, m:-m]
            E = ndimage.gaussian_filter(E, sigma, truncate=3.5, mode="nearest")[m:-m, m:-m]
        return self._to_rgb(H, E)

    def _to_rgb(self, H: np.ndarray, E: np.ndarray) -> np.ndarray:
        st = self.stain
        out = np.empty((*H.shape, 3), np.uint8)
        for ch in range(3):
            od = H * F32(st.h_vector[ch] * st.h_scale)
            od += E * F32(st.e_vector[ch] * st.e_scale)
            np.negative(od, out=od)
            np.exp(od, out=od)
            od *= F32(st.glass_rgb[ch])
            od += F32(0.5)
            out[..., ch] = od  # in [0.5, 255.5): truncation rounds
        return out

    # -- the anatomy -------------------------------------------------------------------------------

    def _concentrations(self, X: np.ndarray, Y: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
        """Hematoxylin and eosin concentration maps (float32, (len(Y), len(X)))."""
        mpp = self.mpp
        shape = (Y.size, X.size)
        x0, x1, y0, y1 = X[0], X[-1], Y[0], Y[-1]
        one = F32(1.0)
        edge = max(_TISSUE_EDGE_UM / mpp, d)
        H = np.zeros(shape, F32)
        E = np.zeros(shape, F32)
        grid = _AnchorGrid(X, Y, _ANCHOR_PX * d)
        sections = [s for s in self.sections if s.shape.may_touch(x0, y0, x1, y1, edge + grid.spacing)]
        if not sections:
            return H, E
        key = self.seed
        t_edge = max(3.0 / mpp, d)
        near = [t for t in self.tumors if t.shape.may_touch(x0, y0, x1, y1, t_edge + 20 / mpp + grid.spacing)]
        nest_keys = (subkey(key, "nests"), subkey(key, "nests2"))
        # smooth fields, computed at the anchors and interpolated: outlines (signed distances), follicles,
        # sinuses, nests, stain unevenness. Fields that are constant as far as their ramps see stay scalars.
        sinus_depth, sinus_width = 300.0 / mpp, 150.0 / mpp
        tissue = node = node_depth = capsule = gc = None
        for s in sections:
            a_out, a_node = s.shape.depth(grid.ax, grid.ay, s.node_lut)
            d_out = grid.banded(a_out, -edge / 2, edge / 2)
            d_node = grid.banded(a_node, -edge / 2, max(s.capsule_px + edge / 2, sinus_depth + sinus_width / 2))
            tw, nw = ramp(d_out, edge), ramp(d_node, edge)
            cw = nw * (one - ramp(d_node - F32(s.capsule_px), edge))
            fol = None
            for fx, fy, fr in s.follicles_xyr:
                r = fr + edge + grid.spacing
                if fx + r < x0 or fx - r > x1 or fy + r < y0 or fy - r > y1:
                    continue
                dist = F32(fr) - np.hypot((grid.ax - fx).astype(F32)[None, :], (grid.ay - fy).astype(F32)[:, None])
                fol = dist if fol is None else np.maximum(fol, dist)
            gw = F32(0.0) if fol is None else ramp(grid.banded(fol, -edge / 2, edge / 2), edge)
            if tissue is None:
                tissue, node, node_depth, capsule, gc = tw, nw, d_node, cw, gw
            else:  # sections never overlap: the max is the union
                tissue, node, node_depth = np.maximum(tissue, tw), np.maximum(node, nw), np.maximum(node_depth, d_node)
                capsule, gc = np.maximum(capsule, cw), np.maximum(gc, gw)
        if not np.any(tissue):
            return H, E
        tumor: np.ndarray | np.floating = F32(0.0)
        nest: np.ndarray | np.floating = F32(1.0)
        if any(t.major_axis_um >= NEST_MIN_UM for t in near):
            n = value_noise(grid.ax, grid.ay, NEST_LATTICE_UM[0] / mpp, nest_keys[0])
            n += F32(NEST_LATTICE_WEIGHT) * value_noise(grid.ax, grid.ay, NEST_LATTICE_UM[1] / mpp, nest_keys[1])
            nest_field = ramp(grid.interp(n) + F32(NEST_OFFSET), 0.15)
        for t in near:
            if t.shape.max_extent_px > 16 * grid.spacing:
                dt = grid.banded(t.shape.depth(grid.ax, grid.ay)[0], -t_edge / 2, t_edge / 2)
            else:  # small: exact per pixel
                (dt,) = t.shape.depth(X, Y)
            tw = ramp(dt, t_edge)
            if t.major_axis_um >= NEST_MIN_UM:  # nests separated by stroma; solid clusters in small deposits
                nest = np.where(tw > tumor, nest_field, nest)
            tumor = np.maximum(tumor, tw)

        def in_tumor(xc: np.ndarray, yc: np.ndarray, nests: bool) -> np.ndarray:
            """Which nucleus centres lie in a tumour (and, with ``nests``, in one of its cell nests)."""
            inside = np.zeros(xc.shape, bool)
            for t in near:
                it = t.shape.depth_at(xc, yc)[0] > 0
                if nests and t.major_axis_um >= NEST_MIN_UM and it.any():
                    n = value_noise_at(xc, yc, NEST_LATTICE_UM[0] / mpp, nest_keys[0])
                    n += NEST_LATTICE_WEIGHT * value_noise_at(xc, yc, NEST_LATTICE_UM[1] / mpp, nest_keys[1])
                    it &= n + NEST_OFFSET > 0
                inside |= it
            return inside

        inner = node - capsule
        gc = gc * inner
        sinus = F32(0.0)
        deep = ramp(node_depth - F32(sinus_depth), sinus_width)
        if np.any(deep > 0):  # medullary sinuses, away from the capsule
            sf = value_noise(grid.ax, grid.ay, 140.0 / mpp, subkey(key, "sinus"))
            sf += F32(0.5) * value_noise(grid.ax, grid.ay, 50.0 / mpp, subkey(key, "sinus2"))
            sinus = ramp(grid.banded(sf, 0.25, 0.35) - F32(0.3), 0.1) * deep * (inner - gc)
        normal = one - tumor
        lymph_region = inner - gc - sinus
        weights = {
            "lymph": lymph_region * normal,
            "gc": gc * normal,
            "sinus": sinus * normal,
            "fibrous": capsule * normal + tumor * (one - nest),
            "fat": (tissue - node) * normal,
            "tumor": tumor * nest,
        }
        active = {k: bool(np.max(w) > 1e-4) for k, w in weights.items()}
        cells = any(active[k] for k in ("lymph", "gc", "sinus", "fibrous", "tumor"))
        fine = fine_texture(X, Y, d, mpp, subkey(key, "fine")) if cells else None
        mottle_fade = fade(6.0 / mpp, d)
        mottle = value_noise(X, Y, 6.0 / mpp, subkey(key, "mottle")) * F32(mottle_fade) if cells and mottle_fade > 0 else F32(0.0)

        if active["lymph"]:
            # whole lymphocytes up to the tumour edge: selected by centre, not faded per pixel
            keep = (lambda xc, yc: ~in_tumor(xc, yc, nests=False)) if near else None
            H += lymph_region * nuclei(LYMPHOCYTES, X, Y, d, subkey(key, "lym"), mpp, fine, keep=keep, mean_weight=normal)
            E += weights["lymph"] * (F32(0.32) + F32(0.12) * mottle)
        if active["gc"]:
            w = weights["gc"]
            hn = np.maximum(
                nuclei(CENTROBLASTS, X, Y, d, subkey(key, "cb"), mpp, fine),
                nuclei(SPARSE_LYMPHOCYTES, X, Y, d, subkey(key, "gcl"), mpp, fine),
            )
            H += w * hn
            E += w * (F32(0.34) + F32(0.15) * mottle)
        if active["sinus"]:
            w = weights["sinus"]
            contour = contour_field(X, Y, d, mpp, subkey(key, "contour"))
            hn = np.maximum(
                nuclei(HISTIOCYTES, X, Y, d, subkey(key, "his"), mpp, fine, contour),
                nuclei(SPARSE_LYMPHOCYTES, X, Y, d, subkey(key, "sly"), mpp, fine),
            )
            H += w * hn
            E += w * (F32(0.2) + F32(0.2) * mottle)
        if active["fibrous"]:
            w = weights["fibrous"]
            H += w * nuclei(SPINDLE, X, Y, d, subkey(key, "spi"), mpp, fine)
            fib = F32(0.8) + F32(0.1) * mottle
            for lat_um, amp in ((5.0, 0.55), (2.2, 0.35)):  # collagen: ridged noise gives wavy fibres
                f = fade(lat_um / mpp, d)
                if f > 0:
                    ridge = one - np.abs(value_noise(X, Y, lat_um / mpp, subkey(key, f"fib{lat_um}"))) * F32(2.0)
                    np.clip(ridge, F32(0.0), one, out=ridge)
                    ridge **= 4
                    fib += F32(amp * f) * (ridge - F32(0.25))
            E += w * fib
        if active["fat"]:
            w = weights["fat"]
            E += w * F32(0.8) * fat_membranes(X, Y, d, subkey(key, "fat"), mpp)
        if active["tumor"]:
            w = weights["tumor"]
            contour = contour_field(X, Y, d, mpp, subkey(key, "contour"))
            hn = nuclei(
                TUMOR_CELLS,
                X,
                Y,
                d,
                subkey(key, "tum"),
                mpp,
                fine,
                contour,
                keep=lambda xc, yc: in_tumor(xc, yc, nests=True),
                mean_weight=w,
            )
            np.maximum(H, hn, out=H)  # whole nuclei, selected by centre
            cyto = F32(0.3) + F32(0.15) * mottle
            E += w * cyto
        # regional stain unevenness (section thickness, staining)
        H *= one + F32(0.4) * grid.interp(value_noise(grid.ax, grid.ay, 400.0 / mpp, subkey(key, "hvar")))
        E *= one + F32(0.4) * grid.interp(value_noise(grid.ax, grid.ay, 300.0 / mpp, subkey(key, "evar")))
        return H, E


# ----------------------------------------------------------------------------------------------
# Scene generation
# ----------------------------------------------------------------------------------------------


def _random_stain(rng: np.random.Generator) -> StainParams:
    h = np.array([0.56, 0.72, 0.41]) + rng.normal(0, 0.04, 3)
    e = np.array([0.20, 0.80, 0.56]) + rng.normal(0, 0.05, 3)
    h, e = np.clip(h, 0.05, None), np.clip(e, 0.05, None)
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    base = rng.uniform(236, 246)
    glass = np.round(np.clip(base + rng.normal(0, 2.0, 3), 228, 252))  # integers: glass renders exactly
    return StainParams(
        h_vector=tuple(float(v) for v in h),
        e_vector=tuple(float(v) for v in e),
        h_scale=float(rng.uniform(0.65, 1.35)),
        e_scale=float(rng.uniform(0.65, 1.35)),
        glass_rgb=tuple(float(v) for v in glass),
        blur_px=float(rng.uniform(0.6, 1.4)),
    )


def _local_to_xy(shape: StarShape, r_local: float, theta: float) -> tuple[float, float]:
    u, v = r_local * math.cos(theta) * shape.scale_xy[0], r_local * math.sin(theta) * shape.scale_xy[1]
    cs, sn = math.cos(shape.angle), math.sin(shape.angle)
    return shape.centre_xy[0] + u * cs - v * sn, shape.centre_xy[1] + u * sn + v * cs


def _lut_at(lut: np.ndarray, theta: float) -> float:
    return float(np.interp((theta + np.pi) * _LUT_N / (2 * np.pi), np.arange(_LUT_N + 1), lut))


def _make_section(
    rng: np.random.Generator, centre: tuple[float, float], semi_axes_px: tuple[float, float], angle: float, mpp: float, tight: bool
) -> TissueSection:
    """A lymph node of the given semi-axes (outer edge), with a variable fat rim, capsule and follicles.

    ``tight``: a rounder outline and a thin fat rim, for a node that must hold a big tumour.
    """
    outer = _harmonic_lut(rng, 1.0, rng.uniform(0.04, 0.07) if tight else rng.uniform(0.10, 0.22))
    shape = StarShape(centre, angle, semi_axes_px, outer)
    # perinodal fat: thick on some sides, absent on others (as cut)
    theta = np.linspace(-np.pi, np.pi, _LUT_N + 1)
    fat_um = rng.uniform(-150, 250) + sum(rng.uniform(80, 250) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
    fat_um = np.clip(fat_um, 0, 60 if tight else None)
    node_lut = np.maximum(outer - fat_um / mpp / min(semi_axes_px), 0.25 * outer).astype(_F32)
    capsule_px = rng.uniform(15, 30) / mpp
    node_shape = StarShape(centre, angle, semi_axes_px, node_lut)
    # follicles in the cortex: 40-200 um below the capsule, 90-240 um radius, about one per 0.6 mm of perimeter
    follicles: list[tuple[float, float, float]] = []
    n_target = int(2 * math.pi * max(semi_axes_px) * mpp / 600)
    for _ in range(8 * n_target):
        if len(follicles) >= n_target:
            break
        th = rng.uniform(-np.pi, np.pi)
        fr = rng.uniform(90, 240) / mpp
        depth_px = capsule_px + fr + rng.uniform(40, 200) / mpp
        r_local = _lut_at(node_lut, th) - depth_px / min(semi_axes_px)
        if r_local <= 0.2:
            continue
        fx, fy = _local_to_xy(node_shape, r_local, th)
        if any(math.hypot(fx - gx, fy - gy) < fr + gr + 30 / mpp for gx, gy, gr in follicles):
            continue
        if node_shape.depth_at(np.array([fx]), np.array([fy]))[0][0] < fr + capsule_px:
            continue
        follicles.append((fx, fy, fr))
    return TissueSection(shape, node_lut, capsule_px, np.array(follicles, np.float64).reshape(-1, 3))


def _place_sections(
    rng: np.random.Generator,
    W: int,
    H: int,
    mpp: float,
    tissue_fraction: float,
    first_semi_axes: tuple[float, float] | None,
    min_first_semi_axes: tuple[float, float] | None = None,
) -> list[TissueSection]:
    """1-3 sections covering about ``tissue_fraction`` of the slide.

    The first has at least ``first_semi_axes`` where the slide allows, and never less than
    ``min_first_semi_axes`` (ValueError when that does not fit).
    """
    n = int(rng.integers(1, 4))
    shares = np.sort(rng.dirichlet(np.full(n, 3.0)))[::-1]
    landscape = W >= H
    margin = 0.03 * min(W, H)
    sections: list[TissueSection] = []
    placed_discs: list[tuple[float, float, float]] = []
    for i, share in enumerate(shares):
        area = tissue_fraction * W * H * share
        aspect = rng.uniform(1.15, 1.6)
        a = math.sqrt(area * aspect / math.pi)
        b = a / aspect
        tight = i == 0 and first_semi_axes is not None and (first_semi_axes[0] > 0.8 * a or first_semi_axes[1] > 0.8 * b)
        grow = 1.1 if tight else 1.25  # harmonics reach out this far
        if i == 0 and first_semi_axes is not None:  # big enough for the largest tumour
            a, b = max(a, first_semi_axes[0]), max(b, first_semi_axes[1])
            if tight:  # rounder where the slide allows, leaving room for the other tumours
                b = max(b, min(a / 1.25, 0.97 * (min(W, H) / 2 - margin) / grow))
        # major axis along the slide's long side, +-20 degrees (0 for a tight fit)
        angle = (0.0 if landscape else math.pi / 2) + (0.0 if tight else rng.uniform(-0.35, 0.35))
        half_long, half_short = grow * a, grow * b
        ext_x, ext_y = (half_long, half_short) if landscape else (half_short, half_long)
        if tight and (ext_x > W / 2 - margin or ext_y > H / 2 - margin):
            # shrink to the slide, but never below what the tumour needs
            lim_x, lim_y = (W / 2 - margin) / grow, (H / 2 - margin) / grow
            lim_a, lim_b = (lim_x, lim_y) if landscape else (lim_y, lim_x)
            need_a, need_b = min_first_semi_axes or first_semi_axes
            if need_a > lim_a or need_b > lim_b:
                raise ValueError(
                    f"a {2 * need_a * mpp:.0f} x {2 * need_b * mpp:.0f} um lymph node for the largest tumour does not fit "
                    f"a {W * mpp:.0f} x {H * mpp:.0f} um slide; use a larger slide or smaller tumour_sizes_um"
                )
            a, b = min(a, lim_a), min(b, lim_b)
            half_long, half_short = grow * a, grow * b
            ext_x, ext_y = (half_long, half_short) if landscape else (half_short, half_long)
        radius = half_long
        for _ in range(200):
            cx = rng.uniform(min(ext_x + margin, W / 2), max(W - ext_x - margin, W / 2))
            cy = rng.uniform(min(ext_y + margin, H / 2), max(H - ext_y - margin, H / 2))
            if all(math.hypot(cx - px, cy - py) > radius + pr + margin for px, py, pr in placed_discs):
                break
        else:
            if i > 0:
                logger.debug("section %d of %d did not fit; dropped", i + 1, n)
                continue
            cx, cy = W / 2, H / 2
        placed_discs.append((cx, cy, radius))
        sections.append(_make_section(rng, (cx, cy), (a, b), angle, mpp, tight))
    return sections


@dataclass(frozen=True, eq=False)
class _TumorTemplate:
    major_um: float
    semi_axes_px: tuple[float, float]
    lut: np.ndarray


def _tumor_template(rng: np.random.Generator, major_um: float, mpp: float) -> _TumorTemplate:
    """Outline of a tumour whose longest chord (max Feret diameter) is exactly ``major_um``."""
    ratio = rng.uniform(0.5, 0.7) if major_um >= 1000 else rng.uniform(0.55, 0.9)
    amplitude = 0.12 if major_um < MICRO_MIN_UM else rng.uniform(0.12, 0.3)
    lut = _harmonic_lut(rng, 1.0, amplitude, kmax=9)
    lut = (lut / lut.max()).astype(_F32)
    unit = StarShape((0.0, 0.0), 0.0, (1000.0, 1000.0 * ratio), lut).polygon(0.5)
    diff = unit[:, None, :] - unit[None, :, :]
    feret = float(np.sqrt((diff**2).sum(-1)).max()) / 1000.0
    s = major_um / mpp / feret
    return _TumorTemplate(float(major_um), (s, s * ratio), lut)


def _separated(a: StarShape, pa: np.ndarray, b: StarShape, pb: np.ndarray, gap_px: float) -> bool:
    """Whether two outlines are at least ``gap_px`` apart and neither contains the other."""
    if math.hypot(a.centre_xy[0] - b.centre_xy[0], a.centre_xy[1] - b.centre_xy[1]) > a.max_extent_px + b.max_extent_px + gap_px:
        return True
    if b.depth_at(np.array([a.centre_xy[0]]), np.array([a.centre_xy[1]]))[0][0] > 0:
        return False
    if a.depth_at(np.array([b.centre_xy[0]]), np.array([b.centre_xy[1]]))[0][0] > 0:
        return False
    d2 = ((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)
    return bool(d2.min() >= gap_px * gap_px)


def _place_tumors(
    rng: np.random.Generator, sections: list[TissueSection], templates: list[_TumorTemplate], mpp: float
) -> list[TumorRegion]:
    """Tumours inside the nodes (>= 40 um from the node edge), >= 180 um apart so that regions grown by 75 um never merge.

    Placed largest first; the largest in the first node, roughly along its major axis. The whole set
    is re-drawn when one cannot be placed.
    """
    order = sorted(range(len(templates)), key=lambda k: -templates[k].major_um)
    gap_px = _TUMOR_GAP_UM / mpp
    margin_px = 40 / mpp
    for _trial in range(12):
        placed: dict[int, tuple[StarShape, np.ndarray]] = {}  # shape, coarse outline
        for rank, k in enumerate(order):
            tpl = templates[k]
            r_in = float(tpl.lut.min()) * min(tpl.semi_axes_px)  # the tumour contains this disc about its centre
            for _attempt in range(100):
                if rank == 0:
                    s = sections[0]
                    a_node, b_node = s.shape.scale_xy
                    free_a = max(a_node * 0.9 - tpl.semi_axes_px[0] - margin_px, 0.0)
                    free_b = max(b_node * 0.9 - tpl.semi_axes_px[1] - margin_px, 0.0)
                    u, v = rng.uniform(-1, 1) * free_a, rng.uniform(-0.5, 0.5) * free_b
                    cs, sn = math.cos(s.shape.angle), math.sin(s.shape.angle)
                    centre = (s.shape.centre_xy[0] + u * cs - v * sn, s.shape.centre_xy[1] + u * sn + v * cs)
                    angle = s.shape.angle + rng.uniform(-0.15, 0.15)
                else:
                    s = sections[int(rng.integers(len(sections)))]
                    th = rng.uniform(-np.pi, np.pi)
                    centre = _local_to_xy(s.shape, _lut_at(s.node_lut, th) * math.sqrt(rng.uniform(0, 1)) * 0.95, th)
                    angle = rng.uniform(0, np.pi)
                cx, cy = np.array([centre[0]]), np.array([centre[1]])
                # cheap rejections first: the centre's depth in the node, its distance to the others
                if s.shape.depth_at(cx, cy, s.node_lut)[1][0] < r_in + margin_px:
                    continue
                if any(
                    o.depth_at(cx, cy)[0][0] > -(r_in + gap_px)
                    or np.hypot(op[:, 0] - centre[0], op[:, 1] - centre[1]).min() < r_in + gap_px
                    for o, op in placed.values()
                ):
                    continue
                shape = StarShape(centre, angle, tpl.semi_axes_px, tpl.lut)
                outline = shape.polygon_n(96)
                if s.shape.depth_at(outline[:, 0], outline[:, 1], s.node_lut)[1].min() < margin_px:
                    continue
                if not all(_separated(shape, outline, o, op, gap_px) for o, op in placed.values()):
                    continue
                placed[k] = (shape, outline)
                break
            else:
                break
        if len(placed) == len(templates):
            tumors = []
            for k, tpl in enumerate(templates):
                shape = placed[k][0]
                poly = shape.polygon(float(np.clip(tpl.major_um / mpp / 400, 0.1, 0.5)))
                tumors.append(TumorRegion(shape, tpl.major_um, tumor_category(tpl.major_um), poly))
            return tumors
    raise ValueError(f"could not place tumours of {[round(t.major_um) for t in templates]} um inside the lymph node(s)")


def make_slide_scene(
    size_xy_level0: tuple[int, int],
    seed: int,
    tumor_sizes_um: Sequence[float] = DEFAULT_TUMOR_SIZES_UM,
    mpp: float = CAMELYON_MPP,
    tissue_fraction: float = 0.35,
) -> SlideScene:
    """Lay out a synthetic lymph-node slide deterministically from ``seed``.

    Args:
        size_xy_level0: level-0 (width, height) in pixels.
        seed: everything (layout, stain, texture) follows from it.
        tumor_sizes_um: major axis (max Feret diameter) of each metastasis in micrometres; empty
            for a normal slide. Tumours keep their order in :attr:`SlideScene.tumors`.
        mpp: level-0 micrometres per pixel.
        tissue_fraction: approximate fraction of the slide covered by tissue (the first section
            grows past it when the largest tumour needs a bigger node).

    Raises:
        ValueError: when the tumours cannot be placed inside the nodes of a slide this size.
    """
    W, H = int(size_xy_level0[0]), int(size_xy_level0[1])
    if W < 256 or H < 256:
        raise ValueError(f"slide too small: {W} x {H}")
    if not 0 < tissue_fraction <= 0.8:
        raise ValueError(f"tissue_fraction {tissue_fraction} not in (0, 0.8]")
    sizes = [float(s) for s in tumor_sizes_um]
    if any(not s > 0 for s in sizes):
        raise ValueError(f"tumour sizes must be positive: {sizes}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 0x5EED])
    stain = _random_stain(rng)
    templates = [_tumor_template(rng, s, mpp) for s in sizes]
    first: tuple[float, float] | None = None
    need: tuple[float, float] | None = None
    tumors: list[TumorRegion] = []
    if templates:
        big = max(templates, key=lambda t: t.major_um)
        pad = 120 / mpp  # node margin + capsule
        need = ((big.semi_axes_px[0] + pad) / 0.9, (big.semi_axes_px[1] + pad) / 0.9)
        # room for the others beside it along the node's major axis, where the slide allows
        others = sum(2 * t.semi_axes_px[0] + _TUMOR_GAP_UM / mpp for t in templates if t is not big)
        first = (need[0] + 0.5 * others, need[1])
    for attempt in range(12):
        sections = _place_sections(rng, W, H, mpp, tissue_fraction, first, need)
        if not templates:
            break
        try:
            tumors = _place_tumors(rng, sections, templates, mpp)
            break
        except ValueError:
            if attempt == 11:
                raise
            assert first is not None
            first = (first[0] * 1.04, first[1] * 1.04)
            logger.debug("tumour placement failed (attempt %d); retrying with a larger first node", attempt + 1)
    scene = SlideScene((W, H), int(seed), float(mpp), tuple(sections), tuple(tumors), stain)
    logger.debug(
        "scene seed=%d size=%dx%d sections=%d tumours=%s", seed, W, H, len(sections), [(t.category, round(t.major_axis_um)) for t in tumors]
    )
    return scene
