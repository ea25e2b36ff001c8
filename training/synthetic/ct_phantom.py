"""Synthetic abdominal CT phantom with a spleen label, for training and testing the spleen app.

Frame: arrays are indexed (slice z, row y, column x). With DICOM ImageOrientationPatient
[1, 0, 0, 0, 1, 0] the column index runs toward the patient's LEFT (LPS +x), the row index toward
POSTERIOR (LPS +y) and the slice index toward SUPERIOR (LPS +z, the slice normal). All anatomy is
described in millimetres about the volume centre, so the phantom is the same body at any spacing:
only the sampling changes.

The body is an elliptical trunk (skin, subcutaneous fat, muscle wall with ribs) around an abdominal
cavity of bowel and mesenteric fat with gas pockets; liver on the patient's right, stomach and
spleen on the left (the spleen posterolateral, against the wall, a bent lobulated ellipsoid), both
kidneys in perirenal fat, aorta and IVC, a vertebral column with discs and posterior elements,
paraspinal and psoas muscles, and above the diaphragm domes the lung bases and the heart. Sizes,
positions, tilts, lobulation (smooth random fields), HU levels and noise vary with the seed.

Here: the phantom and its HU rendering; the anatomy is :mod:`.ct_anatomy` (tissue classes and
organs), its geometry :mod:`.ct_geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ct_anatomy import (
    AIR,
    BOWEL,
    CANCELLOUS_BONE,
    CORTICAL_BONE,
    CSF,
    DISC,
    FAT,
    GAS,
    HEART,
    KIDNEY,
    LIVER,
    LUNG,
    MUSCLE,
    N_TISSUES,
    SPLEEN,
    STOMACH_FLUID,
    STOMACH_WALL,
    SUBCUTANEOUS_FAT,
    VESSEL,
    WALL_MUSCLE,
    draw_anatomy,
)
from .ct_geometry import Grid, child_seed, smooth_field


@dataclass(frozen=True)
class CTPhantom:
    """A synthetic CT volume in Hounsfield units and its spleen mask, both (z, y, x)."""

    hu_zyx: np.ndarray
    spleen_mask_zyx: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    tissue_zyx: np.ndarray = field(repr=False, compare=False, default=None)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_zyx_mm)) / 1000.0

    @property
    def spleen_volume_ml(self) -> float:
        return float(np.count_nonzero(self.spleen_mask_zyx)) * self.voxel_volume_ml


def make_abdomen_phantom(shape_zyx: tuple[int, int, int], spacing_zyx_mm: tuple[float, float, float], seed: int) -> CTPhantom:
    """A plausible non-contrast abdominal CT (int16 HU) and its spleen mask (uint8), both (z, y, x).

    The anatomy depends on ``seed`` only, in millimetres about the volume centre; the shape and
    spacing only choose how it is sampled (the noise, drawn per voxel, is the exception).
    """
    shape = tuple(int(n) for n in shape_zyx)
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    if len(shape) != 3 or min(shape) < 1 or len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"need a 3-D shape and positive spacing, got {shape_zyx} and {spacing_zyx_mm}")
    # One independent stream per structure: what one draws never shifts another's parameters.
    streams = dict(
        zip(
            ("body", "trunk", "gas", "stomach", "liver", "spine", "kidneys", "spleen", "vessels", "ribs", "thorax", "render", "noise"),
            np.random.default_rng(seed).spawn(13),
            strict=False,
        )
    )
    grid = Grid.centred(shape, spacing)
    tissue = draw_anatomy(streams, grid)
    hu = _render(streams["render"], streams["noise"], grid, tissue)
    mask = (tissue == SPLEEN).astype(np.uint8)
    return CTPhantom(hu_zyx=hu, spleen_mask_zyx=mask, spacing_zyx_mm=spacing, tissue_zyx=tissue)


def _render(rng: np.random.Generator, noise_rng: np.random.Generator, grid: Grid, tissue: np.ndarray) -> np.ndarray:
    """HU per tissue (varied by case), soft-tissue texture, Gaussian noise; int16."""
    lut = np.zeros(N_TISSUES, dtype=np.float32)
    lut[AIR] = -1000
    lut[FAT] = lut[SUBCUTANEOUS_FAT] = rng.uniform(-110, -85)
    lut[MUSCLE] = lut[WALL_MUSCLE] = rng.uniform(42, 58)
    lut[BOWEL] = rng.uniform(10, 35)
    lut[GAS] = rng.uniform(-850, -750)
    lut[LIVER] = rng.uniform(55, 68)
    lut[SPLEEN] = rng.uniform(40, 50)
    lut[KIDNEY] = rng.uniform(25, 35)
    lut[STOMACH_WALL] = rng.uniform(35, 45)
    lut[STOMACH_FLUID] = rng.uniform(5, 20)
    lut[VESSEL] = rng.uniform(35, 45)
    lut[CORTICAL_BONE] = rng.uniform(600, 800)
    lut[CANCELLOUS_BONE] = rng.uniform(180, 300)
    lut[DISC] = rng.uniform(70, 100)
    lut[CSF] = rng.uniform(5, 15)
    lut[LUNG] = rng.uniform(-880, -820)
    lut[HEART] = rng.uniform(35, 45)
    texture_amp = np.zeros(N_TISSUES, dtype=np.float32)
    texture_amp[[LIVER, SPLEEN, KIDNEY, MUSCLE, WALL_MUSCLE, BOWEL, HEART]] = rng.uniform(2, 6)
    texture_amp[[FAT, SUBCUTANEOUS_FAT]] = 8.0
    texture_amp[LUNG] = 25.0
    texture_seed, texture_mm, sigma = child_seed(rng), rng.uniform(10, 20), rng.uniform(12, 18)
    # bowel content is heterogeneous (fluid, chyme, wall): a finer texture of its own
    bowel_seed, bowel_mm, bowel_amp = child_seed(rng), rng.uniform(5, 8), rng.uniform(6, 12)

    hu = lut[tissue]
    texture = smooth_field(texture_seed, (grid.z, grid.y, grid.x), texture_mm)
    texture *= texture_amp[tissue]
    hu += texture
    del texture
    bowel = tissue == BOWEL
    hu[bowel] += np.float32(bowel_amp) * smooth_field(bowel_seed, (grid.z, grid.y, grid.x), bowel_mm)[bowel]
    del bowel
    hu += noise_rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(np.rint(hu), -1024, 3071, out=hu)
    return hu.astype(np.int16)
