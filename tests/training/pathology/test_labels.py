"""Patch labels from the centre 128 x 128 region of the tumor mask, and strip-wise tumor masks."""

from __future__ import annotations

import numpy as np
import pytest

from training.pathology.annotations import rasterize_polygons
from training.pathology.labels import centre_region_labels, read_annotations, tumor_mask
from training.synthetic.wsi_annotations import write_asap_xml

# a 100 x 100 tumor square, level-0 [1000, 1100) x [1000, 1100)
SQUARE = np.array([[1000, 1000], [1100, 1000], [1100, 1100], [1000, 1100]], np.float64)


@pytest.mark.parametrize(
    ("centre_xy", "expected"),
    [
        ((1050, 1050), True),  # centre inside the tumor
        ((1000 - 64 + 8, 1050), True),  # x region [880, 1008) reaches 8 px into the tumor
        ((1000 - 64 - 8, 1050), False),  # x region [864, 992) ends 8 px before it
        ((1100 + 64 - 8, 1050), True),  # tumor in the region's left 8 px
        ((1100 + 64 + 8, 1050), False),  # region starts 8 px right of the tumor
        ((1050, 1100 + 64 + 8), False),  # below, 8 px clear
        ((1000 - 56, 1000 - 56), True),  # diagonal: corners overlap by 8 x 8 px
        ((1000 - 72, 1000 - 72), False),  # diagonal: 8 px clear on both axes
        ((5000, 5000), False),  # far away
    ],
)
@pytest.mark.parametrize("level", [0, 2])
def test_centre_region_label_is_tumor_when_any_pixel_of_the_centre_128_is(centre_xy, expected, level):
    labels = centre_region_labels([SQUARE], np.array([centre_xy]), level, centre_px=128)
    assert labels.tolist() == [expected]


def test_centre_region_labels_equal_a_brute_force_level0_check_in_any_strip_size():
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    polygons = [
        np.c_[600 + 220 * np.cos(t) * (1 + 0.3 * np.sin(3 * t)), 500 + 160 * np.sin(t)],
        np.c_[1200 + 40 * np.cos(t), 1100 + 70 * np.sin(t)],
    ]
    mask = rasterize_polygons(polygons, (0, 0), (1600, 1600), 1.0)
    centres = np.random.default_rng(0).uniform(0, 1600, (1500, 2))
    first, stop = np.ceil(centres - 64 - 0.5).astype(int).clip(0), np.ceil(centres + 64 - 0.5).astype(int).clip(0)
    brute = [bool(mask[y0:y1, x0:x1].any()) for (x0, y0), (x1, y1) in zip(first, stop, strict=True)]
    for strip_pixels in (5_000, 1 << 22):
        assert centre_region_labels(polygons, centres, 0, 128, max_strip_pixels=strip_pixels).tolist() == brute
    assert 50 < sum(brute) < 1450


def test_exclusion_polygons_are_not_tumor_in_labels_or_masks(tmp_path):
    hole = np.array([[1030, 1030], [1070, 1030], [1070, 1070], [1030, 1070]], np.float64)
    xml = write_asap_xml([SQUARE], tmp_path / "slide.xml")
    text = xml.read_text().replace(
        "</Annotations>",
        '<Annotation Name="hole" Type="Polygon" PartOfGroup="_2"><Coordinates>'
        + "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(hole))
        + "</Coordinates></Annotation></Annotations>",
    )
    xml.write_text(text)
    polygons, exclusions = read_annotations(xml)
    assert len(polygons) == 1 and len(exclusions) == 1
    assert centre_region_labels(polygons, np.array([[1050, 1050]]), 0, centre_px=32, exclusions=exclusions).tolist() == [False]
    assert centre_region_labels(polygons, np.array([[1050, 1050]]), 0, centre_px=128, exclusions=exclusions).tolist() == [True]
    assert tumor_mask(polygons, (2048, 2048), 0, exclusions)[1050, 1050] == 0


def test_a_missing_annotation_file_gives_no_polygons(tmp_path):
    assert read_annotations(None) == ([], [])
    assert read_annotations(tmp_path / "absent.xml") == ([], [])


@pytest.mark.parametrize("level", [0, 3, 5])
def test_tumor_mask_in_strips_equals_one_rasterisation(level):
    size = (3000, 2000)
    mask = tumor_mask([SQUARE * 1.7], size, level, max_strip_pixels=777)
    downsample = 2**level
    whole = rasterize_polygons([SQUARE * 1.7], (0, 0), (-(-size[0] // downsample), -(-size[1] // downsample)), downsample)
    assert mask.shape == whole.shape == (-(-size[1] // downsample), -(-size[0] // downsample))
    assert np.array_equal(mask, whole) and mask.sum() > 0
