"""Fields of nuclei of the synthetic slides: jittered grids of ellipses, faded to their mean below the pixel size.

Same conventions as :mod:`.wsi_texture` (level-0 pixel-centre axes ``X`` and ``Y``, downsample
``d``, hashed randomness). Nuclei are ellipses on jittered grids (one candidate per grid cell,
kept with a hashed probability); each is drawn as a small window ("stamp") about its centre,
merged with a maximum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .wsi_texture import CONTOUR_MIN, F32, H_OD, contour_field, effective_mean, fade, fine_texture, hash01, ramp


@dataclass(frozen=True)
class NucleusLayer:
    """A population of nuclei on a jittered grid (lengths in micrometres).

    ``mean_h``: what the layer fades to when its nuclei are below the pixel size: the uniform
    hematoxylin that transmits as much light as the nuclei do (measured with :func:`measure_mean`).
    """

    name: str
    cell_um: float  # grid spacing
    r_um: tuple[float, float]  # equivalent radius range
    max_aspect: float  # major / minor axis
    presence: float  # fraction of grid cells holding a nucleus
    stain: float  # hematoxylin concentration of the nucleus
    mean_h: float
    jitter: float = 0.8  # fraction of the cell the centre may move in
    vesicular: bool = False  # dark rim, pale centre, nucleolus, irregular contour

    def __post_init__(self) -> None:
        if not (0 < self.r_um[0] <= self.r_um[1] and self.max_aspect >= 1 and 0 <= self.jitter < 1 and self.cell_um > 0):
            raise ValueError(f"invalid nucleus layer {self}")


LYMPHOCYTES = NucleusLayer("lymphocytes", cell_um=7.0, r_um=(2.4, 3.4), max_aspect=1.0, presence=0.94, stain=2.0, mean_h=0.6841)
SPARSE_LYMPHOCYTES = NucleusLayer(
    "sparse_lymphocytes", cell_um=7.0, r_um=(2.4, 3.3), max_aspect=1.0, presence=0.25, stain=2.0, mean_h=0.1565
)
CENTROBLASTS = NucleusLayer("centroblasts", cell_um=10.6, r_um=(3.4, 4.6), max_aspect=1.3, presence=0.85, stain=1.3, mean_h=0.3758)
HISTIOCYTES = NucleusLayer(
    "histiocytes", cell_um=22.0, r_um=(4.0, 6.0), max_aspect=1.6, presence=0.35, stain=1.2, mean_h=0.0478, vesicular=True
)
SPINDLE = NucleusLayer("spindle", cell_um=18.0, r_um=(1.8, 2.4), max_aspect=4.0, presence=0.45, stain=1.7, mean_h=0.0211)
TUMOR_CELLS = NucleusLayer(
    "tumor", cell_um=15.0, r_um=(5.0, 6.5), max_aspect=1.3, presence=1.0, stain=1.75, mean_h=0.4944, jitter=0.9, vesicular=True
)
EPITHELIOID_HISTIOCYTES = NucleusLayer(
    "epithelioid_histiocytes",
    cell_um=15.0,
    r_um=(4.5, 6.0),
    max_aspect=1.7,
    presence=0.85,
    stain=1.25,
    mean_h=0.2733,
    jitter=0.85,
    vesicular=True,
)
"""Aggregates of large pale histiocytes (sinus histiocytosis, granulomas): the tumour mimic of the hard slides (:mod:`.wsi_hard`)."""
NUCLEUS_LAYERS = (LYMPHOCYTES, SPARSE_LYMPHOCYTES, CENTROBLASTS, HISTIOCYTES, SPINDLE, TUMOR_CELLS, EPITHELIOID_HISTIOCYTES)

# channels of one cell's hash
_CH_OX, _CH_OY, _CH_R, _CH_PRESENT, _CH_ASPECT, _CH_ANGLE, _CH_DARK, _CH_NRHO, _CH_NPHI, _CH_NR = range(10)


KeepFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""keep(x, y) -> bool array: which nuclei, by their level-0 centres, exist (e.g. only inside a tumour)."""


