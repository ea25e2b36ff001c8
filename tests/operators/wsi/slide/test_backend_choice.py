from __future__ import annotations

import numpy as np
import pytest

from operators.core.errors import SlideReadError
from operators.wsi.slide import backend_choice
from operators.wsi.slide.backend_choice import choose_backend
from operators.wsi.slide.dicom_source import scan_dicom_slide_folder
from operators.wsi.slide.reader import open_slide
from operators.wsi.slide.tiff_inspection import inspect_tiff
from tests.wsi_factories import write_pyramid


def test_cucim_is_not_used_where_it_misreads(tmp_path, tissue):
    """cuCIM 23.10 returns garbage for deflate with a horizontal predictor: auto must avoid it, forcing it must refuse."""
    path = tmp_path / "predictor.tif"
    write_pyramid(path, tissue, compression="zlib", predictor=True)
    with open_slide(path) as slide:
        assert slide.backend == "openslide"
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (300, 200)), tissue[:200, :300])
    with pytest.raises(SlideReadError, match="predictor"):
        open_slide(path, backend="cucim")


@pytest.mark.skipif(backend_choice.PREFER_CUCIM, reason="auto prefers cuCIM where it reads correctly")
@pytest.mark.parametrize(("kind", "expected"), [("svs", "openslide"), ("vips", "openslide"), ("untiled", "tifffile")])
def test_auto_takes_openslide_and_tifffile_only_for_what_openslide_refuses(real_slides, untiled, kind, expected):
    path = untiled[0] if kind == "untiled" else real_slides[kind]
    backend = choose_backend(path, "auto", inspect_tiff(path))
    try:
        assert backend.name == expected
    finally:
        backend.close()


def test_a_jpeg_dicom_wsi_is_read_by_openslide(dicom_wsi):
    dicom = scan_dicom_slide_folder(dicom_wsi)
    for request in ("cucim", "tifffile"):
        with pytest.raises(SlideReadError, match=f"read with OpenSlide or wsidicom only, not {request}"):
            choose_backend(dicom_wsi, request, None, dicom)
    backend = choose_backend(dicom_wsi, "auto", None, dicom)
    backend.close()
    assert backend.name == "openslide"


def test_a_file_no_backend_reads_is_refused_with_every_reason(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a slide\n")
    with pytest.raises(SlideReadError, match="not a whole-slide image .*OpenSlide does not recognise the format"):
        choose_backend(path, "auto", None)
    with pytest.raises(SlideReadError, match="not a TIFF, so the tifffile backend cannot read it"):
        choose_backend(path, "tifffile", None)
