from __future__ import annotations

import numpy as np
import pytest

from operators.wsi.tissue_mask import resolution_problem, tissue_mask


def glass(shape=(64, 64), noise=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(240 + rng.normal(0, noise, (*shape, 3)), 0, 255).astype(np.uint8)


def with_tissue(image: np.ndarray, box=(slice(10, 40), slice(20, 50)), rgb=(200, 120, 180)) -> np.ndarray:
    image = image.copy()
    image[box] = rgb
    return image


@pytest.mark.parametrize(
    ("image", "expected_fraction"),
    [
        (glass(), 0.0),
        (np.full((32, 32, 3), 255, np.uint8), 0.0),
        (with_tissue(glass()), 30 * 30 / 64**2),
    ],
    ids=["noisy-glass-has-no-tissue", "white-has-no-tissue", "pink-region-is-tissue"],
)
def test_tissue_fraction(image, expected_fraction):
    assert tissue_mask(image).mean() == pytest.approx(expected_fraction, abs=0.01)


def test_ncrf_rule_drops_black_pen_marks():
    image = with_tissue(with_tissue(glass()), box=(slice(45, 55), slice(5, 15)), rgb=(20, 20, 40))
    assert tissue_mask(image)[50, 10] and not tissue_mask(image, min_rgb=50)[50, 10]
    assert tissue_mask(image, min_rgb=50)[20, 30]


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="RGB"):
        tissue_mask(np.zeros((8, 8)))


@pytest.mark.parametrize(
    ("slide_mpp", "problem"),
    [
        (0.243, None),  # Camelyon16's 40x
        (0.1215, None),  # finer: read downsampled
        (0.499, None),  # a 20x scan, 2.05x
        (0.6, None),  # 2.47x, below the limit of 2.5x
        (0.998, "level 0 is 0.998 um/pixel, 4.1x coarser than the 0.243 um/pixel the model reads (at most 2.5x)"),
    ],
)
def test_a_level_0_much_coarser_than_the_model_reads_is_refused(slide_mpp, problem):
    found = resolution_problem(slide_mpp, 0.243)
    if problem is None:
        assert found is None
    else:
        assert found == f"{problem}: a pyramid without its full-resolution level, or a scan at too low a magnification"
