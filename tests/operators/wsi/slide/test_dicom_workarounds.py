from __future__ import annotations

import numpy as np
import pytest

from operators.wsi.slide.backends import OpenSlideBackend
from operators.wsi.slide.dicom_source import scan_dicom_slide_folder
from operators.wsi.slide.dicom_workarounds import DicomLevelFixes, malformed_dicom_levels, work_around_dicom_levels
from operators.wsi.slide.reader import open_slide

DICOM_INSTANCE_LEVELS = [(2220, 2967), (1110, 1484), (555, 742), (278, 371), (139, 186)]  # wsidicomizer rounds up


def test_dicom_wsi_agrees_with_the_svs_it_was_made_from(svs, dicom_wsi, vips_pyramid, caplog):
    with open_slide(svs) as original, open_slide(dicom_wsi) as dicom, open_slide(vips_pyramid) as vips:
        assert "leaving out pyramid level 1 (1110, 1484), which OpenSlide cannot read: frame 31 is 240x120" in caplog.text
        assert "labelled RGB but hold YCbCr (JFIF) JPEG tiles" in caplog.text
        assert dicom.dicom_source.level_sizes_xy == tuple(DICOM_INSTANCE_LEVELS)
        assert dicom.mpp_xy == pytest.approx(original.mpp_xy)
        assert dicom.size_xy == original.size_xy
        assert dicom.mpp_source.startswith("DICOM PixelSpacing")
        # level 0: wsidicomizer copied the SVS's JPEG tiles, so pixels are identical
        for location in [(0, 0), (1000, 1500), (2000, 2700)]:
            np.testing.assert_array_equal(dicom.read_region(location, 0, (224, 224)), original.read_region(location, 0, (224, 224)))
        # the generated level 139x186 is labelled RGB though its JPEG is YCbCr: colours must match the SVS
        # box-filtered to the same scale, and libvips' own level 4
        ours = dicom.read_region((0, 0), 1, (139, 186)).astype(np.int16)
        reference = original.read_at_downsample((0, 0), 16, (139, 186)).astype(np.int16)
        assert np.abs(ours - reference).mean() < 8  # other resampling filter, 4:2:0 JPEG; false colours give ~60
        assert np.abs(ours.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 3
        assert np.abs(ours[:185, :138] - vips.read_region((0, 0), 4, (138, 185))).mean() < 8
        # the levels left out are computed from level 0
        for downsample in (2, 4, 8):
            size = (2220 // downsample, 2967 // downsample)
            np.testing.assert_array_equal(
                dicom.read_at_downsample((0, 0), downsample, size), original.read_at_downsample((0, 0), downsample, size)
            )


def test_the_fixes_found_once_are_applied_to_a_backend_opened_again(dicom_wsi):
    dicom = scan_dicom_slide_folder(dicom_wsi)
    checked = OpenSlideBackend(dicom.level0_path)
    again = OpenSlideBackend(dicom.level0_path)
    try:
        # wsidicomizer's generated levels 1110x1484, 555x742 and 278x371 have cropped edge frames
        assert sorted(malformed_dicom_levels(dicom_wsi, dicom, checked)) == [1, 2, 3]
        fixes = work_around_dicom_levels(dicom_wsi, dicom, checked)
        assert fixes == DicomLevelFixes(hidden_levels=frozenset({1, 2, 3}), ycbcr_levels=frozenset({1}))  # 139x186, once 3 are out
        raw = again.read_rgb((0, 0), 4, (139, 186))
        fixes.apply(again)
        assert again.level_sizes_xy == checked.level_sizes_xy == ((2220, 2967), (139, 186))
        fixed = again.read_rgb((0, 0), 1, (139, 186))
        np.testing.assert_array_equal(fixed, checked.read_rgb((0, 0), 1, (139, 186)))
        assert np.abs(fixed.astype(np.int16) - raw).mean() > 20  # the conversion changed the false colours
    finally:
        checked.close()
        again.close()
