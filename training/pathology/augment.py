"""Patch augmentation of Liu et al. (2017): the 8 orientations and colour jitter (position jitter is
applied when the patch is read, see :mod:`training.pathology.dataset`).

Colour jitter on RGB in 0..1, in the order of TensorFlow's Inception ``distort_color`` (the seed
paper's code base): brightness (additive delta in +-``brightness``), saturation (factor in
1 +- ``saturation``, in HSV), hue (delta in +-``hue`` turns, in HSV), contrast (factor in
1 +- ``contrast`` about each channel's mean, as ``tf.image.adjust_contrast``); clipped to 0..1.
MONAI has no hue or saturation transform and torchvision is not usable here; the HSV round trip
below equals scikit-image's ``rgb2hsv``/``hsv2rgb`` within 1e-6 at half its cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (quarter turns, mirrored) for the 8 symmetries of the square (the dihedral group D4)
ORIENTATIONS = tuple((turns, mirrored) for mirrored in (False, True) for turns in range(4))


@dataclass(frozen=True)
class ColorJitter:
    brightness: float = 64 / 255
    saturation: float = 0.25
    hue: float = 0.04
    contrast: float = 0.75


def orient(image_hwc: np.ndarray, orientation: int) -> np.ndarray:
    """One of the 8 orientations of an (h, w, c) image: mirrored left-right, then turned by quarter turns."""
    turns, mirrored = ORIENTATIONS[orientation]
    image = image_hwc[:, ::-1] if mirrored else image_hwc
    return np.rot90(image, turns, axes=(0, 1))


def shift_hue_and_saturation(rgb01: np.ndarray, hue_turns: float, saturation_factor: float) -> np.ndarray:
    """(h, w, 3) float RGB in 0..1 with its HSV hue turned by ``hue_turns`` and saturation scaled (clipped to 1)."""
    value = rgb01.max(axis=-1)
    chroma = value - rgb01.min(axis=-1)
    saturation = np.where(value > 0, chroma / np.maximum(value, 1e-12), 0.0)
    red, green, blue = rgb01[..., 0], rgb01[..., 1], rgb01[..., 2]
    safe = np.maximum(chroma, 1e-12)
    sector = np.where(value == red, (green - blue) / safe, np.where(value == green, 2.0 + (blue - red) / safe, 4.0 + (red - green) / safe))
    hue = np.where(chroma > 0, sector / 6.0, 0.0) + hue_turns
    saturation = np.clip(saturation * saturation_factor, 0.0, 1.0)
    # HSV -> RGB: channel n is v - v s clip(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6, n = 5, 3, 1
    k = np.mod(np.array([5.0, 3.0, 1.0], np.float32) + np.mod(hue, 1.0)[..., None] * 6.0, 6.0)
    return value[..., None] - (value * saturation)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def jitter_colors(rgb01: np.ndarray, jitter: ColorJitter, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, saturation, hue and contrast of an (h, w, 3) float RGB image in 0..1."""
    image = np.clip(rgb01 + rng.uniform(-jitter.brightness, jitter.brightness), 0.0, 1.0)
    saturation_factor = rng.uniform(1 - jitter.saturation, 1 + jitter.saturation)
    image = shift_hue_and_saturation(image, rng.uniform(-jitter.hue, jitter.hue), saturation_factor)
    mean = image.mean(axis=(0, 1), keepdims=True)
    factor = rng.uniform(max(0.0, 1 - jitter.contrast), 1 + jitter.contrast)
    return np.clip((image - mean) * factor + mean, 0.0, 1.0)


def augment_patch(patch_rgb: np.ndarray, jitter: ColorJitter | None, rng: np.random.Generator) -> np.ndarray:
    """A random orientation and (unless ``jitter`` is None) colour jitter of an (h, w, 3) uint8 patch; uint8 out."""
    oriented = orient(patch_rgb, int(rng.integers(0, len(ORIENTATIONS))))
    if jitter is None:
        return np.ascontiguousarray(oriented)
    jittered = jitter_colors(oriented.astype(np.float32) / 255.0, jitter, rng)
    return np.ascontiguousarray(np.rint(jittered * 255.0).astype(np.uint8))
