"""Texture primitives of the synthetic slides: coordinate hashing, value noise and fields of nuclei.

Every function takes the level-0 coordinates of pixel centres as two 1-D arrays (``X`` for the
columns, ``Y`` for the rows) and returns a float32 (len(Y), len(X)) field. A pixel's value depends
only on its own coordinates (all randomness comes from hashing absolute integer lattice or cell
coordinates), which is what makes renders independent of tiling. ``d`` is the downsample: features
smaller than a pixel fade to their mean, so low-resolution renders approximate downsampled ones.

Nuclei are ellipses on jittered grids (one candidate per grid cell, kept with a hashed
probability); each is drawn as a small window ("stamp") about its centre, merged with a maximum.
Value noise is a cubic B-spline through hashed lattice values, evaluated separably.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

F32 = np.float32

_MALLOC_TUNED: list[bool] = []


def tune_malloc() -> bool:
    """Make glibc keep freed tile-sized arrays in the heap instead of returning them to the OS.

    Rendering allocates many float32 temporaries of ~300 KB; above glibc's (dynamic) mmap
    threshold each one is a fresh mmap, and its page faults cost about as much system time as the
    rendering itself. Raising the mmap and trim thresholds (32 MB / 256 MB) removes that; memory
    stays bounded because the temporaries are reused. Process-wide and idempotent; a no-op (False)
    where glibc's ``mallopt`` is unavailable.
    """
    if _MALLOC_TUNED:
        return _MALLOC_TUNED[0]
    ok = False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):
        ok = False
    _MALLOC_TUNED.append(ok)
    return ok


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_S1 = np.uint64(0xBF58476D1CE4E5B9)
_S2 = np.uint64(0x94D049BB133111EB)


def hash01(ix: np.ndarray, iy: np.ndarray, key: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) float64 from integer coordinates and a key (splitmix64 finaliser); broadcasts its inputs."""
    with np.errstate(over="ignore"):
        h = (np.asarray(ix, np.int64).view(np.uint64) * _M1) ^ (np.asarray(iy, np.int64).view(np.uint64) * _M2)
        h = h ^ (np.asarray(key, np.uint64) * _M3)
        h ^= h >> np.uint64(30)
        h *= _S1
        h ^= h >> np.uint64(27)
        h *= _S2
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def subkey(seed: int, name: str) -> int:
    """A 62-bit key from a slide seed and a layer name (FNV-1a: stable across Python runs)."""
    h = 1469598103934665603
    for ch in f"{seed}:{name}".encode():
        h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h >> 2


def fade(feature_px: float, d: float, full: float = 2.0, gone: float = 0.75) -> float:
    """Weight of a feature of ``feature_px`` level-0 pixels at downsample ``d``: 1 when >= ``full`` output px, 0 below ``gone``."""
    return float(np.clip((feature_px / d - gone) / (full - gone), 0.0, 1.0))


def ramp(x: np.ndarray | np.floating, width: float) -> np.ndarray:
    """Linear edge of ``width`` centred on 0 (0 below, 1 above): area-preserving anti-aliasing of a boundary.

    Works on arrays and on float32 scalars (constant fields).
    """
    out = x * F32(1.0 / width) + F32(0.5)
    if isinstance(out, np.ndarray) and out.ndim:
        return np.clip(out, F32(0.0), F32(1.0), out=out)
    return F32(min(max(float(out), 0.0), 1.0))


