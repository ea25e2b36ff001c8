"""Surface mesh of a binary mask, in patient LPS millimetres, written as binary STL."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from skimage.measure import marching_cubes
from stl import mesh as stl_mesh

from operators.core.atomic_io import write_atomically
from operators.ct.file_writer import VolumeMaskFileWriter
from operators.ct.volume import CTVolume

logger = logging.getLogger(__name__)


def mask_surface_lps(mask_zyx: np.ndarray, affine_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (n, 3) in LPS mm and outward-wound triangles (m, 3) of the mask's 0.5 iso-surface.

    ``affine_lps`` maps (column, row, slice) = (x, y, z) indices to LPS mm. The mask is padded by one
    voxel so the surface is closed where the organ touches the volume's edge.
    """
    padded = np.pad(mask_zyx.astype(np.float32), 1)
    vertices_zyx, faces, _, _ = marching_cubes(padded, level=0.5)
    vertices_xyz = vertices_zyx[:, ::-1] - 1.0
    vertices_lps = vertices_xyz @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    # With vertices reordered to (x, y, z), marching_cubes' winding is outward for a right-handed
    # index-to-patient mapping; a mirroring affine (negative determinant) turns it inside out.
    mirror = np.linalg.det(affine_lps[:3, :3]) < 0
    return vertices_lps, (faces[:, ::-1] if mirror else faces)


def write_stl(vertices: np.ndarray, faces: np.ndarray, path: Path) -> Path:
    surface = stl_mesh.Mesh(np.zeros(len(faces), dtype=stl_mesh.Mesh.dtype))
    surface.vectors[:] = vertices[faces]
    return write_atomically(path, lambda tmp: surface.save(str(tmp)))


def write_mask_stl(mask_zyx: np.ndarray, affine_lps: np.ndarray, path: Path) -> Path | None:
    """Write the mask's surface to ``path``; None (and no file) when the mask is empty."""
    if not mask_zyx.any():
        logger.warning("Mask is empty: no STL written")
        return None
    return write_stl(*mask_surface_lps(mask_zyx, affine_lps), path)


class STLWriterOperator(VolumeMaskFileWriter):
    """Writes the surface of the mask as a binary STL in patient LPS millimetres.

    Named inputs:
        volume: CTVolume, for the affine (column, row, slice) -> LPS mm.
        mask: numpy uint8 (z, y, x) on the volume's grid.

    Named outputs:
        stl_path: pathlib.Path of the STL, or None when the mask is empty.

    File outputs:
        <output_path>: binary STL, vertices in LPS mm, faces wound outward.
    """

    OUTPUT_PATH = "stl_path"
    STAGE = "stl"

    def write(self, volume: CTVolume, mask: np.ndarray) -> Path | None:
        return write_mask_stl(mask, volume.affine_lps, self.output_path)
