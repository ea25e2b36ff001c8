from __future__ import annotations

import numpy as np
import pytest
import tifffile

from operators.core.errors import SlideReadError
from operators.wsi.slide.tiff_inspection import inspect_tiff
from tests.wsi_factories import write_pyramid
from training.synthetic.bad_slides import write_tiff_claiming_pixels


def test_a_pyramid_gives_its_levels_layout_and_resolution(tmp_path, tissue):
    path = tmp_path / "pyramid.tif"
    write_pyramid(path, tissue, unit="CENTIMETER", mpp=0.25, compression="jpeg")
    info = inspect_tiff(path)
    assert [level.size_xy for level in info.levels] == [(1024, 768), (512, 384), (256, 192)]
    assert all(level.tiled and level.samples == 3 and level.dtype == "uint8" for level in info.levels)
    assert info.mpp_xy == pytest.approx((0.25, 0.25)) and info.mpp_note == "TIFF resolution tags in pixels per centimetre"
    assert info.cucim_refusal() is None and info.tifffile_refusal() is None


def test_the_svs_resolution_comes_from_its_aperio_description(svs):
    info = inspect_tiff(svs)
    assert info.kind == "svs" and info.mpp_note == "Aperio ImageDescription MPP"
    assert info.mpp_xy == pytest.approx((0.499, 0.499))


def test_what_cucim_misreads_or_decodes_whole_is_refused_to_it(tmp_path, tissue, untiled):
    path = tmp_path / "predictor.tif"
    write_pyramid(path, tissue, compression="zlib", predictor=True)
    assert "predictor" in inspect_tiff(path).cucim_refusal()
    assert "not tiled" in inspect_tiff(untiled[0]).cucim_refusal()
    assert inspect_tiff(untiled[0]).tifffile_refusal() is None


def test_a_file_that_is_not_a_tiff_is_none(tmp_path):
    (tmp_path / "notes.tif").write_text("not a slide\n")
    assert inspect_tiff(tmp_path / "notes.tif") is None


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_a_truncated_tiff_is_refused_naming_the_file(tmp_path, vips_pyramid, fraction):
    data = vips_pyramid.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideReadError, match="truncated") as raised:
        inspect_tiff(cut)
    assert str(cut) in str(raised.value)


def test_no_resolution_tags_give_no_mpp_and_say_so(tmp_path):
    write_pyramid(tmp_path / "nompp.tif", np.zeros((512, 512, 3), np.uint8), levels=2, mpp=None)
    info = inspect_tiff(tmp_path / "nompp.tif")
    assert info.mpp_xy is None and info.mpp_note


CLAIMS = {
    "10^6 x 10^6 over four JPEG tiles": (
        dict(claimed_xy=(10**6, 10**6), tile=256),
        "claims 1000000 x 1000000 pixels, which take 15264649 tiles, but it holds 4",
    ),
    "1000 x 1000 over eight strips": (dict(claimed_xy=(1000, 1000)), "claims 1000 x 1000 pixels, which take 16 strips, but it holds 8"),
    "1000 x 1000 in one short uncompressed strip": (
        dict(claimed_xy=(1000, 1000), one_strip=True),
        "claims 1000 x 1000 uncompressed pixels, more than its image data holds (strip 0 has 786432 bytes, 3000000 needed)",
    ),
    "one pixel row more": (
        dict(claimed_xy=(512, 513), one_strip=True),
        "claims 512 x 513 uncompressed pixels, more than its image data holds (strip 0 has 786432 bytes, 787968 needed)",
    ),
}


@pytest.mark.parametrize("case", CLAIMS, ids=list(CLAIMS))
def test_a_header_claiming_more_pixels_than_the_file_holds_is_refused_before_any_read(tmp_path, case):
    options, message = CLAIMS[case]
    path = write_tiff_claiming_pixels(tmp_path / "claims.tif", **options)
    with pytest.raises(SlideReadError) as raised:
        inspect_tiff(path)
    assert str(raised.value) == f"{path}: corrupt TIFF: page 0 {message}"


@pytest.mark.parametrize("options", [dict(tile=256), dict(), dict(one_strip=True)], ids=["tiled", "strips", "one strip"])
def test_a_header_claiming_what_the_file_holds_passes(tmp_path, options):
    path = write_tiff_claiming_pixels(tmp_path / "honest.tif", claimed_xy=(512, 512), **options)
    assert inspect_tiff(path).levels[0].size_xy == (512, 512)


def test_a_one_bit_uncompressed_page_takes_an_eighth_of_a_byte_per_pixel(tmp_path):
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 2, (300, 301)).astype(bool), rowsperstrip=64)
    assert inspect_tiff(path).levels[0].size_xy == (301, 300)
