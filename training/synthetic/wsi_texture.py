"""Texture primitives of the synthetic slides: coordinate hashing, value noise, fine fields and fat.

Every function takes the level-0 coordinates of pixel centres as two 1-D arrays (``X`` for the
columns, ``Y`` for the rows) and returns a float32 (len(Y), len(X)) field. A pixel's value depends
only on its own coordinates (all randomness comes from hashing absolute integer lattice or cell
coordinates), which is what makes renders independent of tiling. ``d`` is the downsample: features
smaller than a pixel fade to their mean, so low-resolution renders approximate downsampled ones.

Value noise is a cubic B-spline through hashed lattice values, evaluated separably. The nuclei
are :mod:`.wsi_nuclei`.
"""

from __future__ import annotations

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


def measure_fat_mean(mpp: float = 0.243, cells: int = 24, eosin: float = 0.8) -> float:
    """Transmission-equivalent mean of the membrane field (in units of ``eosin``)."""
    n = int(round(cells * FAT_CELL_UM / mpp))
    X = np.arange(n) + 0.5
    Y = np.arange(n) + 0.5
    return effective_mean(eosin * fat_membranes(X, Y, 1.0, 5, mpp), E_OD) / eosin
