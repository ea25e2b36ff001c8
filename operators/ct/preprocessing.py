"""CT preprocessing of the model-zoo spleen_ct_segmentation bundle, shared by training and the app.

Frames: the app's volumes are numpy arrays indexed (slice, row, column) = (z, y, x) with an affine
that maps (column, row, slice) indices to patient LPS millimetres. MONAI works channel-first on
(x, y, z) with an affine to RAS millimetres; :func:`volume_to_metatensor` converts between the two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    Orientation,
    Orientationd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    Spacing,
    Spacingd,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # axis codes name the direction each axis points to


def volume_to_metatensor(volume_zyx: np.ndarray, affine_lps: np.ndarray) -> MetaTensor:
    """A (1, x, y, z) MetaTensor with a RAS affine, from a (z, y, x) array and its LPS index affine."""
    array_xyz = np.ascontiguousarray(np.transpose(volume_zyx, (2, 1, 0)))[None]
    affine_ras = LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)
    return MetaTensor(torch.from_numpy(array_xyz), affine=torch.from_numpy(affine_ras))


def metatensor_to_volume(image: MetaTensor) -> np.ndarray:
    """The (z, y, x) numpy array of a single-channel (1, x, y, z) MetaTensor."""
    return np.ascontiguousarray(np.transpose(image[0].detach().cpu().numpy(), (2, 1, 0)))


def spleen_image_transforms(preprocessing: dict[str, Any]) -> Compose:
    """Array transforms for the image: orientation, spacing (bilinear), intensity window to 0..1."""
    low_hu, high_hu = preprocessing["intensity_window_hu"]
    return Compose(
        [
            Orientation(axcodes=preprocessing["axcodes"], labels=RAS_LABELS),
            Spacing(pixdim=tuple(preprocessing["pixdim_mm"]), mode="bilinear"),
            ScaleIntensityRange(a_min=low_hu, a_max=high_hu, b_min=0.0, b_max=1.0, clip=True),
        ]
    )


def spleen_dict_transforms(preprocessing: dict[str, Any], image_key: str = "image", label_key: str = "label") -> list:
    """The same steps as dictionary transforms for training (bilinear image, nearest label)."""
    low_hu, high_hu = preprocessing["intensity_window_hu"]
    keys = [image_key, label_key]
    return [
        Orientationd(keys=keys, axcodes=preprocessing["axcodes"], labels=RAS_LABELS),
        Spacingd(keys=keys, pixdim=tuple(preprocessing["pixdim_mm"]), mode=("bilinear", "nearest")),
        ScaleIntensityRanged(keys=image_key, a_min=low_hu, a_max=high_hu, b_min=0.0, b_max=1.0, clip=True),
    ]
