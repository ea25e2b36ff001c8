"""The Camelyon16 ASAP XML reader (groups, vertex order, decimal commas) and the polygon rasteriser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import polygon as sk_polygon

from training.pathology.annotations import rasterize_polygons, read_asap_xml

CAMELYON_STYLE_XML = """<?xml version="1.0"?>
<ASAP_Annotations>
\t<Annotations>
\t\t<Annotation Name="_0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="1" X="20" Y="10" />
\t\t\t\t<Coordinate Order="0" X="10,5" Y="10" />
\t\t\t\t<Coordinate Order="2" X="20" Y="20" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="_1" Type="Polygon" PartOfGroup="_2" Color="#F4FA58">
\t\t\t<Coordinates>
\t\t\t\t<Coordinate Order="0" X="1" Y="1" /><Coordinate Order="1" X="2" Y="1" /><Coordinate Order="2" X="2" Y="2" />
\t\t\t</Coordinates>
\t\t</Annotation>
\t\t<Annotation Name="dot" Type="Dot" PartOfGroup="_0" Color="#F4FA58">
\t\t\t<Coordinates><Coordinate Order="0" X="5" Y="5" /></Coordinates>
\t\t</Annotation>
\t</Annotations>
\t<AnnotationGroups />
</ASAP_Annotations>
"""


@pytest.mark.parametrize(("groups", "n"), [(None, 1), (["_2"], 1), (["_0", "_2"], 2), (["Tumor"], 0)])
def test_read_asap_xml_groups_order_and_decimal_commas(tmp_path: Path, groups: list[str] | None, n: int) -> None:
    path = tmp_path / "c16.xml"
    path.write_text(CAMELYON_STYLE_XML)
    polys = read_asap_xml(path, groups=groups)
    assert len(polys) == n
    if groups is None:
        np.testing.assert_allclose(polys[0], [[10.5, 10], [20, 10], [20, 20]])


@pytest.mark.parametrize(("seed", "downsample"), [(0, 1.0), (1, 2.0), (2, 0.5), (3, 3.0), (4, 1.0), (5, 7.0)])
def test_rasterize_polygons_matches_skimage(seed: int, downsample: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(5, 80, n)
    poly = np.stack([60 + r * np.cos(theta), 50 + r * np.sin(theta)], axis=1)
    x0, y0, w, h = -20.5, -10.25, 97, 83
    got = rasterize_polygons([poly], (x0, y0), (w, h), downsample)
    rr, cc = sk_polygon((poly[:, 1] - y0) / downsample - 0.5, (poly[:, 0] - x0) / downsample - 0.5, shape=(h, w))
    ref = np.zeros((h, w), np.uint8)
    ref[rr, cc] = 1
    assert np.array_equal(got, ref)


def test_rasterize_polygons_exclusions() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    hole = np.array([[4, 4], [6, 4], [6, 6], [4, 6]], float)
    m = rasterize_polygons([square], (0, 0), (12, 12), 1.0, exclusions=[hole])
    assert m.sum() == 100 - 4 and m[5, 5] == 0 and m[1, 1] == 1
