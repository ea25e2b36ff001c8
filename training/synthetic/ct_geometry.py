"""Geometry of the synthetic CT phantom: the voxel grid in mm, smooth random fields, lobulated ellipsoids.

Coordinates are millimetres about the volume centre: x toward the patient's left, y posterior,
z superior (the frame of :mod:`.ct_phantom`). Fields and shapes are fixed in space, so every grid
that samples them, at any spacing or extent, sees the same anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates in mm about the volume centre: x left, y posterior, z superior."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def centred(cls, shape_zyx: tuple[int, int, int], spacing_zyx_mm: tuple[float, float, float]) -> Grid:
        axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape_zyx, spacing_zyx_mm, strict=False)]
        return cls(*axes)

    def box(self, centre_xyz: np.ndarray, half_xyz: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) of the voxels within ``half_xyz`` mm of a centre; None if empty."""
        slices = []
        for axis, c, h in (
            (self.z, centre_xyz[2], half_xyz[2]),
            (self.y, centre_xyz[1], half_xyz[1]),
            (self.x, centre_xyz[0], half_xyz[0]),
        ):
            lo, hi = np.searchsorted(axis, [c - h, c + h])
            if hi <= lo:
                return None
            slices.append(slice(int(lo), int(hi)))
        return tuple(slices)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (x, y, z) coordinate arrays of a box."""
        return (self.x[box[2]][None, None, :], self.y[box[1]][None, :, None], self.z[box[0]][:, None, None])


_RBF_STD = float(np.pi**0.75)  # std of a unit-weight Gaussian-RBF lattice field with spacing = width
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic): a counter-based hash."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return z ^ (z >> np.uint64(31))


def _lattice_normals(seed: int, kz: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Standard normal weights of lattice nodes (kz, ky, kx), a pure function of (seed, node)."""
    offset = np.int64(1 << 20)
    node = (
        ((kz.astype(np.int64)[:, None, None] + offset) << np.int64(42))
        | ((ky.astype(np.int64)[None, :, None] + offset) << np.int64(21))
        | (kx.astype(np.int64)[None, None, :] + offset)
    ).astype(np.uint64)
    key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    h1 = _splitmix64(_splitmix64(node * np.uint64(2)) ^ key)
    h2 = _splitmix64(_splitmix64(node * np.uint64(2) + np.uint64(1)) ^ key)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def smooth_field(seed: int, axes_zyx: tuple[np.ndarray, ...], correlation_mm: float) -> np.ndarray:
    """A smooth random field of about unit standard deviation, sampled on a grid of 1-D axes (mm).

    The field is a lattice of Gaussian bumps at the multiples of ``correlation_mm`` (spacing = width)
    with standard normal weights hashed from (seed, node). The lattice is fixed in space, so every
    grid that samples the field, at any spacing or extent, sees the same field; only the nodes near
    the grid are evaluated.
    """
    weights, nodes = [], []
    for axis in axes_zyx:
        k = np.arange(np.floor(axis[0] / correlation_mm) - 4, np.ceil(axis[-1] / correlation_mm) + 5)
        centres = (k * correlation_mm).astype(np.float32)
        nodes.append(k)
        weights.append(np.exp(-0.5 * ((axis[:, None] - centres[None, :]) / correlation_mm) ** 2).astype(np.float32))
    wz, wy, wx = weights
    values = _lattice_normals(seed, *nodes) @ wx.T  # (kz, ky, nx)
    values = np.matmul(wy, values)  # (kz, ny, nx)
    values = np.tensordot(wz, values, axes=(1, 0))  # (nz, ny, nx)
    values *= np.float32(1.0 / _RBF_STD)
    return values


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class Ellipsoid:
    """A lobulated, optionally bent ellipsoid in an orthonormal frame (u, v, w) given in (x, y, z) mm."""

    centre: np.ndarray
    axes: np.ndarray  # rows u, v, w
    semi: np.ndarray  # semi-axes along u, v, w (mm)
    bend: tuple[float, float] = (0.0, 0.0)  # w += bend_u u^2 + bend_v v^2: the ends curve toward -w
    lobulation: float = 0.0  # amplitude of the smooth perturbation of the implicit function
    lobulation_mm: float = 30.0
    seed: int = 0  # of the lobulation field
    margin: float = 1.0  # of the evaluated box, in units of the largest semi-axis

    @property
    def half_mm(self) -> float:
        return float(self.semi.max()) * self.margin * 1.25 + 2.0

    def field(self, grid: Grid):
        """(box, f) with f < 1 inside; None if the shape misses the grid."""
        half = self.half_mm
        box = grid.box(self.centre, np.full(3, half))
        if box is None:
            return None
        return box, self._implicit(grid.coords(box), (grid.z[box[0]], grid.y[box[1]], grid.x[box[2]]))

    def top_point(self, step_mm: float = 2.0) -> np.ndarray:
        """(x, y, z) mm of the centre of the topmost slab of the shape, sampled on its own grid."""
        n = int(np.ceil(2 * self.half_mm / step_mm)) + 1
        axes = [(c - self.half_mm + np.arange(n) * step_mm).astype(np.float32) for c in self.centre[::-1]]
        local = Grid(*axes)
        full = tuple(slice(0, n) for _ in range(3))
        inside = self._implicit(local.coords(full), tuple(axes)) < 1
        if not inside.any():
            return self.centre.copy()
        zi = int(np.nonzero(inside.any(axis=(1, 2)))[0][-1])
        yi, xi = np.nonzero(inside[zi])
        return np.array([float(axes[2][xi].mean()), float(axes[1][yi].mean()), float(axes[0][zi])])

    def _implicit(self, coords, axes_zyx) -> np.ndarray:
        x, y, z = coords
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        u, v, w = (np.float32(a[0]) * dx + np.float32(a[1]) * dy + np.float32(a[2]) * dz for a in self.axes)
        w = w + np.float32(self.bend[0]) * u * u + np.float32(self.bend[1]) * v * v
        f = (u / np.float32(self.semi[0])) ** 2 + (v / np.float32(self.semi[1])) ** 2 + (w / np.float32(self.semi[2])) ** 2
        if self.lobulation > 0:
            f = f + np.float32(self.lobulation) * smooth_field(self.seed, axes_zyx, self.lobulation_mm)
        return f


def paint(tissue: np.ndarray, box, where: np.ndarray, value: int, over: tuple[int, ...] | None = None) -> None:
    """Set ``tissue[box]`` to ``value`` where ``where`` holds (and the tissue is one of ``over``)."""
    sub = tissue[box]
    if over is not None:
        where = where & np.isin(sub, over)
    sub[where] = value


def child_seed(rng: np.random.Generator) -> int:
    """A seed for a structure's own field (lobulation, texture), drawn from its stream."""
    return int(rng.integers(0, 2**63 - 1))
