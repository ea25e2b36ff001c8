"""Synthetic whole-slide generator: scene determinism and tiling independence, the TIFF as OpenSlide and
cuCIM read it, the mask and ASAP XML ground truth, and the Camelyon16-style dataset layout."""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import tifffile

from training.pathology.annotations import rasterize_polygons, read_asap_xml
from training.synthetic import wsi_slide
from training.synthetic.wsi_nuclei import LYMPHOCYTES, TUMOR_CELLS, measure_mean
from training.synthetic.wsi_scene import SlideScene
from training.synthetic.wsi_slide import (
    CAMELYON_MPP,
    DEFAULT_TUMOR_SIZES_UM,
    level_sizes,
    make_slide_scene,
    write_asap_xml,
    write_camelyon_like_dataset,
    write_ground_truth,
    write_slide,
)

SIZE = (4096, 3072)  # 1.0 x 0.75 mm: small enough to write in about a second
TUMORS_UM = (250.0, 60.0)  # one micro-metastasis, one isolated tumour cell cluster
SEED = 3


@pytest.fixture(scope="module")
def scene() -> SlideScene:
    return make_slide_scene(SIZE, SEED, TUMORS_UM)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tumour slide with its XML and mask, and a normal slide without pyramid, through the command line."""
    d = tmp_path_factory.mktemp("wsi")
    size = f"{SIZE[0]}x{SIZE[1]}"
    sizes = ",".join(str(s) for s in TUMORS_UM)
    assert wsi_slide.main([str(d / "tumor.tif"), "--size", size, "--seed", str(SEED), "--tumor-sizes", sizes]) == 0
    assert wsi_slide.main([str(d / "normal.tif"), "--size", size, "--seed", "4", "--normal", "--no-pyramid"]) == 0
    return {
        "tumor": d / "tumor.tif",
        "xml": d / "tumor.xml",
        "mask": d / "tumor_mask.tif",
        "normal": d / "normal.tif",
        "normal_xml": d / "normal.xml",
        "normal_mask": d / "normal_mask.tif",
    }


def _inside_point(poly: np.ndarray) -> tuple[float, float]:
    """A point well inside a (star-shaped about its centroid) lesion polygon."""
    c = poly.mean(axis=0)
    return float(c[0]), float(c[1])


# -- the scene ---------------------------------------------------------------------------------------


def test_same_seed_same_pixels_other_seed_other_pixels(scene: SlideScene) -> None:
    x, y = _inside_point(scene.tumors[0].polygon_xy)
    region, size = (x - 100, y - 80), (200, 160)
    again = make_slide_scene(SIZE, SEED, TUMORS_UM)
    assert np.array_equal(scene.render(region, size), again.render(region, size))
    other = make_slide_scene(SIZE, SEED + 1, TUMORS_UM)
    assert not np.array_equal(scene.render((1500, 1200), size), other.render((1500, 1200), size))


@pytest.mark.parametrize("downsample", [1.0, 2.0, 3.0, 16.0])
@pytest.mark.parametrize("sub", [(0, 0, 64, 48), (37, 55, 101, 73), (190, 130, 1, 1)])
def test_region_is_independent_of_tiling(scene: SlideScene, downsample: float, sub: tuple[int, int, int, int]) -> None:
    # a window straddling the tumour edge, so outlines, nests and both nucleus kinds are in it
    ex, ey = scene.tumors[0].polygon_xy[0]
    x0, y0 = ex - 96 * downsample, ey - 72 * downsample
    big = scene.render((x0, y0), (192, 144 if sub[1] < 100 else 192), downsample)
    ox, oy, w, h = sub
    part = scene.render((x0 + ox * downsample, y0 + oy * downsample), (w, h), downsample)
    assert np.array_equal(part, big[oy : oy + h, ox : ox + w])


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_low_level_approximates_the_downsampled_high_level(scene: SlideScene, factor: int) -> None:
    x, y = _inside_point(scene.tumors[0].polygon_xy)
    x0, y0 = x - 512, y - 512
    high = scene.render((x0, y0), (1024, 1024)).astype(np.float64)
    box = high.reshape(1024 // factor, factor, 1024 // factor, factor, 3).mean(axis=(1, 3))
    low = scene.render((x0, y0), (1024 // factor, 1024 // factor), float(factor)).astype(np.float64)
    assert np.abs(low.mean((0, 1)) - box.mean((0, 1))).max() < 8  # same colour (RGB means within 8 / 255)
    if factor <= 8:  # same picture while nuclei are resolved
        assert np.corrcoef(low[..., 1].ravel(), box[..., 1].ravel())[0, 1] > (0.9 if factor == 2 else 0.4)


def test_glass_around_the_tissue_is_one_exact_colour(scene: SlideScene) -> None:
    assert not scene.has_tissue((0, 0), (64, 64))
    glass = scene.render((0, 0), (64, 64))
    assert (glass == scene.glass_rgb_u8).all()
    assert 228 <= glass.min() and glass.max() <= 252


def test_tissue_looks_like_stained_tissue(scene: SlideScene) -> None:
    s = scene.sections[0].shape
    rgb = scene.render((s.centre_xy[0] - 256, s.centre_xy[1] - 256), (512, 512)).astype(np.float64)
    mean = rgb.mean((0, 1))
    assert mean.max() < 220 and mean[1] < mean[0] and mean[1] < mean[2]  # pink-purple: green absorbed most
    assert rgb.std() > 15  # textured (nuclei), not flat


def test_default_scene_has_macro_micro_and_itc_lesions_inside_tissue() -> None:
    scene = make_slide_scene((16384, 12288), 0)
    assert [t.category for t in scene.tumors] == ["macro", "micro", "micro", "itc"]
    for t, size in zip(scene.tumors, DEFAULT_TUMOR_SIZES_UM, strict=True):
        p = t.polygon_xy
        feret = math.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1).max()) * CAMELYON_MPP
        assert feret == pytest.approx(size, rel=0.02)
        x, y = _inside_point(p)
        assert scene.has_tissue((x, y), (1, 1))


def test_normal_scene_has_no_tumor(tmp_path: Path) -> None:
    scene = make_slide_scene(SIZE, 11, tumor_sizes_um=())
    assert not scene.is_tumor and scene.tumor_polygons == []
    xml, mask = write_ground_truth(scene, tmp_path / "n.xml", tmp_path / "n_mask.tif")
    assert read_asap_xml(xml) == []
    with tifffile.TiffFile(mask) as tf:
        assert not tf.pages[0].asarray().any()


def test_tumour_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        make_slide_scene(SIZE, 0, (2500.0,))


def test_dense_nucleus_layers_fade_to_their_measured_mean() -> None:
    for layer in (LYMPHOCYTES, TUMOR_CELLS):
        assert measure_mean(layer, cells=20) == pytest.approx(layer.mean_h, rel=0.08)


# -- the TIFF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "pyramid", "expected"),
    [
        ((16384, 12288), True, [(16384, 12288), (8192, 6144), (4096, 3072), (2048, 1536), (1024, 768), (512, 384)]),
        ((8192, 8192), True, [(8192, 8192), (4096, 4096), (2048, 2048), (1024, 1024), (512, 512)]),
        ((1000, 700), True, [(1000, 700)]),
        ((5000, 3001), True, [(5000, 3001), (2500, 1501), (1250, 751), (625, 376)]),
        ((16384, 12288), False, [(16384, 12288)]),
    ],
)
def test_level_sizes(size: tuple[int, int], pyramid: bool, expected: list[tuple[int, int]]) -> None:
    assert level_sizes(size, pyramid) == expected


def test_level_sizes_min_levels() -> None:
    assert len(level_sizes((4096, 3072), min_levels=7)) == 7
    assert level_sizes((4096, 3072), min_levels=7)[-1] == (64, 48)


def test_openslide_reads_the_pyramid_with_its_resolution(written: dict[str, Path], scene: SlideScene) -> None:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(written["tumor"])) as slide:
        assert openslide.OpenSlide.detect_format(str(written["tumor"])) == "generic-tiff"
        assert slide.level_count == len(level_sizes(SIZE)) > 1
        assert list(slide.level_dimensions) == level_sizes(SIZE)
        assert list(slide.level_downsamples) == pytest.approx([2.0**k for k in range(slide.level_count)])
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(CAMELYON_MPP, rel=1e-6)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(CAMELYON_MPP, rel=1e-6)
        x, y = _inside_point(scene.tumors[0].polygon_xy)
        for level in (0, 1):
            d = 2**level
            got = np.asarray(slide.read_region((int(x), int(y)), level, (128, 128)).convert("RGB"), np.float64)
            ref = scene.render((int(x), int(y)), (128, 128), float(d)).astype(np.float64)
            assert np.abs(got - ref).mean() < 4  # JPEG q90
        corner = np.asarray(slide.read_region((0, 0), 0, (32, 32)).convert("RGB"))
        assert np.abs(corner.astype(int) - scene.glass_rgb_u8).max() <= 2


def test_tiff_tags(written: dict[str, Path]) -> None:
    with tifffile.TiffFile(written["tumor"]) as tf:
        pages = tf.pages
        assert len(pages) == len(level_sizes(SIZE))
        for k, page in enumerate(pages):
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (256, 256)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = page.tags["XResolution"].value
            assert num / den == pytest.approx(1e4 / (CAMELYON_MPP * 2**k))
            assert page.tags["NewSubfileType"].value == (0 if k == 0 else 1)
        assert "Synthetic" in pages[0].description


def test_cucim_reads_a_region(written: dict[str, Path]) -> None:
    cucim = pytest.importorskip("cucim")
    openslide = pytest.importorskip("openslide")
    img = cucim.CuImage(str(written["tumor"]))
    assert img.resolutions["level_count"] == len(level_sizes(SIZE))
    assert img.spacing()[0] == pytest.approx(CAMELYON_MPP, rel=1e-5)
    region = np.asarray(img.read_region((1000, 900), (200, 150), level=1))
    with openslide.OpenSlide(str(written["tumor"])) as slide:
        ref = np.asarray(slide.read_region((1000, 900), 1, (200, 150)).convert("RGB"))
    assert region.shape == (150, 200, 3)
    assert np.abs(region.astype(int) - ref).max() <= 2


def test_no_pyramid_slide_has_one_level(written: dict[str, Path]) -> None:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(written["normal"])) as slide:
        assert slide.level_count == 1
        assert slide.level_dimensions[0] == SIZE
    with tifffile.TiffFile(written["normal"]) as tf:
        assert len(tf.pages) == 1
    assert read_asap_xml(written["normal_xml"]) == []


def test_glass_tiles_are_not_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = make_slide_scene((20480, 20480), 5, (), tissue_fraction=0.01)
    calls = []
    render = SlideScene.render
    monkeypatch.setattr(SlideScene, "render", lambda self, *a, **k: calls.append(a) or render(self, *a, **k))
    write_slide(scene, tmp_path / "sparse.tif", workers=1)
    total = sum(math.ceil(w / 256) * math.ceil(h / 256) for w, h in level_sizes(scene.size_xy))
    assert 0 < len(calls) < 0.1 * total


# -- ground truth ------------------------------------------------------------------------------------


def test_mask_marks_the_tumour_polygons(written: dict[str, Path], scene: SlideScene) -> None:
    polygons = read_asap_xml(written["xml"])
    assert len(polygons) == len(TUMORS_UM)
    with tifffile.TiffFile(written["mask"]) as tf:
        assert len(tf.pages) == 7  # levels 0-6 always: FROC reads level 5, the bundle level 6
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        mask0 = tf.pages[0].asarray()
        assert mask0.shape == SIZE[::-1] and mask0.dtype == np.uint8
        for poly in polygons:
            x, y = _inside_point(poly)
            assert mask0[int(y), int(x)] == 1
        assert mask0[:50, :50].max() == 0 and mask0[-50:, -50:].max() == 0
        # the area is the polygons' area (shoelace)
        area = sum(0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))) for p in polygons)
        assert mask0.sum() == pytest.approx(area, rel=0.01)
        # each level is the polygons rasterised at its own scale
        for k in (2, 5):
            level = tf.pages[k].asarray()
            h, w = level.shape
            assert np.array_equal(level, rasterize_polygons(polygons, (0, 0), (w, h), 2.0**k))


def test_asap_xml_is_camelyon16_format_and_round_trips(tmp_path: Path, scene: SlideScene) -> None:
    path = write_asap_xml(scene.tumor_polygons, tmp_path / "a.xml")
    assert path.read_text().startswith('<?xml version="1.0"?>\n<ASAP_Annotations>')
    root = ET.parse(path).getroot()
    anns = root.findall("./Annotations/Annotation")
    assert [a.attrib for a in anns][0] == {"Name": "Annotation 0", "Type": "Polygon", "PartOfGroup": "Tumor", "Color": "#F4FA58"}
    first = anns[0].find("./Coordinates/Coordinate")
    assert first is not None and first.get("Order") == "0" and set(first.attrib) == {"Order", "X", "Y"}
    group = root.find("./AnnotationGroups/Group")
    assert group is not None and group.attrib == {"Name": "Tumor", "PartOfGroup": "None", "Color": "#00ff00"}
    back = read_asap_xml(path)
    assert len(back) == len(scene.tumors)
    for a, b in zip(back, scene.tumor_polygons, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


# -- dataset layout ----------------------------------------------------------------------------------


def test_camelyon_like_dataset_layout(tmp_path: Path) -> None:
    ds = write_camelyon_like_dataset(tmp_path, n_tumor=1, n_normal=1, n_test=2, size_xy_level0=(3072, 3072), seed=1)
    for rel in (
        "training/tumor/tumor_001.tif",
        "training/normal/normal_001.tif",
        "training/lesion_annotations/tumor_001.xml",
        "testing/images/test_001.tif",
        "testing/images/test_002.tif",
        "testing/reference.csv",
        "manifest.json",
    ):
        assert (tmp_path / rel).is_file(), rel
    assert not (tmp_path / "training" / "lesion_annotations" / "normal_001.xml").exists()
    with ds.reference_csv.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "type"]
    kinds = dict(rows[1:])
    assert sorted(kinds) == ["test_001", "test_002"] and sorted(kinds.values()) == ["Normal", "Tumor"]
    for name, kind in kinds.items():
        ref = tmp_path / "testing" / "reference"
        assert (ref / f"{name}.xml").exists() == (kind == "Tumor")
        assert (ref / f"{name}_mask.tif").exists() == (kind == "Tumor")
    assert len(read_asap_xml(ds.annotations[0])) >= 1
