"""Evaluation report of one scored detections folder: FROC curve, per-lesion table, false-positive gallery.

:func:`write_report` takes a :func:`training.pathology.froc.evaluate` report (the official variant: level 5,
all slides) and writes into ``REPORT_DIR`` (``EVAL/report``)::

    froc_curve.png        sensitivity vs mean false positives per slide, log2 x axis from 0.125 to 8 (or the
                          data's maximum), markers at Camelyon16's six rates; one curve per (label, report) pair
    lesions.csv           one row per lesion of the evaluation mask: slide, label, size_class, size_um,
                          major_axis_um, centroid_x_level0, centroid_y_level0, detected, max_probability
    false_positives.csv   the top-N false positives by probability: rank, slide, probability, x_level0, y_level0
    false_positives.png   their gallery: a FP_FIELD_UM-wide field centred on each (cross at the detection),
                          read at about FP_FIELD_UM / TILE_PX um/px, labelled with slide and probability
    report.json           lesions found / total per size class, the false-positive count, what was drawn

Lesion sizes, from the lesion's region in the evaluation mask (regionprops at the evaluation level, times its
pixel size ``mpp * 2**level``), which includes the official 75 um growth (:mod:`.evaluation_masks`):
``major_axis_um`` is the ellipse-fit major axis the official ITC rule compares with 275 um; ``size_um`` is the
longest diameter (max Feret, Camelyon16's size rule) less the 75 um growth. ``size_class`` is ``itc`` where the
evaluation marks the region an ITC, else :func:`training.synthetic.wsi_placement.tumor_category` of ``size_um``
(micro 0.2-2 mm, macro > 2 mm); reports without a longest diameter fall back to the major axis. ITCs are not
scored, so their ``detected`` is always false.

The plots are drawn with Pillow (pinned already) by the small plotter below, so that the report adds no
dependency (matplotlib is not one).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from operators.wsi.slide.backend_choice import BackendRequest
from operators.wsi.slide.reader import open_slide
from training.pathology.evaluation_masks import GROW_DISTANCE_UM, level_downsample
from training.pathology.froc_scoring import FP_RATES, FrocCurve, sensitivities_at
from training.provenance import write_json
from training.synthetic.wsi_placement import tumor_category

logger = logging.getLogger(__name__)

SizeClass = Literal["itc", "micro", "macro"]
SIZE_CLASSES: tuple[SizeClass, ...] = ("itc", "micro", "macro")
TOP_FALSE_POSITIVES = 24
FP_FIELD_UM = 500.0  # side of the field shown around each false positive
TILE_PX = 160
LABEL_PX = 30
GALLERY_COLUMNS = 6
FPS_AXIS_MIN = 0.125
FPS_AXIS_MAX = 8.0
PLOT_SIZE_XY = (720, 480)
CURVE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
LESION_COLUMNS = (
    "slide",
    "label",
    "size_class",
    "size_um",
    "major_axis_um",
    "centroid_x_level0",
    "centroid_y_level0",
    "detected",
    "max_probability",
)


# ---------------------------------------------------------------- lesions


def size_class(grown_diameter_um: float, is_itc: bool) -> SizeClass:
    """Camelyon16 size class of an evaluation-mask region whose (grown) longest diameter is ``grown_diameter_um`` (module docstring)."""
    if is_itc:
        return "itc"
    category = tumor_category(grown_diameter_um - GROW_DISTANCE_UM)
    return "micro" if category == "itc" else category  # type: ignore[return-value]  # "itc" only at the float boundary


@dataclass(frozen=True)
class LesionRow:
    slide: str
    label: int
    size_class: SizeClass
    size_um: float  # longest diameter less the evaluation's growth
    major_axis_um: float  # ellipse fit, grown: the official ITC rule's
    centroid_x_level0: float
    centroid_y_level0: float
    detected: bool
    max_probability: float | None


def lesion_rows(report: Mapping[str, Any]) -> list[LesionRow]:
    """One row per lesion of every slide of a FROC report, sizes converted with the report's ``mpp`` and ``level``."""
    um_per_px = float(report["mpp"]) * level_downsample(int(report["level"]))
    rows = []
    for slide in report["slides"]:
        for lesion in slide["lesions"]:
            axis_um = float(lesion["major_axis_px"]) * um_per_px
            diameter_um = float(lesion.get("longest_diameter_px", lesion["major_axis_px"])) * um_per_px
            x, y = lesion["centroid_xy_level0"]
            rows.append(
                LesionRow(
                    slide["slide"],
                    int(lesion["label"]),
                    size_class(diameter_um, bool(lesion["is_itc"])),
                    round(diameter_um - GROW_DISTANCE_UM, 1),
                    round(axis_um, 1),
                    float(x),
                    float(y),
                    bool(lesion["detected"]),
                    lesion["max_probability"],
                )
            )
    return rows