def _bspline(t: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """First of the 4 lattice nodes and their cubic B-spline weights at continuous lattice coordinates."""
    i = np.floor(t)
    f = t - i
    f2 = f * f
    f3 = f2 * f
    w = [(1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6]
    return i.astype(np.int64) - 1, [wk.astype(F32) for wk in w]


def value_noise(X: np.ndarray, Y: np.ndarray, lattice_px: float | tuple[float, float], key: int) -> np.ndarray:
    """Smooth noise, mean 0 and about +-0.5 (cubic B-spline through hashed lattice values).

    ``lattice_px``: the lattice spacing, or (along x, along y) for streaks. Elementwise and
    separable, so each pixel depends only on its own coordinates.
    """
    lx, ly = (lattice_px, lattice_px) if np.isscalar(lattice_px) else lattice_px
    ix0, wx = _bspline(X / lx)
    iy0, wy = _bspline(Y / ly)
    gx = np.arange(ix0.min(), ix0.max() + 4)
    gy = np.arange(iy0.min(), iy0.max() + 4)
    lat = (hash01(gx[None, :], gy[:, None], key) - 0.5).astype(F32) * F32(2.2)
    cx = ix0 - gx[0]
    rows = wx[0][None, :] * lat[:, cx]
    for k in range(1, 4):
        rows += wx[k][None, :] * lat[:, cx + k]
    cy = iy0 - gy[0]
    out = wy[0][:, None] * rows[cy, :]
    for k in range(1, 4):
        out += wy[k][:, None] * rows[cy + k, :]
    return out


def value_noise_at(x: np.ndarray, y: np.ndarray, lattice_px: float, key: int) -> np.ndarray:
    """:func:`value_noise` (square lattice) at scattered points (x[k], y[k]), float64."""
    ix0, wx = _bspline(np.asarray(x, np.float64) / lattice_px)
    iy0, wy = _bspline(np.asarray(y, np.float64) / lattice_px)
    out = np.zeros(np.shape(x), np.float64)
    for ky in range(4):
        for kx in range(4):
            lat = (hash01(ix0 + kx, iy0 + ky, key) - 0.5) * 2.2
            out += wx[kx].astype(np.float64) * wy[ky].astype(np.float64) * lat
    return out


# ----------------------------------------------------------------------------------------------
# Nuclei: jittered grids of ellipses
# ----------------------------------------------------------------------------------------------


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
NUCLEUS_LAYERS = (LYMPHOCYTES, SPARSE_LYMPHOCYTES, CENTROBLASTS, HISTIOCYTES, SPINDLE, TUMOR_CELLS)

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


def fine_texture(X: np.ndarray, Y: np.ndarray, d: float, mpp: float, key: int) -> np.ndarray | None:
    """Granular texture of about 1 um (chromatin, cytoplasm), faded out below the pixel size; None when gone."""
    lat = 1.1 / mpp
    f = fade(lat, d)
    if f <= 0:
        return None
    out = value_noise(X, Y, lat, key)
    if f < 1:
        out *= F32(f)
    return out


CONTOUR_MIN = 0.7
"""Lowest multiplier of a vesicular nucleus's quadratic form: outlines bulge out by up to 1 / sqrt(0.7) = 1.2."""


def contour_field(X: np.ndarray, Y: np.ndarray, d: float, mpp: float, key: int) -> np.ndarray | None:
    """Multiplier of the nuclear quadratic form that makes outlines irregular (lobes of ~3 um); None when unresolved."""
    lat = 2.6 / mpp
    f = fade(lat, d)
    if f <= 0:
        return None
    out = value_noise(X, Y, lat, key)
    out *= F32(0.55 * f)
    out += F32(1.0)
    return np.clip(out, F32(CONTOUR_MIN), F32(1.0 / CONTOUR_MIN), out=out)


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


FAT_CELL_UM = 55.0
FAT_MEMBRANE_UM = 1.6
FAT_MEAN = 0.0563  # transmission-equivalent membrane coverage at full detail (measure_fat_mean)


def fat_membranes(X: np.ndarray, Y: np.ndarray, d: float, key: int, mpp: float) -> np.ndarray:
    """Adipocyte membranes (0..1): the Worley F2 - F1 edges of a jittered grid of ~55 um cells (3 x 3 neighbours)."""
    c = FAT_CELL_UM / mpp
    width = FAT_MEMBRANE_UM / mpp
    alpha = fade(width, d, full=1.5, gone=0.5)
    if alpha <= 0:
        return np.full((Y.size, X.size), FAT_MEAN, F32)
    ix = np.floor(X / c).astype(np.int64)
    iy = np.floor(Y / c).astype(np.int64)
    gx = np.arange(ix.min() - 1, ix.max() + 2)
    gy = np.arange(iy.min() - 1, iy.max() + 2)
    u = hash01(gx[None, None, :], gy[None, :, None], key + 7919 * np.arange(2, dtype=np.uint64)[:, None, None])
    offx = ((0.1 + 0.8 * u[0]) * c).astype(F32)
    offy = ((0.1 + 0.8 * u[1]) * c).astype(F32)
    shape = (Y.size, X.size)
    f1 = np.full(shape, np.inf, F32)
    f2 = np.full(shape, np.inf, F32)
    for oy in (-1, 0, 1):
        cy = iy + oy
        rel_y = (Y - cy * c).astype(F32)
        rows = cy - gy[0]
        sx, sy = offx[rows], offy[rows]
        for ox in (-1, 0, 1):
            cx = ix + ox
            rel_x = (X - cx * c).astype(F32)
            cols = cx - gx[0]
            dx = rel_x[None, :] - sx[:, cols]
            dy = rel_y[:, None] - sy[:, cols]
            dist2 = dx * dx
            dist2 += dy * dy
            np.minimum(f2, np.maximum(f1, dist2), out=f2)
            np.minimum(f1, dist2, out=f1)
    gap = np.sqrt(f2) - np.sqrt(f1)
    m = F32(1.0) - ramp(gap - F32(width), max(1.0, d))
    if alpha < 1:
        m *= F32(alpha)
        m += F32((1 - alpha) * FAT_MEAN)
    return m


H_OD = 0.6
"""Typical optical density per unit hematoxylin (mean over RGB of the stain vector)."""
E_OD = 0.5
"""Typical optical density per unit eosin."""


def effective_mean(conc: np.ndarray, od_per_unit: float) -> float:
    """The uniform concentration that transmits as much light as ``conc`` does on average.

    What a field should fade to below the pixel size: RGB = exp(-OD) is convex, so the mean
    concentration itself would render darker than the downsampled image.
    """
    return float(-np.log(np.mean(np.exp(-od_per_unit * conc.astype(np.float64)))) / od_per_unit)


def measure_mean(layer: NucleusLayer, mpp: float = 0.243, cells: int = 48) -> float:
    """Transmission-equivalent mean hematoxylin of a layer at full detail (to set ``mean_h``)."""
    n = int(round(cells * layer.cell_um / mpp))
    X = np.arange(n) + 0.5 + 1.0e5
    Y = np.arange(n) + 0.5 + 2.0e5
    fine = fine_texture(X, Y, 1.0, mpp, 7)
    contour = contour_field(X, Y, 1.0, mpp, 8) if layer.vesicular else None
    return effective_mean(nuclei_detail(layer, X, Y, 1.0, 99991, mpp, fine, contour), H_OD)


def measure_fat_mean(mpp: float = 0.243, cells: int = 24, eosin: float = 0.8) -> float:
    """Transmission-equivalent mean of the membrane field (in units of ``eosin``)."""
    n = int(round(cells * FAT_CELL_UM / mpp))
    X = np.arange(n) + 0.5
    Y = np.arange(n) + 0.5
    return effective_mean(eosin * fat_membranes(X, Y, 1.0, 5, mpp), E_OD) / eosin
