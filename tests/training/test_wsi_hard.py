"""The hard synthetic slides and benchmark: mimics, centres, folds, pen marks; the plain scene untouched; the fixed test set."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from training.pathology.annotations import read_asap_xml
from training.synthetic.camelyon_hard import (
    HARD_BENCHMARK_SEED,
    MACRO_SLIDE_SIZE_XY,
    ensure_hard_dataset,
    hard_tumor_sizes,
    plan_scene,
    plan_test_slides,
    write_hard_dataset,
)
from training.synthetic.wsi_artefacts import PenMark, SceneExtras, Stroke
from training.synthetic.wsi_hard import MIMIC_SIZE_UM, PEN_INKS, centre_stain, make_hard_scene
from training.synthetic.wsi_placement import TUMOR_GAP_UM, tumor_category
from training.synthetic.wsi_scene import CAMELYON_MPP, make_slide_scene

SIZE = (6144, 6144)
SEED = 11
TUMORS_UM = (400.0, 80.0)


@pytest.fixture(scope="module")
def hard():
    return make_hard_scene(SIZE, SEED, TUMORS_UM, "A")


def test_empty_extras_render_as_the_plain_scene() -> None:
    plain = make_slide_scene(SIZE, SEED, TUMORS_UM)
    same = dataclasses.replace(plain, extras=SceneExtras())
    cx, cy = plain.tumors[0].shape.centre_xy
    for origin, d in (((cx - 128, cy - 128), 1.0), ((0.0, 0.0), 16.0)):
        assert np.array_equal(plain.render(origin, (256, 256), d), same.render(origin, (256, 256), d))


def test_hard_scene_keeps_the_plain_layout_and_is_deterministic(hard) -> None:
    plain = make_slide_scene(SIZE, SEED, TUMORS_UM)
    assert [t.polygon_xy.tolist() for t in hard.tumors] == [t.polygon_xy.tolist() for t in plain.tumors]
    again = make_hard_scene(SIZE, SEED, TUMORS_UM, "A")
    assert again.extras.describe(CAMELYON_MPP) == hard.extras.describe(CAMELYON_MPP)
    assert np.array_equal(again.render((0, 0), (384, 384), 16), hard.render((0, 0), (384, 384), 16))
    other = make_hard_scene(SIZE, SEED + 1, TUMORS_UM, "A")
    assert not np.array_equal(other.render((0, 0), (384, 384), 16), hard.render((0, 0), (384, 384), 16))


def test_mimics_lie_in_tissue_and_far_from_every_tumour(hard) -> None:
    assert hard.extras.mimics, "every hard slide gets histiocyte aggregates"
    for size in hard.extras.mimic_major_um:
        assert MIMIC_SIZE_UM[0] <= size <= MIMIC_SIZE_UM[1]
    for mimic in hard.extras.mimics:
        outline = mimic.polygon_n(96)
        for tumor in hard.tumors:
            gap = np.sqrt(((outline[:, None, :] - tumor.polygon_xy[None, :, :]) ** 2).sum(-1)).min() * CAMELYON_MPP
            assert gap >= TUMOR_GAP_UM * 0.97  # polygons of 96 vertices: a few percent of chord error
        assert any(s.shape.depth_at(*np.array([mimic.centre_xy]).T)[0][0] > 0 for s in hard.sections)


def test_a_mimic_renders_as_large_pale_nuclei_where_lymphocytes_were(hard) -> None:
    mimic = hard.extras.mimics[0]
    cx, cy = mimic.centre_xy
    with_mimic = hard.render((cx - 32, cy - 32), (64, 64), 1.0)
    without = dataclasses.replace(hard, extras=dataclasses.replace(hard.extras, mimics=())).render((cx - 32, cy - 32), (64, 64), 1.0)
    assert not np.array_equal(with_mimic, without)
    assert with_mimic.mean() > without.mean()  # paler than the lymphocytes it replaces


@pytest.mark.parametrize(
    ("point_xy", "expected"),
    [((50.0, 0.0), 1.0), ((50.0, 10.0), 0.5), ((50.0, 30.0), 0.0), ((-10.0, 0.0), 0.5), ((200.0, 0.0), 0.0)],
)
def test_stroke_coverage_is_the_band_about_its_polyline(point_xy, expected) -> None:
    stroke = Stroke(np.array([[0.0, 0.0], [100.0, 0.0]]), width_px=20.0)
    cover = stroke.coverage(np.array([point_xy[0]]), np.array([point_xy[1]]), 1.0)
    assert cover.shape == (1, 1) and cover[0, 0] == pytest.approx(expected, abs=1e-6)


def test_pen_marks_show_on_glass_and_folds_darken_tissue(hard) -> None:
    plain = dataclasses.replace(hard, extras=SceneExtras())
    stroke = Stroke(np.array([[200.0, 200.0], [600.0, 200.0]]), 80.0)
    pen = dataclasses.replace(hard, extras=SceneExtras(pen_marks=(PenMark(stroke, PEN_INKS["green"], "green"),)))
    glass = plain.render((350, 150), (64, 64), 1.0)
    assert not plain.has_tissue((350, 150), (64, 64)) and (glass == plain.glass_rgb_u8).all()
    inked = pen.render((350, 150), (64, 64), 1.0)
    assert pen.has_tissue((350, 150), (64, 64)) and inked.mean() < glass.mean() - 20
    assert inked[..., 1].mean() > inked[..., 0].mean()  # green ink takes more red than green
    cx, cy = hard.sections[0].shape.centre_xy
    fold = Stroke(np.array([[cx - 500, cy], [cx + 500, cy]]), 200.0)
    folded = dataclasses.replace(hard, extras=SceneExtras(folds=(fold,)))
    assert folded.render((cx - 32, cy - 32), (64, 64), 1.0).mean() < plain.render((cx - 32, cy - 32), (64, 64), 1.0).mean()


def test_renders_do_not_depend_on_tiling_with_every_hard_case() -> None:
    scene = make_hard_scene(SIZE, SEED, TUMORS_UM, "B")
    x0, y0 = scene.extras.mimics[0].centre_xy
    whole = scene.render((x0, y0), (128, 64), 2.0)
    left, right = scene.render((x0, y0), (64, 64), 2.0), scene.render((x0 + 128, y0), (64, 64), 2.0)
    assert np.array_equal(whole, np.concatenate([left, right], axis=1))


def test_centre_b_stains_differently_and_unknown_centres_are_refused() -> None:
    a = [centre_stain(np.random.default_rng(i), "A") for i in range(20)]
    b = [centre_stain(np.random.default_rng(i), "B") for i in range(20)]
    # B's hematoxylin is bluer: a larger blue-channel share of its optical density
    assert np.mean([s.h_vector[2] for s in a]) > np.mean([s.h_vector[2] for s in b]) + 0.05
    with pytest.raises(ValueError, match="centre must be"):
        centre_stain(np.random.default_rng(0), "C")


def test_the_test_set_plan_is_balanced() -> None:
    plans = plan_test_slides(HARD_BENCHMARK_SEED)
    assert len(plans) == 24 and sum(p.tumor for p in plans) == 12
    for tumor in (True, False):
        assert sorted(p.centre for p in plans if p.tumor == tumor) == ["A"] * 6 + ["B"] * 6
    macro = [p for p in plans if p.macro]
    assert len(macro) == 2 and all(p.tumor and p.size_xy_level0 == MACRO_SLIDE_SIZE_XY for p in macro)
    assert {p.centre for p in macro} == {"A", "B"}
    with pytest.raises(ValueError, match="multiple of 4"):
        plan_test_slides(0, 10)


@pytest.mark.parametrize("seed", range(8))
def test_hard_tumour_sizes_are_micro_metastases_and_itcs(seed) -> None:
    sizes = hard_tumor_sizes(np.random.default_rng(seed))
    classes = [tumor_category(s) for s in sizes]
    assert 1 <= classes.count("micro") <= 3 and classes.count("itc") <= 1 and "macro" not in classes
    assert all(s <= 700 for s in sizes)


def test_the_macro_slides_hold_a_macro_metastasis() -> None:
    plan = next(p for p in plan_test_slides(HARD_BENCHMARK_SEED) if p.macro)
    scene, _ = plan_scene(plan, HARD_BENCHMARK_SEED)
    assert [t.category for t in scene.tumors] == ["macro", "micro"]


@pytest.mark.slow
def test_dataset_in_the_camelyon16_layout_with_a_manifest(tmp_path: Path) -> None:
    ds = write_hard_dataset(tmp_path / "hard", n_tumor=1, n_normal=0, n_test=4, n_macro=0, workers=1)
    manifest = json.loads(ds.manifest.read_text())
    assert [s["image"] for s in manifest["slides"]] == ["tumor_001", "test_001", "test_002", "test_003", "test_004"]
    assert all(s["hard_cases"]["centre"] in ("A", "B") for s in manifest["slides"])
    with ds.reference_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["type"] for r in rows) == ["Normal", "Normal", "Tumor", "Tumor"]
    for name, (xml, mask) in ds.test_references.items():
        entry = next(s for s in manifest["slides"] if s["image"] == name)
        polygons = read_asap_xml(xml)
        assert len(polygons) == len(entry["lesions"]) and mask.is_file()
        for polygon, lesion in zip(polygons, entry["lesions"], strict=True):
            assert math.isclose(float(polygon[:, 0].mean()), lesion["centroid_xy"][0], abs_tol=0.01)
    assert len(read_asap_xml(ds.annotations[0])) >= 1


def test_ensure_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("not a benchmark")
    with pytest.raises(FileExistsError, match="holds something other"):
        ensure_hard_dataset(tmp_path)
    assert not (tmp_path.parent / (tmp_path.name + ".partial")).exists()
