"""Evaluation masks: growth radius, ITC rule, hole filling, connectivity, ground-truth readers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from training.pathology.evaluation_masks import (
    GroundTruthFile,
    block_centres,
    describe_lesions,
    find_ground_truth,
    growth_radius_px,
    itc_labels,
    itc_threshold_px,
    label_evaluation_mask,
    rasterize_xml_at_level,
    read_mask_tiff_at_level,
)
from training.synthetic.wsi_annotations import write_asap_xml

from . import official_transcription as official


@pytest.mark.parametrize(
    ("mpp", "level", "expected"),
    [
        (0.243, 5, 75 / (0.243 * 32 * 2)),  # 4.8225: the official level
        (0.243, 6, 75 / (0.243 * 64 * 2)),  # 2.4113: the bundle's level
        (0.243, 0, 75 / (0.243 * 2)),  # 154.32
        (0.25, 5, 4.6875),
        (0.5, 2, 18.75),
    ],
)
def test_growth_radius_px(mpp: float, level: int, expected: float) -> None:
    assert growth_radius_px(mpp, level) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("mpp", "level", "expected"),
    [
        (0.243, 5, 35.3652263),  # the official comment's 35.36 px
        (0.243, 6, 17.6826132),
        (0.25, 5, 34.375),
        (0.5, 0, 550.0),
    ],
)
def test_itc_threshold_px(mpp: float, level: int, expected: float) -> None:
    assert itc_threshold_px(mpp, level) == pytest.approx(expected, rel=1e-7)


def _disk(shape: tuple[int, int], centre_rc: tuple[float, float], radius: float) -> np.ndarray:
    r, c = np.ogrid[: shape[0], : shape[1]]
    return (r - centre_rc[0]) ** 2 + (c - centre_rc[1]) ** 2 <= radius**2


@pytest.mark.parametrize(
    ("side_px", "is_itc"),
    [
        (1, True),  # grown to a ~9.6 px disk
        (20, True),  # square 20 + 2 x 4.8 ~ 29.6 -> major axis ~ 33 < 35.37
        (22, True),  # major axis 34.23
        (23, False),  # major axis 35.39: just above the limit
        (24, False),  # ~ 33.6 -> major axis ~ 38 > 35.37
        (40, False),
    ],
)
def test_itc_rule_on_squares_at_level_5(side_px: int, is_itc: bool) -> None:
    tumor = np.zeros((100, 100), bool)
    tumor[30 : 30 + side_px, 30 : 30 + side_px] = True
    labels = label_evaluation_mask(tumor, 0.243, 5)
    assert labels.max() == 1
    assert itc_labels(labels, 0.243, 5) == ([1] if is_itc else [])
    (lesion,) = describe_lesions(labels, 0.243, 5)
    assert lesion.is_itc is is_itc
    assert (lesion.major_axis_px < 35.3652) is is_itc


def test_growth_is_strictly_below_the_radius() -> None:
    """Radius 4.82 at level 5: a background pixel 4 px from tumour joins it, one 5 px away does not."""
    tumor = np.zeros((40, 40), bool)
    tumor[20, 20] = True
    labels = label_evaluation_mask(tumor, 0.243, 5)
    assert labels[20, 24] == 1 and labels[20, 25] == 0
    assert labels[23, 23] == 1  # distance sqrt(18) = 4.24
    assert labels[24, 22] == 1  # sqrt(16 + 4) = 4.47
    assert labels[24, 23] == 0  # sqrt(16 + 9) = 5.0
    ref = official.evaluation_mask(np.where(tumor, 255, 0).astype(np.uint8), 0.243, 5)
    np.testing.assert_array_equal(labels, ref)


def test_holes_are_filled_and_regions_join_diagonally() -> None:
    """Tiny growth (mpp 75 um, level 0: radius 0.5 px, tumour pixels only) isolates the two rules."""
    tumor = np.zeros((12, 12), bool)
    tumor[1:6, 1:6] = True
    tumor[3, 3] = False  # a hole: filled
    tumor[6, 6] = True  # touches the square at a corner only: 8-connected, same label
    tumor[9, 9] = True  # separate
    labels = label_evaluation_mask(tumor, 75.0, 0)
    assert labels[3, 3] == labels[1, 1] == labels[6, 6] == 1
    assert labels[9, 9] == 2
    assert labels.max() == 2


def test_crop_gives_the_full_frame_result_on_random_masks() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        tumor = np.zeros(shape, bool)
        for _ in range(int(rng.integers(1, 5))):
            tumor |= _disk(shape, (rng.uniform(-5, shape[0] + 5), rng.uniform(-5, shape[1] + 5)), rng.uniform(0.5, 14))
        tumor[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = True
        for level in (5, 6):
            ref = official.evaluation_mask(np.where(tumor, 255, 0).astype(np.uint8), 0.243, level)
            ours = label_evaluation_mask(tumor, 0.243, level)
            np.testing.assert_array_equal(ours, ref)
            assert itc_labels(ours, 0.243, level) == official.itc_list(ref, 0.243, level)


def test_empty_mask_has_no_regions() -> None:
    assert label_evaluation_mask(np.zeros((10, 10), bool), 0.243, 5).max() == 0


@pytest.mark.parametrize(
    ("n", "d", "expected"),
    [
        (128, 32, [16, 48, 80, 112]),
        (100, 32, [16, 48, 80, 98]),  # last block 96..99: centre 98
        (33, 32, [16, 32]),
        (10, 32, [5]),
    ],
)
def test_block_centres(n: int, d: int, expected: list[int]) -> None:
    assert block_centres(n, d).tolist() == expected


def _level0_mask(w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[64:320, 96:200] = 255
    m[400:403, 10:12] = 255  # too small to be sampled at downsample 32
    return m


@pytest.mark.parametrize("layout", ["tiled", "strips", "pyramid"])
def test_mask_tiff_at_level(tmp_path, layout: str) -> None:
    w, h = 520, 450
    m = _level0_mask(w, h)
    path = tmp_path / "s_mask.tif"
    expected = m[np.ix_(block_centres(h, 32), block_centres(w, 32))] != 0
    with tifffile.TiffWriter(path) as tw:
        if layout == "tiled":
            tw.write(m, tile=(64, 64), compression="zlib")
        elif layout == "strips":
            tw.write(m, rowsperstrip=7)
        else:
            tw.write(m, tile=(64, 64), subfiletype=0)
            small = np.zeros((-(-h // 32), -(-w // 32)), np.uint8)
            small[0, 0] = 1  # differs from level 0 on purpose: the stored level must be the one read
            tw.write(small, subfiletype=1)
            expected = small != 0
    got = read_mask_tiff_at_level(path, 5)
    assert got.size_xy_level0 == (w, h)
    np.testing.assert_array_equal(got.tumor, expected)
    assert ("pyramid" in got.how) is (layout == "pyramid")


def test_xml_frame_from_extent_matches_slide_frame(tmp_path) -> None:
    square = np.array([[500, 500], [1500, 500], [1500, 1500], [500, 1500]], float)
    hole = np.array([[900, 900], [1100, 900], [1100, 1100], [900, 1100]], float)
    xml = write_asap_xml([square], tmp_path / "a.xml")
    extent = rasterize_xml_at_level(xml, 5)
    frame = rasterize_xml_at_level(xml, 5, slide_size_xy=(4096, 3000))
    assert frame.tumor.shape == (94, 128)  # ceil(3000 / 32), ceil(4096 / 32)
    h, w = extent.tumor.shape
    assert extent.tumor.sum() == frame.tumor.sum() > 0
    np.testing.assert_array_equal(frame.tumor[:h, :w], extent.tumor)
    np.testing.assert_array_equal(label_evaluation_mask(frame.tumor, 0.243, 5)[:h, :w], label_evaluation_mask(extent.tumor, 0.243, 5))
    # an exclusion group is subtracted
    import xml.etree.ElementTree as ET

    write_asap_xml([hole], tmp_path / "hole.xml", group="_2")
    tree = ET.parse(xml)
    extra = ET.parse(tmp_path / "hole.xml").getroot().find("Annotations")[0]
    tree.getroot().find("Annotations").append(extra)
    tree.write(tmp_path / "b.xml")
    with_hole = rasterize_xml_at_level(tmp_path / "b.xml", 5, slide_size_xy=(4096, 3000))
    assert with_hole.tumor.sum() < frame.tumor.sum() and not with_hole.tumor[31, 31]


def test_find_ground_truth_names_and_precedence(tmp_path) -> None:
    for name in ("test_001_mask.tif", "test_001.xml", "Tumor_002_Mask.tif", "test_003.xml", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_ground_truth(tmp_path)
    assert found == {
        "test_001": GroundTruthFile("test_001", tmp_path / "test_001_mask.tif", "mask"),
        "Tumor_002": GroundTruthFile("Tumor_002", tmp_path / "Tumor_002_Mask.tif", "mask"),
        "test_003": GroundTruthFile("test_003", tmp_path / "test_003.xml", "xml"),
    }
    (tmp_path / "test_001.tif").write_bytes(b"")
    with pytest.raises(ValueError, match="two mask"):
        find_ground_truth(tmp_path)