def _cell_table(
    layer: NucleusLayer, gx: np.ndarray, gy: np.ndarray, key: int, mpp: float, edge_px: float, keep: KeepFn | None = None
) -> dict[str, np.ndarray]:
    """Per-cell attributes for cells ``gy[:, None], gx[None, :]``, float32 (len(gy), len(gx)).

    ox, oy: centre within the cell (px); k*: the ellipse's quadratic form divided by its
    anti-aliasing scale, so that ``coverage = clip(t - q', 0, 1)``; dark: per-nucleus darkness.
    """
    c = layer.cell_um / mpp
    u = hash01(gx[None, None, :], gy[None, :, None], key + 7919 * np.arange(10, dtype=np.uint64)[:, None, None])
    margin = (1 - layer.jitter) / 2
    r = (layer.r_um[0] + (layer.r_um[1] - layer.r_um[0]) * u[_CH_R]) / mpp
    present = u[_CH_PRESENT] < layer.presence
    ox, oy = (margin + layer.jitter * u[_CH_OX]) * c, (margin + layer.jitter * u[_CH_OY]) * c
    if keep is not None:
        present &= keep(gx[None, :] * c + ox, gy[:, None] * c + oy)
    # coverage ramp in q = (distance / radius)^2: 1 - q ~ 2 (1 - distance / radius) at the edge
    s2 = r / (2 * edge_px)
    t = np.where(present, s2 + 0.5, -1.0)  # absent: never covered
    table = {"ox": ox, "oy": oy, "t": t, "dark": 0.82 + 0.36 * u[_CH_DARK]}
    if layer.max_aspect > 1:
        aspect = 1 + (layer.max_aspect - 1) * u[_CH_ASPECT] ** 1.5
        angle = np.pi * u[_CH_ANGLE]
        ia2 = 1 / (r * np.sqrt(aspect)) ** 2
        ib2 = aspect / r**2
        cs, sn = np.cos(angle), np.sin(angle)
        qa, qb, qc = cs * cs * ia2 + sn * sn * ib2, 2 * cs * sn * (ia2 - ib2), sn * sn * ia2 + cs * cs * ib2
    else:
        qa, qb, qc = 1 / r**2, np.zeros_like(r), 1 / r**2
    if layer.vesicular:  # unscaled form (the rim needs q itself) and the ramp scale; nucleolus offset and radius
        table.update(qa=qa, qb=qb, qc=qc, s2=s2)
        rho = 0.4 * np.sqrt(u[_CH_NRHO])
        phi = 2 * np.pi * u[_CH_NPHI]
        table["nx"] = rho * r * np.cos(phi)  # nucleolus, relative to the nucleus centre
        table["ny"] = rho * r * np.sin(phi)
        nr = (0.6 + 0.5 * u[_CH_NR]) / mpp
        table["nk"] = 1 / (2 * edge_px * nr)  # nucleolus coverage = clip(nt - d2 * nk)
        table["nt"] = nr / (2 * edge_px) + 0.5
    elif layer.max_aspect > 1:
        table.update(ka=qa * s2, kb=qb * s2, kc=qc * s2)
    else:
        table["k"] = s2 / r**2
    return {k: np.ascontiguousarray(np.broadcast_to(v, (gy.size, gx.size)), dtype=F32) for k, v in table.items()}


