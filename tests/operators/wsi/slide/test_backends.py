from __future__ import annotations

import numpy as np
import pytest

from operators.core.errors import SlideReadError
from operators.wsi.slide.backends import TifffileBackend, open_backend, optional_available
from operators.wsi.slide.reader import open_slide
from training.synthetic.bad_slides import write_tiff_claiming_pixels

HAS_CUCIM = optional_available("cucim")
TILED_BACKENDS = ["openslide", "tifffile", *(["cucim"] if HAS_CUCIM else [])]


@pytest.mark.parametrize("kind", ["svs", "vips"])
def test_backends_read_identical_level0_pixels(real_slides, kind):
    regions = {}
    for backend in TILED_BACKENDS:
        with open_slide(real_slides[kind], backend=backend) as slide:
            assert slide.backend == backend
            regions[backend] = [slide.read_region(location, 0, (224, 224)) for location in [(0, 0), (777, 1333), (1996, 2743)]]
    for backend in TILED_BACKENDS[1:]:
        np.testing.assert_array_equal(np.stack(regions[backend]), np.stack(regions["openslide"]), err_msg=backend)


@pytest.mark.parametrize("backend", TILED_BACKENDS)
def test_regions_outside_the_slide_are_white(vips_pyramid, backend):
    with open_slide(vips_pyramid, backend=backend) as slide:
        width, height = slide.size_xy
        inside = slide.read_region((0, 0), 0, (200, 250))
        shifted = slide.read_region((-100, -50), 0, (300, 300))
        assert (shifted[:50] == 255).all() and (shifted[:, :100] == 255).all()
        np.testing.assert_array_equal(shifted[50:300, 100:300], inside)
        corner = slide.read_region((width - 20, height - 10), 0, (64, 64))
        np.testing.assert_array_equal(corner[:10, :20], slide.read_region((width - 20, height - 10), 0, (20, 10)))
        assert (corner[10:] == 255).all() and (corner[:, 20:] == 255).all()
        assert (slide.read_region((width + 5000, 10), 0, (32, 32)) == 255).all()
        last = slide.levels[-1]
        beyond = slide.read_region((int(width - 4 * last.downsample), 0), last.index, (40, 8))
        assert (beyond[:, 8:] == 255).all() and not (beyond[:, :3] == 255).all()


@pytest.mark.parametrize("backend", TILED_BACKENDS)
def test_open_backend_opens_the_named_backend_on_the_same_pyramid(vips_pyramid, backend):
    with open_slide(vips_pyramid, backend=backend) as slide:
        expected = [lv.size_xy for lv in slide.levels], slide.read_region((777, 1333), 0, (64, 64))
    reopened = open_backend(backend, vips_pyramid)
    try:
        assert reopened.name == backend and list(reopened.level_sizes_xy) == expected[0]
        np.testing.assert_array_equal(reopened.read_rgb((777, 1333), 0, (64, 64)), expected[1])
    finally:
        reopened.close()


def test_an_uncompressed_level_the_file_cannot_hold_is_a_named_error_not_an_mmap_crash(tmp_path):
    """Opened without the inspection (which refuses the file first): tifffile's backend maps the level."""
    path = write_tiff_claiming_pixels(tmp_path / "claims.tif", claimed_xy=(1000, 1000), one_strip=True)
    with pytest.raises(SlideReadError, match=r"claims.tif: tifffile cannot map level 0 \(1000 x 1000 uncompressed pixels: ValueError"):
        TifffileBackend(path)


def test_a_decoder_error_outside_the_backends_own_checks_is_the_slides_named_error(tmp_path):
    """Tiles the header claims but the file lacks (IndexError in tifffile's offsets) surface as the slide's error."""
    path = write_tiff_claiming_pixels(tmp_path / "claims.tif", claimed_xy=(4096, 4096), tile=256)
    backend = TifffileBackend(path)
    try:
        assert backend.read_rgb((0, 0), 0, (64, 64)).shape == (64, 64, 3)
        with pytest.raises(SlideReadError, match=r"claims.tif: tifffile could not read the region at \(3000, 3000\) .*IndexError"):
            backend.read_rgb((3000, 3000), 0, (64, 64))
    finally:
        backend.close()
