"""Hematoxylin and eosin concentrations of the synthetic slides' anatomy: what :meth:`.SlideScene.render` stains.

For level-0 pixel centres ``X`` (columns) and ``Y`` (rows) at downsample ``d``: smooth fields (the
sections' outlines, node, capsule and germinal centres, medullary sinuses, tumour outlines and
nests, regional stain unevenness) are computed on anchors every ``ANCHOR_PX`` output pixels and
interpolated (:class:`AnchorGrid`); fields that are constant as far as their ramps see stay scalars.
They weight the tissue classes, each of which adds its nuclei (:mod:`.wsi_nuclei`) and its
eosin (fibres, fat membranes, cytoplasm: :mod:`.wsi_texture`) where its weight is not zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .wsi_geometry import StarShape
from .wsi_nuclei import (
    CENTROBLASTS,
    EPITHELIOID_HISTIOCYTES,
    HISTIOCYTES,
    LYMPHOCYTES,
    SPARSE_LYMPHOCYTES,
    SPINDLE,
    TUMOR_CELLS,
    KeepFn,
    NucleusLayer,
    nuclei,
)
from .wsi_placement import TissueSection, TumorRegion
from .wsi_texture import F32, contour_field, fade, fat_membranes, fine_texture, ramp, subkey, value_noise, value_noise_at

NEST_MIN_UM = 250.0  # tumours at least this big grow in nests separated by stroma
NEST_LATTICE_UM = (45.0, 120.0)
NEST_LATTICE_WEIGHT = 0.6
NEST_OFFSET = 0.45  # higher: more tumour cells, less stroma

TISSUE_EDGE_UM = 2.5  # anti-aliasing width of tissue outlines
ANCHOR_PX = 8  # smooth fields are computed every this many output pixels and interpolated
SINUS_DEPTH_UM = 300.0  # medullary sinuses start this deep in the node
SINUS_WIDTH_UM = 150.0  # over this width


class AnchorGrid:
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


def shape_weight(shape: StarShape, grid: AnchorGrid, X: np.ndarray, Y: np.ndarray, edge: float) -> np.ndarray | np.floating:
    """Weight (0..1, anti-aliased over ``edge`` px) of a blob at the pixels: from the anchors when big, exact per pixel when small."""
    if shape.max_extent_px > 16 * grid.spacing:
        depth = grid.banded(shape.depth(grid.ax, grid.ay)[0], -edge / 2, edge / 2)
    else:
        (depth,) = shape.depth(X, Y)
    return ramp(depth, edge)


@dataclass(frozen=True, eq=False)
class _Regions:
    """The sections' parts at the pixels: weights (0..1) of tissue, node, capsule and germinal centres, and the depth into the node (px)."""

    tissue: np.ndarray | np.floating
    node: np.ndarray | np.floating
    node_depth: np.ndarray | np.floating
    capsule: np.ndarray | np.floating
    gc: np.ndarray | np.floating


@dataclass(frozen=True, eq=False)
class _NearTumors:
    """The tumours that may show in a render, and the keys of their cell nests."""

    tumors: tuple[TumorRegion, ...]
    mpp: float
    nest_keys: tuple[int, int]

    def contain(self, xc: np.ndarray, yc: np.ndarray, nests: bool) -> np.ndarray:
        """Which nucleus centres lie in a tumour (and, with ``nests``, in one of its cell nests)."""
        mpp, nest_keys = self.mpp, self.nest_keys
        inside = np.zeros(xc.shape, bool)
        for t in self.tumors:
            it = t.shape.depth_at(xc, yc)[0] > 0
            if nests and t.major_axis_um >= NEST_MIN_UM and it.any():
                n = value_noise_at(xc, yc, NEST_LATTICE_UM[0] / mpp, nest_keys[0])
                n += NEST_LATTICE_WEIGHT * value_noise_at(xc, yc, NEST_LATTICE_UM[1] / mpp, nest_keys[1])
                it &= n + NEST_OFFSET > 0
            inside |= it
        return inside

    def weights(
        self, grid: AnchorGrid, X: np.ndarray, Y: np.ndarray, t_edge: float
    ) -> tuple[np.ndarray | np.floating, np.ndarray | np.floating]:
        """(tumour weight, nest weight) at the pixels: nests separated by stroma; solid clusters in small deposits."""
        mpp, nest_keys = self.mpp, self.nest_keys
        tumor: np.ndarray | np.floating = F32(0.0)
        nest: np.ndarray | np.floating = F32(1.0)
        if any(t.major_axis_um >= NEST_MIN_UM for t in self.tumors):
            n = value_noise(grid.ax, grid.ay, NEST_LATTICE_UM[0] / mpp, nest_keys[0])
            n += F32(NEST_LATTICE_WEIGHT) * value_noise(grid.ax, grid.ay, NEST_LATTICE_UM[1] / mpp, nest_keys[1])
            nest_field = ramp(grid.interp(n) + F32(NEST_OFFSET), 0.15)
        for t in self.tumors:
            tw = shape_weight(t.shape, grid, X, Y, t_edge)
            if t.major_axis_um >= NEST_MIN_UM:  # nests separated by stroma; solid clusters in small deposits
                nest = np.where(tw > tumor, nest_field, nest)
            tumor = np.maximum(tumor, tw)
        return tumor, nest


