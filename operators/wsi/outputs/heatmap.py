"""A tumor-probability heatmap over the slide thumbnail, for people to look at (not for measurement).

The map is resampled onto the thumbnail's pixel grid with the level-0 geometry
(:func:`operators.wsi.outputs.map_resampling.map_on_pixel_grid`): thumbnail pixel (i, j) at downsample d
covers level-0 ``[j*d, (j+1)*d) x [i*d, (i+1)*d)``, as :meth:`SlideHandle.thumbnail` makes it.
Colours come from a jet-like colour map (blue -> cyan -> yellow -> red), opacity grows with the
probability, and a colour bar with its scale is drawn in the bottom-right corner, inside the image
(the overlay keeps the thumbnail's size, so it stays aligned with it).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from operators.wsi.grid import ProbabilityMap
from operators.wsi.outputs.map_resampling import map_on_pixel_grid

# Jet-like colour map: (position, (r, g, b)) anchors, linear in between.
JET_ANCHORS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (0, 0, 143)),
    (0.125, (0, 0, 255)),
    (0.375, (0, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (255, 0, 0)),
    (1.0, (128, 0, 0)),
)
MIN_LEGEND_SIDE_PX = 96  # no colour bar on smaller images


def colour_map(values: np.ndarray, anchors: tuple[tuple[float, tuple[int, int, int]], ...] = JET_ANCHORS) -> np.ndarray:
    """(..., 3) uint8 RGB for values in 0..1 (clipped)."""
    positions = np.array([a[0] for a in anchors])
    colours = np.array([a[1] for a in anchors], dtype=np.float64)
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(clipped, positions, colours[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=-1)).astype(np.uint8)


def heatmap_rgba(probabilities: np.ndarray, max_alpha: float = 0.6, min_probability: float = 0.05) -> np.ndarray:
    """(h, w, 4) uint8: colour by probability, alpha = max_alpha * p (0 below ``min_probability``)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    alpha = np.where(p >= min_probability, max_alpha * p, 0.0)
    return np.dstack([colour_map(p), np.round(alpha * 255).astype(np.uint8)])


def _draw_colour_bar(image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < MIN_LEGEND_SIDE_PX:
        return
    bar_h = max(32, min(256, height // 4))
    bar_w = max(8, width // 40)
    font_px = max(9, min(16, bar_h // 8))
    font = ImageFont.load_default(size=font_px)
    margin = max(4, font_px // 2)
    label_w = int(font.getlength("P(tumor)")) + margin
    box = (width - bar_w - label_w - 3 * margin, height - bar_h - font_px - 4 * margin, width - margin, height - margin)
    draw = ImageDraw.Draw(image)
    draw.rectangle(box, fill=(255, 255, 255), outline=(0, 0, 0))
    bar_x0, bar_y0 = box[0] + margin, box[1] + font_px + 2 * margin
    gradient = colour_map(np.linspace(1.0, 0.0, bar_h))[:, np.newaxis, :].repeat(bar_w, axis=1)
    image.paste(Image.fromarray(gradient), (bar_x0, bar_y0))
    draw.rectangle((bar_x0, bar_y0, bar_x0 + bar_w - 1, bar_y0 + bar_h - 1), outline=(0, 0, 0))
    draw.text((box[0] + margin, box[1] + margin), "P(tumor)", fill=(0, 0, 0), font=font)
    for value in (1.0, 0.5, 0.0):
        y = bar_y0 + round((1.0 - value) * (bar_h - 1))
        draw.line((bar_x0 + bar_w, y, bar_x0 + bar_w + margin // 2, y), fill=(0, 0, 0))
        draw.text((bar_x0 + bar_w + margin, y), f"{value:.1f}", fill=(0, 0, 0), font=font, anchor="lm")


def render_heatmap_overlay(
    thumbnail_rgb: np.ndarray,
    prob_map: ProbabilityMap,
    thumbnail_downsample: float,
    max_alpha: float = 0.6,
    min_probability: float = 0.05,
    colour_bar: bool = True,
) -> Image.Image:
    """RGB image of the thumbnail's size: the heatmap blended over the thumbnail, with a colour bar."""
    thumbnail = np.asarray(thumbnail_rgb)
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(f"thumbnail must be (h, w, 3) uint8 RGB, got {thumbnail.shape} {thumbnail.dtype}")
    if not thumbnail_downsample > 0:
        raise ValueError(f"thumbnail_downsample must be positive, got {thumbnail_downsample}")
    height, width = thumbnail.shape[:2]
    on_thumbnail = map_on_pixel_grid(prob_map, (width, height), (thumbnail_downsample, thumbnail_downsample))
    overlay = Image.alpha_composite(
        Image.fromarray(thumbnail).convert("RGBA"), Image.fromarray(heatmap_rgba(on_thumbnail, max_alpha, min_probability), "RGBA")
    ).convert("RGB")
    if colour_bar:
        _draw_colour_bar(overlay)
    return overlay
