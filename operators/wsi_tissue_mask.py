"""Tissue mask of a whole-slide image at low resolution.

The rule is the model-zoo pathology bundle's (MONAI ``ForegroundMask(hsv_threshold={"S": "otsu"})``:
a pixel is tissue when it is darker than Otsu's threshold in any of R, G, B and more saturated than
Otsu's threshold in HSV saturation), plus two absolute rules: NCRF's, that no RGB channel is below
``min_rgb`` (pen marks, debris), and a saturation floor, because Otsu always splits an image in two
and would call half of a blank slide "tissue".
"""

from __future__ import annotations

import numpy as np
from monai.transforms import ForegroundMask
from skimage.color import rgb2hsv

MIN_TISSUE_SATURATION = 0.07  # glass and out-of-focus background stay below about 0.04
NCRF_MIN_RGB = 50


def tissue_mask(thumbnail_rgb: np.ndarray, min_saturation: float = MIN_TISSUE_SATURATION, min_rgb: int = 0) -> np.ndarray:
    """Boolean (h, w) tissue mask of an (h, w, 3) uint8 RGB thumbnail."""
    if thumbnail_rgb.ndim != 3 or thumbnail_rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {thumbnail_rgb.shape}")
    channels_first = np.moveaxis(thumbnail_rgb, -1, 0)
    if np.ptp(channels_first.reshape(3, -1), axis=1).max() == 0:
        return np.zeros(thumbnail_rgb.shape[:2], dtype=bool)  # a constant image has no tissue
    mask = np.asarray(ForegroundMask(hsv_threshold={"S": "otsu"})(channels_first))[0].astype(bool)
    if min_saturation > 0:
        mask &= rgb2hsv(thumbnail_rgb)[..., 1] > min_saturation
    if min_rgb > 0:
        mask &= (thumbnail_rgb >= min_rgb).all(axis=2)
    return mask
