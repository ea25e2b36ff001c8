from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from operators.ct.stl_writer import write_mask_stl


def box_affine(spacing_xyz, directions=None, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if directions is None else directions) * np.asarray(spacing_xyz)
    affine[:3, 3] = origin
    return affine


AFFINES = {
    "axial-0.8x0.8x2.5": box_affine((0.8, 0.8, 2.5)),
    "rows-flipped": box_affine((1.0, 1.0, 2.0), np.diag([1.0, -1.0, -1.0])),
    "mirrored-x": box_affine((0.7, 0.7, 1.5), np.diag([-1.0, 1.0, 1.0])),
}


@pytest.mark.parametrize("name", AFFINES, ids=list(AFFINES))
def test_stl_reads_back_closed_outward_and_in_patient_millimetres(tmp_path: Path, name):
    affine = AFFINES[name]
    mask = np.zeros((12, 30, 40), np.uint8)
    mask[3:9, 5:25, 10:30] = 1  # slices 3..8, rows 5..24, columns 10..29
    path = write_mask_stl(mask, affine, tmp_path / "organ.stl")
    surface = trimesh.load(path)  # an independent reader
    assert surface.is_watertight
    assert surface.volume > 0, "faces must wind outward"
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    assert surface.volume == pytest.approx(mask.sum() * voxel_mm3, rel=0.15)
    corners = np.array([[c, r, s, 1] for c in (10, 29) for r in (5, 24) for s in (3, 8)]) @ affine.T
    np.testing.assert_allclose(surface.bounds[0], corners[:, :3].min(axis=0), atol=1.01 * np.abs(affine[:3, :3]).max())
    np.testing.assert_allclose(surface.bounds[1], corners[:, :3].max(axis=0), atol=1.01 * np.abs(affine[:3, :3]).max())


def test_empty_mask_writes_no_stl(tmp_path: Path):
    assert write_mask_stl(np.zeros((4, 5, 6), np.uint8), np.eye(4), tmp_path / "none.stl") is None
    assert not (tmp_path / "none.stl").exists()
