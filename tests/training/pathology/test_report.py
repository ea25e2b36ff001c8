"""The evaluation report's pure parts: size classes, false-positive selection, the FROC plot's geometry and pixels, the gallery."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.pathology.froc_scoring import FP_RATES, froc_curve, sensitivities_at
from training.pathology.report import (
    GALLERY_COLUMNS,
    LABEL_PX,
    TILE_PX,
    FalsePositive,
    PlotArea,
    curve_to_pixels,
    draw_gallery,
    fps_axis_max,
    gallery_size_xy,
    gallery_tiles,
    lesion_rows,
    plot_froc_curves,
    read_sensitivity,
    select_false_positives,
    size_class,
    size_class_summary,
)


@pytest.mark.parametrize(
    ("major_axis_um", "is_itc", "expected"),
    [
        (100.0, True, "itc"),
        (274.0, True, "itc"),
        (275.0, False, "micro"),  # 200 um once the 75 um growth is taken off: the smallest micro-metastasis
        (274.99, False, "micro"),  # not an ITC by the evaluation's flag: never "itc" by rounding
        (2075.0, False, "micro"),  # 2 mm ungrown: still micro
        (2075.5, False, "macro"),
        (5000.0, False, "macro"),
    ],
)
def test_size_class_follows_the_itc_flag_and_camelyon16_limits_on_the_ungrown_axis(major_axis_um, is_itc, expected):
    assert size_class(major_axis_um, is_itc) == expected


def _report(slides: list[dict], mpp: float = 0.243, level: int = 5) -> dict:
    return {"mpp": mpp, "level": level, "slides": slides}


def _lesion(label: int, axis_px: float, is_itc: bool = False, detected: bool = True) -> dict:
    return {
        "label": label,
        "is_itc": is_itc,
        "major_axis_px": axis_px,
        "centroid_xy_level0": [100.0 * label, 50.0],
        "detected": detected,
        "max_probability": 0.9 if detected else None,
    }


@pytest.mark.parametrize(
    ("level", "axis_px", "axis_um", "expected_class"),
    [(5, 40.0, 311.0, "micro"), (6, 40.0, 622.1, "micro"), (5, 300.0, 2332.8, "macro"), (0, 1000.0, 243.0, "micro")],
)
def test_lesion_rows_convert_the_evaluation_level_axis_to_um(level, axis_px, axis_um, expected_class):
    (row,) = lesion_rows(_report([{"slide": "s", "lesions": [_lesion(1, axis_px)], "false_positives": {}}], level=level))
    assert row.major_axis_um == pytest.approx(axis_um, abs=0.1)
    assert row.size_um == pytest.approx(axis_um - 75.0, abs=0.1)  # no longest diameter in the report: the major axis
    assert (row.size_class, row.centroid_x_level0, row.centroid_y_level0) == (expected_class, 100.0, 50.0)


def test_the_size_class_reads_the_longest_diameter_where_the_report_has_it():
    lesion = {**_lesion(1, 200.0), "longest_diameter_px": 270.0}  # an elongated 2.0 mm lesion: ellipse axis 1.48 mm
    (row,) = lesion_rows(_report([{"slide": "s", "lesions": [lesion], "false_positives": {}}]))
    assert row.size_class == "macro" and row.size_um == pytest.approx(270 * 0.243 * 32 - 75.0, abs=0.1)
    assert row.major_axis_um == pytest.approx(200 * 0.243 * 32, abs=0.1)


def test_size_class_summary_counts_found_and_total_per_class():
    slides = [
        {"slide": "a", "lesions": [_lesion(1, 30.0, is_itc=True, detected=False), _lesion(2, 40.0), _lesion(3, 40.0, detected=False)]},
        {"slide": "b", "lesions": [_lesion(1, 300.0)]},
    ]
    summary = size_class_summary(lesion_rows(_report(slides)))
    assert summary == {"itc": {"found": 0, "total": 1}, "micro": {"found": 1, "total": 2}, "macro": {"found": 1, "total": 1}}


def _fp_slide(name: str, probabilities: list[float]) -> dict:
    n = len(probabilities)
    return {
        "slide": name,
        "lesions": [],
        "false_positives": {"probability": probabilities, "x_level0": list(range(n)), "y_level0": [7] * n},
    }


@pytest.mark.parametrize(
    ("slides", "top_n", "expected"),
    [
        ([_fp_slide("a", [0.2, 0.9]), _fp_slide("b", [0.5])], 24, [("a", 0.9, 1), ("b", 0.5, 0), ("a", 0.2, 0)]),
        ([_fp_slide("a", [0.2, 0.9]), _fp_slide("b", [0.5])], 2, [("a", 0.9, 1), ("b", 0.5, 0)]),
        (
            [_fp_slide("a", [0.5]), _fp_slide("b", [0.5, 0.5])],
            3,
            [("a", 0.5, 0), ("b", 0.5, 0), ("b", 0.5, 1)],
        ),  # ties: slide, then CSV order
        ([_fp_slide("a", []), _fp_slide("b", [])], 24, []),
        ([_fp_slide("a", [0.3])], 0, []),
    ],
)
def test_select_false_positives_takes_the_most_probable_across_slides(slides, top_n, expected):
    chosen = select_false_positives(_report(slides), top_n)
    assert [(fp.slide, fp.probability, fp.x_level0) for fp in chosen] == expected
    assert all(fp.y_level0 == 7 for fp in chosen)


def test_select_false_positives_rejects_a_negative_count():
    with pytest.raises(ValueError, match="top_n"):
        select_false_positives(_report([]), -1)


AREA = PlotArea(100, 50, 600, 400, 0.125, 8.0)


@pytest.mark.parametrize(
    ("fps", "sensitivity", "xy_px"),
    [
        (0.125, 0.0, (100, 450)),
        (8.0, 1.0, (700, 50)),
        (1.0, 0.5, (400, 250)),  # log2: 1 is half-way between 1/8 and 8
        (0.25, 0.25, (200, 350)),
        (0.0, 1.0, (100, 50)),  # no FP: clipped to the axis' left edge
        (64.0, 1.5, (700, 50)),  # beyond the axis: clipped
    ],
)
def test_curve_to_pixels_maps_log2_fp_rates_and_sensitivity(fps, sensitivity, xy_px):
    np.testing.assert_allclose(curve_to_pixels([fps], [sensitivity], AREA), [xy_px])


@pytest.mark.parametrize(("largest", "expected"), [(0.0, 8.0), (3.0, 8.0), (8.0, 8.0), (9.0, 16.0), (100.0, 128.0)])
def test_fps_axis_max_is_eight_or_the_next_power_of_two(largest, expected):
    assert fps_axis_max([{"curve": {"fps_per_slide": [largest, 0.0]}}]) == expected


def _froc_report(fp_probabilities, lesion_probabilities, n_slides) -> dict:
    curve = froc_curve(np.asarray(fp_probabilities), np.asarray(lesion_probabilities, np.float32), len(lesion_probabilities), n_slides)
    sens = sensitivities_at(curve)
    return {
        "froc": float(np.mean(sens)),
        "fp_rates": list(FP_RATES),
        "sensitivity_at_fp_rates": {f"{r:g}": float(s) for r, s in zip(FP_RATES, sens, strict=True)},
        "n_slides": n_slides,
        "n_lesions": len(lesion_probabilities),
        "curve": {
            "threshold": [None if not np.isfinite(t) else float(t) for t in curve.thresholds],
            "fps_per_slide": curve.fps_per_slide.tolist(),
            "sensitivity": curve.sensitivity.tolist(),
        },
    }


def test_read_sensitivity_reads_the_json_curve_as_the_score_does():
    report = _froc_report([0.9, 0.6, 0.4, 0.3, 0.2, 0.1], [0.95, 0.5, 0.0, 0.35], n_slides=2)
    np.testing.assert_allclose(read_sensitivity(report, FP_RATES), list(report["sensitivity_at_fp_rates"].values()))


def test_froc_plot_draws_each_curve_where_the_score_reads_it(tmp_path):
    flat = _froc_report([0.4, 0.3, 0.2, 0.1], [0.5, 0.0], n_slides=1)  # one of two lesions, above every FP: 0.5 at every rate
    path = plot_froc_curves([("model", flat)], tmp_path / "froc.png", size_xy=(720, 480))
    with Image.open(path) as image:
        assert image.size == (720, 480)
        pixels = np.asarray(image.convert("RGB"))
    area = PlotArea(80, 40, 720 - 110, 480 - 100)
    ((x, y),) = curve_to_pixels([2.0], read_sensitivity(flat, [2.0]), area)
    assert tuple(pixels[round(y), round(x)]) == (0x1F, 0x77, 0xB4)  # the first curve's colour
    ((_, y_empty),) = curve_to_pixels([2.0], [0.1], area)
    assert tuple(pixels[round(y_empty), round(x)]) != (0x1F, 0x77, 0xB4)


def test_froc_plot_needs_a_curve(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        plot_froc_curves([], tmp_path / "froc.png")


@pytest.mark.parametrize(
    ("n", "size"),
    [
        (0, (TILE_PX, TILE_PX + LABEL_PX)),
        (3, (3 * TILE_PX, TILE_PX + LABEL_PX)),
        (GALLERY_COLUMNS + 1, (GALLERY_COLUMNS * TILE_PX, 2 * (TILE_PX + LABEL_PX))),
    ],
)
def test_gallery_size(n, size):
    assert gallery_size_xy(n) == size


def test_gallery_places_tiles_in_rows_and_greys_a_slide_it_cannot_find():
    fps = [FalsePositive("a", 0.9, 10.0, 10.0), FalsePositive("missing", 0.8, 5.0, 5.0)]
    red = np.zeros((TILE_PX, TILE_PX, 3), np.uint8)
    red[..., 0] = 255
    tiles = gallery_tiles(fps[1:], {}, 500.0, TILE_PX, "auto")
    assert tiles == [(fps[1], None)]
    image = np.asarray(draw_gallery([(fps[0], red), *tiles]))
    assert image.shape == (TILE_PX + LABEL_PX, 2 * TILE_PX, 3)
    assert tuple(image[5, 5]) == (255, 0, 0) and tuple(image[5, TILE_PX + 5]) == (0x88, 0x88, 0x88)
    assert (image[TILE_PX + 2 :, :TILE_PX] < 128).any()  # the label is written under the tile
