"""The synthetic abdominal CT phantom: types, anatomy (laterality, HU levels, spleen size), determinism."""

from __future__ import annotations

import time

import numpy as np
import pytest

from training.synthetic import ct_anatomy
from training.synthetic.ct_phantom import CTPhantom, make_abdomen_phantom

# Coarse sampling keeps these fast; the anatomy is in mm so it is the same body as at full resolution.
SHAPE, SPACING = (64, 128, 128), (3.5, 3.0, 3.0)


@pytest.fixture(scope="module")
def phantoms() -> dict[int, CTPhantom]:
    return {seed: make_abdomen_phantom(SHAPE, SPACING, seed) for seed in range(6)}


def test_types_and_shapes(phantoms):
    phantom = phantoms[0]
    assert phantom.hu_zyx.dtype == np.int16 and phantom.hu_zyx.shape == SHAPE
    assert phantom.spleen_mask_zyx.dtype == np.uint8 and phantom.spleen_mask_zyx.shape == SHAPE
    assert set(np.unique(phantom.spleen_mask_zyx)) <= {0, 1}
    assert phantom.spacing_zyx_mm == SPACING
    with pytest.raises(AttributeError):
        phantom.spacing_zyx_mm = (1.0, 1.0, 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_spleen_volume_is_plausible(phantoms, seed):
    assert 100.0 <= phantoms[seed].spleen_volume_ml <= 300.0


@pytest.mark.parametrize("seed", range(6))
def test_spleen_is_on_the_left_and_posterior_and_liver_on_the_right(phantoms, seed):
    phantom = phantoms[seed]
    _, ny, nx = SHAPE
    _, spleen_y, spleen_x = np.argwhere(phantom.spleen_mask_zyx).mean(axis=0)
    _, liver_y, liver_x = np.argwhere(phantom.tissue_zyx == ct_anatomy.LIVER).mean(axis=0)
    # columns run toward the patient's left, rows toward posterior
    assert spleen_x > 0.6 * nx and liver_x < 0.5 * nx
    assert spleen_y > 0.5 * ny
    assert spleen_x > liver_x


@pytest.mark.parametrize(
    ("tissue", "low", "high"),
    [
        (ct_anatomy.AIR, -1010, -990),
        (ct_anatomy.SUBCUTANEOUS_FAT, -120, -75),
        (ct_anatomy.MUSCLE, 35, 65),
        (ct_anatomy.LIVER, 50, 72),
        (ct_anatomy.SPLEEN, 35, 55),
        (ct_anatomy.KIDNEY, 20, 40),
        (ct_anatomy.CORTICAL_BONE, 550, 850),
        (ct_anatomy.GAS, -900, -700),
    ],
)
def test_tissue_hounsfield_units(phantoms, tissue, low, high):
    for phantom in phantoms.values():
        values = phantom.hu_zyx[phantom.tissue_zyx == tissue]
        if values.size:
            assert low <= np.median(values) <= high


def test_noise_level(phantoms):
    phantom = phantoms[1]
    air = phantom.hu_zyx[phantom.tissue_zyx == ct_anatomy.AIR].astype(np.float64)
    assert 10.0 <= air.std() <= 20.0


def test_same_seed_same_phantom_and_other_seed_differs():
    first = make_abdomen_phantom((24, 48, 48), (8.0, 8.0, 8.0), seed=7)
    again = make_abdomen_phantom((24, 48, 48), (8.0, 8.0, 8.0), seed=7)
    other = make_abdomen_phantom((24, 48, 48), (8.0, 8.0, 8.0), seed=8)
    assert np.array_equal(first.hu_zyx, again.hu_zyx)
    assert np.array_equal(first.spleen_mask_zyx, again.spleen_mask_zyx)
    assert not np.array_equal(first.spleen_mask_zyx, other.spleen_mask_zyx)


def test_anatomy_is_in_millimetres_so_spacing_only_changes_sampling():
    coarse = make_abdomen_phantom((56, 112, 112), (4.0, 3.5, 3.5), seed=3)
    fine = make_abdomen_phantom((90, 260, 260), (2.5, 1.5, 1.5), seed=3)
    assert coarse.spleen_volume_ml == pytest.approx(fine.spleen_volume_ml, rel=0.05)
    centroid = [np.argwhere(p.spleen_mask_zyx).mean(axis=0) for p in (coarse, fine)]
    for c, p in zip(centroid, (coarse, fine), strict=False):  # centroid in mm about the volume centre
        c -= (np.array(p.hu_zyx.shape) - 1) / 2
        c *= np.array(p.spacing_zyx_mm)
    assert np.allclose(centroid[0], centroid[1], atol=3.0)


def test_fast_enough_for_a_clinical_size_volume():
    make_abdomen_phantom((16, 64, 64), (2.5, 1.5, 1.5), seed=0)  # warm up
    started = time.perf_counter()
    phantom = make_abdomen_phantom((100, 256, 256), (2.5, 1.5, 1.5), seed=0)
    elapsed = time.perf_counter() - started
    assert phantom.spleen_mask_zyx.any()
    assert elapsed < 10.0  # about 0.5-1 s on 2 idle cores; generous for a shared, loaded machine


@pytest.mark.parametrize(("shape", "spacing"), [((0, 10, 10), (1.0, 1.0, 1.0)), ((10, 10), (1.0, 1.0)), ((10, 10, 10), (1.0, 0.0, 1.0))])
def test_rejects_bad_geometry(shape, spacing):
    with pytest.raises(ValueError):
        make_abdomen_phantom(shape, spacing, seed=0)