def size_class_summary(rows: Sequence[LesionRow]) -> dict[SizeClass, dict[str, int]]:
    """``{size class: {"found": n, "total": n}}`` over the lesion rows (every class present, possibly 0 / 0)."""
    return {
        c: {"found": sum(r.detected for r in rows if r.size_class == c), "total": sum(r.size_class == c for r in rows)}
        for c in SIZE_CLASSES
    }


# ---------------------------------------------------------------- false positives


@dataclass(frozen=True)
class FalsePositive:
    slide: str
    probability: float
    x_level0: float
    y_level0: float


def select_false_positives(report: Mapping[str, Any], top_n: int = TOP_FALSE_POSITIVES) -> list[FalsePositive]:
    """The ``top_n`` false positives of a FROC report by decreasing probability (ties: slide order, then CSV order)."""
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    found = [
        FalsePositive(slide["slide"], float(p), float(x), float(y))
        for slide in report["slides"]
        for p, x, y in zip(*(slide["false_positives"][k] for k in ("probability", "x_level0", "y_level0")), strict=True)
    ]
    return sorted(found, key=lambda fp: -fp.probability)[:top_n]


def read_field(
    slide_path: Path, centres: Sequence[FalsePositive], field_um: float, tile_px: int, backend: BackendRequest
) -> list[np.ndarray]:
    """(tile_px, tile_px, 3) RGB of a ``field_um``-wide square centred on each point, from one slide."""
    with open_slide(slide_path, None, backend) as slide:
        downsample = max(1.0, field_um / float(np.mean(slide.mpp_xy)) / tile_px)
        half = 0.5 * tile_px * downsample
        return [slide.read_at_downsample((fp.x_level0 - half, fp.y_level0 - half), downsample, (tile_px, tile_px)) for fp in centres]


def gallery_size_xy(n: int, columns: int = GALLERY_COLUMNS, tile_px: int = TILE_PX) -> tuple[int, int]:
    """(width, height) of a gallery of ``n`` tiles (one empty tile when ``n`` is 0)."""
    cols = max(1, min(columns, n))
    return cols * tile_px, max(1, math.ceil(n / cols)) * (tile_px + LABEL_PX)