@dataclass(eq=False)
class _Canvas:
    """The concentration maps being painted, and what every tissue class draws with."""

    H: np.ndarray
    E: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    d: float
    mpp: float
    key: int
    fine: np.ndarray | None
    mottle: np.ndarray | np.floating


def concentrations(
    sections: Sequence[TissueSection],
    tumors: Sequence[TumorRegion],
    seed: int,
    mpp: float,
    X: np.ndarray,
    Y: np.ndarray,
    d: float,
    mimics: Sequence[StarShape] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin concentration maps (float32, (len(Y), len(X))).

    ``mimics``: histiocyte aggregates (inside the nodes), painted in place of the node's own cells.
    """
    shape = (Y.size, X.size)
    x0, x1, y0, y1 = X[0], X[-1], Y[0], Y[-1]
    one = F32(1.0)
    edge = max(TISSUE_EDGE_UM / mpp, d)
    H = np.zeros(shape, F32)
    E = np.zeros(shape, F32)
    grid = AnchorGrid(X, Y, ANCHOR_PX * d)
    sections = [s for s in sections if s.shape.may_touch(x0, y0, x1, y1, edge + grid.spacing)]
    if not sections:
        return H, E
    key = seed
    t_edge = max(3.0 / mpp, d)
    near = _NearTumors(
        tuple(t for t in tumors if t.shape.may_touch(x0, y0, x1, y1, t_edge + 20 / mpp + grid.spacing)),
        mpp,
        (subkey(key, "nests"), subkey(key, "nests2")),
    )
    regions = _section_regions(sections, grid, edge, mpp, (x0, x1, y0, y1))
    if not np.any(regions.tissue):
        return H, E
    tumor, nest = near.weights(grid, X, Y, t_edge)
    mimic = None
    for shape in mimics:
        if shape.may_touch(x0, y0, x1, y1, t_edge + grid.spacing):
            w = shape_weight(shape, grid, X, Y, t_edge)
            mimic = w if mimic is None else np.maximum(mimic, w)
    weights, lymph_region, normal = _tissue_weights(regions, tumor, nest, grid, mpp, key, mimic)
    _paint_tissues(H, E, X, Y, d, mpp, key, weights, lymph_region, normal, near)
    # regional stain unevenness (section thickness, staining)
    H *= one + F32(0.4) * grid.interp(value_noise(grid.ax, grid.ay, 400.0 / mpp, subkey(key, "hvar")))
    E *= one + F32(0.4) * grid.interp(value_noise(grid.ax, grid.ay, 300.0 / mpp, subkey(key, "evar")))
    return H, E


def _section_regions(
    sections: Sequence[TissueSection], grid: AnchorGrid, edge: float, mpp: float, bounds: tuple[float, float, float, float]
) -> _Regions:
    """The union of the sections' parts (sections never overlap: the max is the union)."""
    one = F32(1.0)
    sinus_depth, sinus_width = SINUS_DEPTH_UM / mpp, SINUS_WIDTH_UM / mpp
    tissue = node = node_depth = capsule = gc = None
    for s in sections:
        a_out, a_node = s.shape.depth(grid.ax, grid.ay, s.node_lut)
        d_out = grid.banded(a_out, -edge / 2, edge / 2)
        d_node = grid.banded(a_node, -edge / 2, max(s.capsule_px + edge / 2, sinus_depth + sinus_width / 2))
        tw, nw = ramp(d_out, edge), ramp(d_node, edge)
        cw = nw * (one - ramp(d_node - F32(s.capsule_px), edge))
        gw = _germinal_centres(s, grid, edge, bounds)
        if tissue is None:
            tissue, node, node_depth, capsule, gc = tw, nw, d_node, cw, gw
        else:  # sections never overlap: the max is the union
            tissue, node, node_depth = np.maximum(tissue, tw), np.maximum(node, nw), np.maximum(node_depth, d_node)
            capsule, gc = np.maximum(capsule, cw), np.maximum(gc, gw)
    return _Regions(tissue, node, node_depth, capsule, gc)


def _germinal_centres(
    s: TissueSection, grid: AnchorGrid, edge: float, bounds: tuple[float, float, float, float]
) -> np.ndarray | np.floating:
    """Weight of a section's follicles (their germinal centres) at the pixels, from the follicles near the render."""
    x0, x1, y0, y1 = bounds
    fol = None
    for fx, fy, fr in s.follicles_xyr:
        r = fr + edge + grid.spacing
        if fx + r < x0 or fx - r > x1 or fy + r < y0 or fy - r > y1:
            continue
        dist = F32(fr) - np.hypot((grid.ax - fx).astype(F32)[None, :], (grid.ay - fy).astype(F32)[:, None])
        fol = dist if fol is None else np.maximum(fol, dist)
    return F32(0.0) if fol is None else ramp(grid.banded(fol, -edge / 2, edge / 2), edge)


def _tissue_weights(
    regions: _Regions,
    tumor: np.ndarray | np.floating,
    nest: np.ndarray | np.floating,
    grid: AnchorGrid,
    mpp: float,
    key: int,
    mimic: np.ndarray | np.floating | None = None,
) -> tuple[dict[str, np.ndarray | np.floating], np.ndarray | np.floating, np.ndarray | np.floating]:
    """Weight of each tissue class at the pixels, the lymphocyte region (the node's inside less centres and sinuses), and 1 - tumour.

    ``mimic`` (histiocyte aggregates) takes the place of the node's lymphocytes, centres and sinuses.
    """
    one = F32(1.0)
    sinus_depth, sinus_width = SINUS_DEPTH_UM / mpp, SINUS_WIDTH_UM / mpp
    inner = regions.node - regions.capsule
    gc = regions.gc * inner
    sinus = F32(0.0)
    deep = ramp(regions.node_depth - F32(sinus_depth), sinus_width)
    if np.any(deep > 0):  # medullary sinuses, away from the capsule
        sf = value_noise(grid.ax, grid.ay, 140.0 / mpp, subkey(key, "sinus"))
        sf += F32(0.5) * value_noise(grid.ax, grid.ay, 50.0 / mpp, subkey(key, "sinus2"))
        sinus = ramp(grid.banded(sf, 0.25, 0.35) - F32(0.3), 0.1) * deep * (inner - gc)
    normal = one - tumor
    lymph_region = inner - gc - sinus
    extra = {}
    if mimic is not None:
        histio = mimic * inner
        gc, sinus, lymph_region = gc * (one - mimic), sinus * (one - mimic), lymph_region * (one - mimic)
        extra["histio"] = histio * normal
    weights = {
        "lymph": lymph_region * normal,
        "gc": gc * normal,
        "sinus": sinus * normal,
        "fibrous": regions.capsule * normal + tumor * (one - nest),
        "fat": (regions.tissue - regions.node) * normal,
        "tumor": tumor * nest,
        **extra,
    }
    return weights, lymph_region, normal


def _paint_tissues(
    H: np.ndarray,
    E: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    d: float,
    mpp: float,
    key: int,
    weights: dict[str, np.ndarray | np.floating],
    lymph_region: np.ndarray | np.floating,
    normal: np.ndarray | np.floating,
    near: _NearTumors,
) -> None:
    """Add each tissue class that shows (weight above 1e-4 somewhere) to ``H`` and ``E``, in place."""
    active = {k: bool(np.max(w) > 1e-4) for k, w in weights.items()}
    cells = any(active.get(k, False) for k in ("lymph", "gc", "sinus", "fibrous", "tumor", "histio"))
    fine = fine_texture(X, Y, d, mpp, subkey(key, "fine")) if cells else None
    mottle_fade = fade(6.0 / mpp, d)
    mottle = value_noise(X, Y, 6.0 / mpp, subkey(key, "mottle")) * F32(mottle_fade) if cells and mottle_fade > 0 else F32(0.0)
    c = _Canvas(H, E, X, Y, d, mpp, key, fine, mottle)
    if active["lymph"]:
        # whole lymphocytes up to the tumour edge: selected by centre, not faded per pixel
        keep = (lambda xc, yc: ~near.contain(xc, yc, nests=False)) if near.tumors else None
        _lymphocytes(c, weights["lymph"], lymph_region, normal, keep)
    if active["gc"]:
        _germinal_centre_cells(c, weights["gc"])
    if active["sinus"]:
        _sinus_cells(c, weights["sinus"])
    if active["fibrous"]:
        _fibrous_tissue(c, weights["fibrous"])
    if active["fat"]:
        c.E += weights["fat"] * F32(0.8) * fat_membranes(X, Y, d, subkey(key, "fat"), mpp)
    if active["tumor"]:
        _tumor_cells(c, weights["tumor"], near)
    if active.get("histio"):
        _histiocyte_aggregates(c, weights["histio"])


def _lymphocytes(
    c: _Canvas, w: np.ndarray | np.floating, region: np.ndarray | np.floating, normal: np.ndarray | np.floating, keep: KeepFn | None
) -> None:
    c.H += region * nuclei(LYMPHOCYTES, c.X, c.Y, c.d, subkey(c.key, "lym"), c.mpp, c.fine, keep=keep, mean_weight=normal)
    c.E += w * (F32(0.32) + F32(0.12) * c.mottle)


def _germinal_centre_cells(c: _Canvas, w: np.ndarray | np.floating) -> None:
    hn = np.maximum(
        nuclei(CENTROBLASTS, c.X, c.Y, c.d, subkey(c.key, "cb"), c.mpp, c.fine),
        nuclei(SPARSE_LYMPHOCYTES, c.X, c.Y, c.d, subkey(c.key, "gcl"), c.mpp, c.fine),
    )
    c.H += w * hn
    c.E += w * (F32(0.34) + F32(0.15) * c.mottle)


def _large_cells_among_lymphocytes(
    c: _Canvas, w: np.ndarray | np.floating, layer: NucleusLayer, keys: tuple[str, str], eosin: tuple[float, float]
) -> None:
    """Vesicular nuclei of ``layer`` with a few lymphocytes (nucleus layer keys ``keys``), and cytoplasm of ``eosin`` (base, mottle)."""
    contour = contour_field(c.X, c.Y, c.d, c.mpp, subkey(c.key, "contour"))
    hn = np.maximum(
        nuclei(layer, c.X, c.Y, c.d, subkey(c.key, keys[0]), c.mpp, c.fine, contour),
        nuclei(SPARSE_LYMPHOCYTES, c.X, c.Y, c.d, subkey(c.key, keys[1]), c.mpp, c.fine),
    )
    c.H += w * hn
    c.E += w * (F32(eosin[0]) + F32(eosin[1]) * c.mottle)


def _sinus_cells(c: _Canvas, w: np.ndarray | np.floating) -> None:
    _large_cells_among_lymphocytes(c, w, HISTIOCYTES, ("his", "sly"), (0.2, 0.2))


def _histiocyte_aggregates(c: _Canvas, w: np.ndarray | np.floating) -> None:
    """Sheets of large pale vesicular nuclei in pink cytoplasm among a few lymphocytes: what tumour looks like at a glance."""
    _large_cells_among_lymphocytes(c, w, EPITHELIOID_HISTIOCYTES, ("epi", "epl"), (0.42, 0.15))


def _fibrous_tissue(c: _Canvas, w: np.ndarray | np.floating) -> None:
    one = F32(1.0)
    c.H += w * nuclei(SPINDLE, c.X, c.Y, c.d, subkey(c.key, "spi"), c.mpp, c.fine)
    fib = F32(0.8) + F32(0.1) * c.mottle
    for lat_um, amp in ((5.0, 0.55), (2.2, 0.35)):  # collagen: ridged noise gives wavy fibres
        f = fade(lat_um / c.mpp, c.d)
        if f > 0:
            ridge = one - np.abs(value_noise(c.X, c.Y, lat_um / c.mpp, subkey(c.key, f"fib{lat_um}"))) * F32(2.0)
            np.clip(ridge, F32(0.0), one, out=ridge)
            ridge **= 4
            fib += F32(amp * f) * (ridge - F32(0.25))
    c.E += w * fib


def _tumor_cells(c: _Canvas, w: np.ndarray | np.floating, near: _NearTumors) -> None:
    contour = contour_field(c.X, c.Y, c.d, c.mpp, subkey(c.key, "contour"))
    hn = nuclei(
        TUMOR_CELLS,
        c.X,
        c.Y,
        c.d,
        subkey(c.key, "tum"),
        c.mpp,
        c.fine,
        contour,
        keep=lambda xc, yc: near.contain(xc, yc, nests=True),
        mean_weight=w,
    )
    np.maximum(c.H, hn, out=c.H)  # whole nuclei, selected by centre
    cyto = F32(0.3) + F32(0.15) * c.mottle
    c.E += w * cyto
