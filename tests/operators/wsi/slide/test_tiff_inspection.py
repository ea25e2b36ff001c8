from __future__ import annotations

import numpy as np
import pytest

from operators.core.errors import SlideReadError
from operators.wsi.slide.tiff_inspection import inspect_tiff
from tests.wsi_factories import write_pyramid


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