def nuclei_detail(
    layer: NucleusLayer,
    X: np.ndarray,
    Y: np.ndarray,
    d: float,
    key: int,
    mpp: float,
    fine: np.ndarray | None = None,
    contour: np.ndarray | None = None,
    keep: KeepFn | None = None,
) -> np.ndarray:
    """Hematoxylin of a layer's nuclei at full detail.

    Each nucleus is evaluated on a small window about its centre (a "stamp") and merged into the
    output with a maximum. Stamps are applied in phases by (cell x mod m, cell y mod m), m chosen so
    that windows of one phase cannot overlap: the vectorised scatter is exact and the result is
    the same whatever the region. ``fine`` (granular chromatin) and ``contour`` (irregular outlines of
    vesicular nuclei) are optional noise fields of the render's shape.
    """
    c = layer.cell_um / mpp
    edge = max(1.2, d)  # anti-aliasing width in level-0 px
    bulge = 1 / math.sqrt(CONTOUR_MIN) if layer.vesicular and contour is not None else 1.0
    reach = bulge * layer.r_um[1] * math.sqrt(layer.max_aspect) / mpp + edge / 2 + 1  # level-0 px from a centre
    gx = np.arange(math.floor((X[0] - reach) / c), math.floor((X[-1] + reach) / c) + 1)
    gy = np.arange(math.floor((Y[0] - reach) / c), math.floor((Y[-1] + reach) / c) + 1)
    tab = {k: v.ravel() for k, v in _cell_table(layer, gx, gy, key, mpp, edge, keep).items()}
    cx = np.broadcast_to(gx[None, :] * c, (gy.size, gx.size)).ravel() + tab["ox"].astype(np.float64)
    cy = np.broadcast_to(gy[:, None] * c, (gy.size, gx.size)).ravel() + tab["oy"].astype(np.float64)
    h, w = Y.size, X.size
    win = int(2 * reach / d) + 2  # window edge in output px
    # first window pixel: the first pixel centre at or after centre - reach
    j0 = np.ceil((cx - reach - X[0]) / d).astype(np.int64)
    i0 = np.ceil((cy - reach - Y[0]) / d).astype(np.int64)
    live = (tab["t"] > 0) & (j0 + win > 0) & (j0 < w) & (i0 + win > 0) & (i0 < h)
    # same-phase centres are >= (m - jitter) cells apart along some axis; windows span < 2 reach + d
    m = max(2, math.ceil((2 * reach + d) / c + layer.jitter + 1e-9))
    phase = (np.broadcast_to(gx[None, :] % m, (gy.size, gx.size)) * m + np.broadcast_to(gy[:, None] % m, (gy.size, gx.size))).ravel()
    pad = win
    wp = w + 2 * pad
    out = np.zeros((h + 2 * pad) * wp, F32)
    if contour is not None:
        cpad = np.ones((h + 2 * pad, wp), F32)
        cpad[pad : pad + h, pad : pad + w] = contour
        cpad = cpad.ravel()
    ar = np.arange(win)
    one, zero = F32(1.0), F32(0.0)
    for ph in range(m * m):
        sel = np.flatnonzero(live & (phase == ph))
        if sel.size == 0:
            continue
        jj = j0[sel][:, None] + ar[None, :]  # (n, win) output columns
        ii = i0[sel][:, None] + ar[None, :]  # (n, win) output rows
        dx = (X[0] + jj * d - cx[sel][:, None]).astype(F32)[:, None, :]  # (n, 1, win)
        dy = (Y[0] + ii * d - cy[sel][:, None]).astype(F32)[:, :, None]  # (n, win, 1)

        def p(name: str, sel: np.ndarray = sel) -> np.ndarray:
            return tab[name][sel][:, None, None]

        flat = ((ii + pad)[:, :, None] * wp + (jj + pad)[:, None, :]).ravel()
        if layer.vesicular:
            q = p("qa") * dx * dx + p("qb") * dx * dy + p("qc") * dy * dy
            if contour is not None:
                q *= cpad[flat].reshape(q.shape)
            cover = p("t") - q * p("s2")
            np.clip(cover, zero, one, out=cover)
            # chromatin along the membrane, clear centre, one nucleolus
            ink = ramp(q - F32(0.55), 0.35)
            ink *= F32(0.75)
            ink += F32(0.55)
            ndx = dx - p("nx")
            ndy = dy - p("ny")
            nuc = p("nt") - (ndx * ndx + ndy * ndy) * p("nk")
            np.clip(nuc, zero, one, out=nuc)
            ink += F32(0.8) * nuc
            cover *= ink
        elif layer.max_aspect > 1:
            cover = p("t") - (p("ka") * dx * dx + p("kb") * dx * dy + p("kc") * dy * dy)
            np.clip(cover, zero, one, out=cover)
        else:
            cover = p("t") - (dx * dx + dy * dy) * p("k")
            np.clip(cover, zero, one, out=cover)
        cover *= p("dark")
        out[flat] = np.maximum(out[flat], cover.ravel())
    hmap = out.reshape(h + 2 * pad, wp)[pad : pad + h, pad : pad + w].copy()
    if fine is not None:
        hmap *= one + (F32(0.8) if layer.vesicular else F32(0.35)) * fine  # granular chromatin
    hmap *= F32(layer.stain)
    return hmap


def nuclei(
    layer: NucleusLayer,
    X: np.ndarray,
    Y: np.ndarray,
    d: float,
    key: int,
    mpp: float,
    fine: np.ndarray | None = None,
    contour: np.ndarray | None = None,
    keep: KeepFn | None = None,
    mean_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Hematoxylin of a nucleus layer at downsample ``d``: detail blended into its mean as nuclei get sub-pixel.

    ``keep`` selects nuclei by centre at full detail; ``mean_weight`` (a pixel field) stands for it
    in the mean.
    """
    alpha = fade(layer.r_um[0] / mpp, d, full=2.0, gone=0.6)
    mean = F32(layer.mean_h) if mean_weight is None else F32(layer.mean_h) * mean_weight
    if alpha <= 0:
        return np.broadcast_to(mean, (Y.size, X.size)).astype(F32)
    h = nuclei_detail(layer, X, Y, d, key, mpp, fine, contour, keep=keep)
    if alpha < 1:
        h *= F32(alpha)
        h += F32(1 - alpha) * mean
    return h


def measure_mean(layer: NucleusLayer, mpp: float = 0.243, cells: int = 48) -> float:
    """Transmission-equivalent mean hematoxylin of a layer at full detail (to set ``mean_h``)."""
    n = int(round(cells * layer.cell_um / mpp))
    X = np.arange(n) + 0.5 + 1.0e5
    Y = np.arange(n) + 0.5 + 2.0e5
    fine = fine_texture(X, Y, 1.0, mpp, 7)
    contour = contour_field(X, Y, 1.0, mpp, 8) if layer.vesicular else None
    return effective_mean(nuclei_detail(layer, X, Y, 1.0, 99991, mpp, fine, contour), H_OD)
