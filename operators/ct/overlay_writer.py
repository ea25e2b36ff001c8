"""A PNG montage of axial slices with the mask outlined, for a reviewer to look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from operators.core.atomic_io import write_atomically
from operators.ct.file_writer import VolumeMaskFileWriter
from operators.ct.volume import CTVolume

ABDOMEN_WINDOW_HU = (-160.0, 240.0)  # level 40, width 400
MASK_RGB = np.array([255, 40, 40], dtype=np.float32)


def montage_slices(mask_zyx: np.ndarray, n_tiles: int) -> list[int]:
    """Slice indices evenly spread over the mask's extent (over the whole volume when it is empty)."""
    occupied = np.flatnonzero(mask_zyx.any(axis=(1, 2)))
    first, last = (occupied[0], occupied[-1]) if occupied.size else (0, mask_zyx.shape[0] - 1)
    return sorted({int(round(v)) for v in np.linspace(first, last, n_tiles)})


def overlay_tile(hu_yx: np.ndarray, mask_yx: np.ndarray, window_hu: tuple[float, float] = ABDOMEN_WINDOW_HU) -> np.ndarray:
    """RGB uint8 tile: the windowed slice, the mask tinted at 35% with a solid outline."""
    low, high = window_hu
    gray = np.clip((hu_yx - low) / (high - low), 0, 1) * 255
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    inside = mask_yx > 0
    rgb[inside] = 0.65 * rgb[inside] + 0.35 * MASK_RGB
    outline = inside & ~ndimage.binary_erosion(inside)
    rgb[outline] = MASK_RGB
    return rgb.astype(np.uint8)


def render_montage(hu_zyx: np.ndarray, mask_zyx: np.ndarray, n_tiles: int = 9, tile_px: int = 256) -> Image.Image:
    """A grid of labelled overlay tiles, displayed as stored (row 0 at the top: anterior for axial CT)."""
    indices = montage_slices(mask_zyx, n_tiles)
    columns = math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / columns)
    canvas = Image.new("RGB", (columns * tile_px, rows * tile_px))
    draw = ImageDraw.Draw(canvas)
    for position, z in enumerate(indices):
        tile = Image.fromarray(overlay_tile(hu_zyx[z], mask_zyx[z]))
        tile.thumbnail((tile_px, tile_px))
        x, y = (position % columns) * tile_px, (position // columns) * tile_px
        canvas.paste(tile, (x, y))
        draw.text((x + 4, y + 4), f"slice {z + 1}/{hu_zyx.shape[0]}", fill=(255, 255, 0))
    return canvas


class OverlayWriterOperator(VolumeMaskFileWriter):
    """Writes a PNG montage of axial slices through the mask.

    Named inputs:
        volume: CTVolume, HU (z, y, x).
        mask: numpy uint8 (z, y, x) on the volume's grid.

    Named outputs:
        overlay_path: pathlib.Path of the PNG.

    File outputs:
        <output_path>: RGB PNG, up to 9 tiles, abdomen window (W400 L40), mask in red.
    """

    OUTPUT_PATH = "overlay_path"
    STAGE = "overlay"

    def write(self, volume: CTVolume, mask: np.ndarray) -> Path:
        montage = render_montage(volume.hu_zyx, mask)
        return write_atomically(self.output_path, lambda tmp: montage.save(tmp, format="PNG"))
