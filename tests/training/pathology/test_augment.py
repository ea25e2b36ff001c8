"""Patch augmentation: the 8 orientations and the colour jitter keep shape, dtype and range."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hsv2rgb, rgb2hsv

from training.pathology.augment import ORIENTATIONS, ColorJitter, augment_patch, jitter_colors, orient, shift_hue_and_saturation

PATCH = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def test_the_8_orientations_are_distinct_and_the_first_is_the_identity():
    images = [orient(PATCH, k) for k in range(len(ORIENTATIONS))]
    assert len(ORIENTATIONS) == 8 and np.array_equal(images[0], PATCH)
    assert len({image.tobytes() for image in images}) == 8


def test_the_orientations_are_the_dihedral_group_of_the_square():
    corner = np.zeros((4, 4, 1), np.uint8)
    corner[0, 1] = 1  # marks one of the 8 (corner, edge) positions
    positions = {tuple(np.argwhere(orient(corner, k)[..., 0])[0]) for k in range(8)}
    assert positions == {(0, 1), (1, 0), (0, 2), (2, 0), (3, 1), (1, 3), (3, 2), (2, 3)}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("jitter", [ColorJitter(), None])
def test_augmented_patches_keep_shape_dtype_and_range(seed, jitter):
    out = augment_patch(PATCH, jitter, np.random.default_rng(seed))
    assert out.shape == PATCH.shape and out.dtype == np.uint8 and out.flags.c_contiguous


def test_colour_jitter_changes_the_colours_within_0_to_1():
    image = PATCH.astype(np.float32) / 255
    outs = [jitter_colors(image, ColorJitter(), np.random.default_rng(seed)) for seed in range(8)]
    assert all(o.min() >= 0 and o.max() <= 1 for o in outs)
    assert min(float(np.abs(o - image).mean()) for o in outs) > 0.005


def test_zero_colour_jitter_is_the_identity():
    image = PATCH.astype(np.float32) / 255
    out = jitter_colors(image, ColorJitter(0, 0, 0, 0), np.random.default_rng(0))
    assert np.abs(out - image).max() < 1e-5


@pytest.mark.parametrize(("hue_turns", "saturation_factor"), [(0.0, 1.0), (0.04, 1.25), (-0.04, 0.75), (0.5, 0.0)])
def test_hue_and_saturation_shift_equals_scikit_image_hsv(hue_turns, saturation_factor):
    image = PATCH.astype(np.float32) / 255
    hsv = rgb2hsv(image)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue_turns, 1.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation_factor, 0, 1)
    assert np.abs(shift_hue_and_saturation(image, hue_turns, saturation_factor) - hsv2rgb(hsv)).max() < 1e-5