def draw_gallery(
    tiles: Sequence[tuple[FalsePositive, np.ndarray | None]], columns: int = GALLERY_COLUMNS, tile_px: int = TILE_PX
) -> Image.Image:
    """The tiles in rows of ``columns``, each labelled with its slide and probability; a missing image is grey."""
    image = Image.new("RGB", gallery_size_xy(len(tiles), columns, tile_px), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11)
    if not tiles:
        draw.text((8, tile_px // 2), "no false positives", fill="black", font=font)
    cols = max(1, min(columns, len(tiles)))
    for i, (fp, pixels) in enumerate(tiles):
        x0, y0 = (i % cols) * tile_px, (i // cols) * (tile_px + LABEL_PX)
        tile = Image.fromarray(pixels) if pixels is not None else Image.new("RGB", (tile_px, tile_px), "#888888")
        image.paste(tile.resize((tile_px, tile_px)), (x0, y0))
        c, arm = tile_px // 2, tile_px // 16
        draw.line([(x0 + c - arm, y0 + c), (x0 + c + arm, y0 + c)], fill="#00ff00", width=1)
        draw.line([(x0 + c, y0 + c - arm), (x0 + c, y0 + c + arm)], fill="#00ff00", width=1)
        draw.text((x0 + 3, y0 + tile_px + 2), f"{i + 1}. {fp.slide}", fill="black", font=font)
        draw.text((x0 + 3, y0 + tile_px + 15), f"p={fp.probability:.3f} ({fp.x_level0:.0f}, {fp.y_level0:.0f})", fill="black", font=font)
    return image


def gallery_tiles(
    fps: Sequence[FalsePositive], slide_paths: Mapping[str, Path], field_um: float, tile_px: int, backend: BackendRequest
) -> list[tuple[FalsePositive, np.ndarray | None]]:
    """Each false positive with its field, each slide opened once; None for a slide not in ``slide_paths``."""
    pixels: dict[int, np.ndarray] = {}
    for slide in sorted({fp.slide for fp in fps}):
        index = [i for i, fp in enumerate(fps) if fp.slide == slide]
        if slide not in slide_paths:
            logger.warning("%s: slide file unknown; its false positives are shown grey", slide)
            continue
        pixels.update(zip(index, read_field(Path(slide_paths[slide]), [fps[i] for i in index], field_um, tile_px, backend), strict=True))
    return [(fp, pixels.get(i)) for i, fp in enumerate(fps)]


# ---------------------------------------------------------------- FROC plot


@dataclass(frozen=True)
class PlotArea:
    """The axes' box in image pixels and their ranges: mean FPs per slide (log2) on x, sensitivity 0..1 on y."""

    left_px: float
    top_px: float
    width_px: float
    height_px: float
    fps_min: float = FPS_AXIS_MIN
    fps_max: float = FPS_AXIS_MAX


def fps_axis_max(curves: Sequence[Mapping[str, Any]], floor: float = FPS_AXIS_MAX) -> float:
    """Right end of the x axis: ``floor``, or the next power of two above the curves' largest mean FP count."""
    largest = max((max(c["curve"]["fps_per_slide"], default=0.0) for c in curves), default=0.0)
    return float(max(floor, 2.0 ** math.ceil(math.log2(largest)) if largest > 0 else floor))


def curve_to_pixels(fps_per_slide: Sequence[float], sensitivity: Sequence[float], area: PlotArea) -> np.ndarray:
    """(n, 2) image (x, y) pixels of operating points; FP rates are clipped to the axis, so 0 lands on its left edge."""
    lo, hi = math.log2(area.fps_min), math.log2(area.fps_max)
    fps = np.clip(np.asarray(fps_per_slide, np.float64), area.fps_min, area.fps_max)
    x = area.left_px + area.width_px * (np.log2(fps) - lo) / (hi - lo)
    y = area.top_px + area.height_px * (1.0 - np.clip(np.asarray(sensitivity, np.float64), 0.0, 1.0))
    return np.stack([x, y], axis=1).reshape(-1, 2)


def read_sensitivity(report: Mapping[str, Any], fps_per_slide: Sequence[float] | np.ndarray) -> np.ndarray:
    """Sensitivity of a FROC report's curve at each mean FP rate, read as the score reads its six rates."""
    curve = report["curve"]
    thresholds = np.array([np.inf if t is None else t for t in curve["threshold"]], np.float64)
    froc_curve = FrocCurve(
        thresholds, np.asarray(curve["fps_per_slide"]), np.asarray(curve["sensitivity"]), report["n_slides"], report["n_lesions"]
    )
    return sensitivities_at(froc_curve, fps_per_slide)


def _draw_axes(draw: ImageDraw.ImageDraw, area: PlotArea, font: ImageFont.FreeTypeFont) -> None:
    left, top, right, bottom = area.left_px, area.top_px, area.left_px + area.width_px, area.top_px + area.height_px
    rate = area.fps_min
    while rate <= area.fps_max * (1 + 1e-9):
        ((x, _),) = curve_to_pixels([rate], [0.0], area)
        draw.line([(x, top), (x, bottom)], fill="#dddddd")
        draw.text((x, bottom + 4), f"{rate:g}", fill="black", font=font, anchor="mt")
        rate *= 2
    for sens in np.linspace(0, 1, 6):
        ((_, y),) = curve_to_pixels([area.fps_min], [sens], area)
        draw.line([(left, y), (right, y)], fill="#dddddd")
        draw.text((left - 6, y), f"{sens:.1f}", fill="black", font=font, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, bottom + 22), "mean false positives per slide", fill="black", font=font, anchor="mt")
    draw.text((12, (top + bottom) / 2), "sensitivity", fill="black", font=font, anchor="lm")


def plot_froc_curves(curves: Sequence[tuple[str, Mapping[str, Any]]], path: Path, size_xy: tuple[int, int] = PLOT_SIZE_XY) -> Path:
    """Draw each (label, FROC report) curve into one PNG; title: the first curve's FROC, legend: every curve's.

    A curve is drawn as the score reads it (:func:`read_sensitivity`: linear between operating points),
    with a marker at each of the report's FP rates.
    """
    if not curves:
        raise ValueError("no curves to plot")
    width, height = size_xy
    area = PlotArea(80, 40, width - 110, height - 100, fps_max=fps_axis_max([c for _, c in curves]))
    image = Image.new("RGB", size_xy, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    _draw_axes(draw, area, font)
    for i, (label, report) in enumerate(curves):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        fps = np.geomspace(area.fps_min, area.fps_max, 256)
        draw.line([tuple(p) for p in curve_to_pixels(fps, read_sensitivity(report, fps), area)], fill=colour, width=2)
        rates = [float(r) for r in report.get("fp_rates", FP_RATES)]
        for x, y in curve_to_pixels(rates, [report["sensitivity_at_fp_rates"][f"{r:g}"] for r in rates], area):
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour, outline="black")
        ly = area.top_px + area.height_px - 12 - 16 * (len(curves) - 1 - i)
        lx = area.left_px + area.width_px - 300
        draw.line([(lx, ly), (lx + 20, ly)], fill=colour, width=2)
        draw.text((lx + 26, ly), f"{label}: FROC {report['froc']:.3f}", fill="black", font=font, anchor="lm")
    draw.text((width / 2, 12), f"Camelyon16 FROC {curves[0][1]['froc']:.3f} ({curves[0][0]})", fill="black", font=font, anchor="mt")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# ---------------------------------------------------------------- the report folder


def _write_rows(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(rows)


def write_report(
    report_dir: Path,
    report: Mapping[str, Any],
    slide_paths: Mapping[str, Path],
    curves: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
    top_n: int = TOP_FALSE_POSITIVES,
    backend: BackendRequest = "auto",
) -> dict[str, Any]:
    """Write the report folder (module docstring) for a FROC report; ``curves`` default to that report alone.

    Returns report.json's content.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_froc_curves(list(curves) if curves else [(str(report["variant"]), report)], report_dir / "froc_curve.png")
    rows = lesion_rows(report)
    _write_rows(report_dir / "lesions.csv", LESION_COLUMNS, [tuple(asdict(r).values()) for r in rows])
    fps = select_false_positives(report, top_n)
    _write_rows(
        report_dir / "false_positives.csv",
        ("rank", "slide", "probability", "x_level0", "y_level0"),
        [(i + 1, fp.slide, fp.probability, fp.x_level0, fp.y_level0) for i, fp in enumerate(fps)],
    )
    draw_gallery(gallery_tiles(fps, slide_paths, FP_FIELD_UM, TILE_PX, backend)).save(report_dir / "false_positives.png")
    summary = {
        "variant": report["variant"],
        "level": report["level"],
        "froc": report["froc"],
        "lesions_by_size_class": size_class_summary(rows),
        "size_class_rule": "itc: the evaluation's ITC flag; else tumor_category(longest diameter - 75 um growth): micro 200 um-2 mm, macro > 2 mm",
        "itc_scored": False,
        "n_false_positives": report["n_false_positives"],
        "false_positive_gallery": {"shown": len(fps), "top_n": top_n, "field_um": FP_FIELD_UM, "tile_px": TILE_PX},
        "curves": [label for label, _ in curves] if curves else [str(report["variant"])],
    }
    write_json(report_dir / "report.json", summary)
    logger.info(
        "report: %s lesions found per size class, %d false positives shown -> %s", summary["lesions_by_size_class"], len(fps), report_dir
    )
    return summary
