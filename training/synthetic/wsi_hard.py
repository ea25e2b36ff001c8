"""Hard synthetic lymph-node slides: what the published Camelyon16 error analyses name as hard, on top of the plain scene.

:func:`make_hard_scene` lays out the plain scene of :func:`.make_slide_scene` (sections, nodes,
tumours: the same for the same seed) and adds, from its own seeded draws:

- tumour mimics: aggregates of large pale epithelioid histiocytes (sinus histiocytosis, granulomas),
  120-600 um, inside the nodes and at least 180 um from every tumour (so that Camelyon16's 75 um
  growth never makes a detection on a mimic a hit); and reactive follicles (more and larger
  germinal centres); perinodal fat and the capsule are in every slide already;
- stain and scanner: centre ``A`` draws the training slides' stain model; centre ``B`` another
  hematoxylin and eosin hue and intensity and a scanner colour profile (a per-channel gamma,
  applied to the optical densities and the glass);
- focus: a quarter of the slides are out of focus (blur sigma 2-3.5 px instead of 0.6-1.4);
- tissue folds (a band where the section lies over itself), pen marks (green, blue or black marker
  on the coverslip, over glass and tissue), and a JPEG quality of 60-95 for the whole slide.

Everything is in level-0 pixels (x, y) at ``mpp``; sizes in micrometres are named ``_um``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from .wsi_artefacts import Centre, PenMark, SceneExtras, Stroke
from .wsi_geometry import StarShape, local_to_xy, lut_at
from .wsi_placement import TUMOR_GAP_UM, TissueSection, draw_position, fit_in_node, tumor_template
from .wsi_scene import CAMELYON_MPP, SlideScene, StainParams, make_slide_scene, random_stain

MIMIC_SIZE_UM = (120.0, 600.0)
REACTIVE_FOLLICLE_RADIUS_UM = (110.0, 220.0)
OUT_OF_FOCUS_FRACTION = 0.25
JPEG_QUALITIES = (60, 70, 80, 90, 95)
PEN_INKS = {"green": (0.6, 0.15, 0.5), "blue": (0.6, 0.4, 0.1), "black": (0.9, 0.9, 0.85)}
"""Optical density per RGB channel of each marker at full coverage."""


def centre_stain(rng: np.random.Generator, centre: Centre) -> StainParams:
    """A slide's stain model: centre A as the training slides (:func:`.random_stain`), centre B another lab and scanner."""
    if centre == "A":
        return random_stain(rng)
    if centre != "B":
        raise ValueError(f"centre must be 'A' or 'B', got {centre!r}")
    # another lab: bluer hematoxylin, a more orange eosin, stained darker
    h = np.array([0.66, 0.70, 0.30]) + rng.normal(0, 0.04, 3)
    e = np.array([0.12, 0.86, 0.46]) + rng.normal(0, 0.05, 3)
    h, e = np.clip(h, 0.05, None), np.clip(e, 0.05, None)
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    # another scanner: out = 255 (in / 255) ** gamma per channel, i.e. optical densities times gamma
    gamma = np.array([rng.uniform(0.8, 0.95), rng.uniform(1.0, 1.15), rng.uniform(0.85, 1.05)])
    glass = np.round(np.clip(rng.uniform(228, 242) + rng.normal(0, 4.0, 3) + np.array([4.0, 0.0, -6.0]), 215, 252))
    glass = np.round(255.0 * (glass / 255.0) ** gamma)
    h_scale, e_scale = rng.uniform(0.9, 1.6), rng.uniform(0.9, 1.7)
    h_od, e_od = h * gamma, e * gamma
    return StainParams(
        h_vector=tuple(float(v) for v in h_od / np.linalg.norm(h_od)),
        e_vector=tuple(float(v) for v in e_od / np.linalg.norm(e_od)),
        h_scale=float(h_scale * np.linalg.norm(h_od)),
        e_scale=float(e_scale * np.linalg.norm(e_od)),
        glass_rgb=tuple(float(v) for v in glass),
        blur_px=float(rng.uniform(0.6, 1.4)),
    )


def place_mimics(
    rng: np.random.Generator, sections: Sequence[TissueSection], avoid: Sequence[StarShape], mpp: float, count: int
) -> tuple[list[StarShape], list[float]]:
    """Up to ``count`` histiocyte aggregates inside the nodes, >= 180 um from ``avoid`` (the tumours) and each other."""
    placed = {i: (shape, shape.polygon_n(96)) for i, shape in enumerate(avoid)}
    sections = list(sections)
    shapes, sizes = [], []
    gap_px, margin_px = TUMOR_GAP_UM / mpp, 40 / mpp
    for _ in range(count):
        size = float(np.exp(rng.uniform(*np.log(MIMIC_SIZE_UM))))
        while size >= MIMIC_SIZE_UM[0]:  # smaller where a big one finds no room
            tpl = tumor_template(rng, size, mpp)
            r_in = float(tpl.lut.min()) * min(tpl.semi_axes_px)
            fit = None
            for _attempt in range(40):
                s, centre, angle = draw_position(rng, sections, tpl, False, margin_px)
                fit = fit_in_node(s, centre, angle, tpl, r_in, placed, gap_px, margin_px)
                if fit is not None:
                    break
            if fit is not None:
                placed[len(placed)] = fit
                shapes.append(fit[0])
                sizes.append(size)
                break
            size *= 0.75
    return shapes, sizes


def add_reactive_follicles(rng: np.random.Generator, section: TissueSection, mpp: float, count: int) -> TissueSection:
    """The section with up to ``count`` more, larger germinal centres anywhere in its node (not overlapping its follicles)."""
    follicles = [tuple(f) for f in section.follicles_xyr]
    node = StarShape(section.shape.centre_xy, section.shape.angle, section.shape.scale_xy, section.node_lut)
    added = 0
    for _ in range(30 * count):
        if added >= count:
            break
        th = rng.uniform(-np.pi, np.pi)
        r = rng.uniform(*REACTIVE_FOLLICLE_RADIUS_UM) / mpp
        fx, fy = local_to_xy(node, lut_at(section.node_lut, th) * math.sqrt(rng.uniform(0, 1)) * 0.9, th)
        if node.depth_at(np.array([fx]), np.array([fy]))[0][0] < r + section.capsule_px:
            continue
        if any(math.hypot(fx - gx, fy - gy) < r + gr + 30 / mpp for gx, gy, gr in follicles):
            continue
        follicles.append((fx, fy, r))
        added += 1
    return dataclasses.replace(section, follicles_xyr=np.array(follicles, np.float64).reshape(-1, 3))


def _random_polyline(rng: np.random.Generator, start_xy: tuple[float, float], length_px: float, n: int, wiggle: float) -> np.ndarray:
    heading = rng.uniform(0, 2 * np.pi)
    points = [np.asarray(start_xy, np.float64)]
    for _ in range(n - 1):
        heading += rng.normal(0, wiggle)
        points.append(points[-1] + length_px / (n - 1) * np.array([math.cos(heading), math.sin(heading)]))
    return np.stack(points)


def draw_folds(rng: np.random.Generator, sections: Sequence[TissueSection], mpp: float) -> list[Stroke]:
    """A fold across a section on a third of the slides: 40-120 um wide, 0.6-1.5 mm long."""
    if rng.uniform() >= 1 / 3:
        return []
    s = sections[int(rng.integers(len(sections)))]
    cx, cy = s.shape.centre_xy
    start = (cx + rng.normal(0, 0.3) * s.shape.scale_xy[0], cy + rng.normal(0, 0.3) * s.shape.scale_xy[1])
    line = _random_polyline(rng, start, rng.uniform(600, 1500) / mpp, 4, 0.25)
    return [Stroke(line - (line[-1] - line[0]) / 2, rng.uniform(40, 120) / mpp)]


def draw_pen_marks(rng: np.random.Generator, sections: Sequence[TissueSection], mpp: float) -> list[PenMark]:
    """Marker on a third of the slides: one or two strokes 100-300 um wide, starting near a section's edge."""
    if rng.uniform() >= 1 / 3:
        return []
    marks = []
    for _ in range(int(rng.integers(1, 3))):
        s = sections[int(rng.integers(len(sections)))]
        th = rng.uniform(-np.pi, np.pi)
        start = local_to_xy(s.shape, lut_at(s.shape.radius_lut, th) * rng.uniform(0.95, 1.1), th)
        colour = str(rng.choice(list(PEN_INKS)))
        line = _random_polyline(rng, start, rng.uniform(500, 1500) / mpp, 6, 0.35)
        marks.append(PenMark(Stroke(line, rng.uniform(100, 300) / mpp), PEN_INKS[colour], colour))
    return marks


def make_hard_scene(
    size_xy_level0: tuple[int, int],
    seed: int,
    tumor_sizes_um: Sequence[float],
    centre: Centre = "A",
    mpp: float = CAMELYON_MPP,
) -> SlideScene:
    """The plain scene of ``seed`` with the hard cases of the module docstring, all drawn from ``seed``.

    Raises:
        ValueError: when the tumours do not fit (as :func:`.make_slide_scene`) or ``centre`` is unknown.
    """
    plain = make_slide_scene(size_xy_level0, seed, tumor_sizes_um, mpp)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 0x4A2D])
    stain = centre_stain(rng, centre)
    out_of_focus = bool(rng.uniform() < OUT_OF_FOCUS_FRACTION)
    if out_of_focus:
        stain = dataclasses.replace(stain, blur_px=float(rng.uniform(2.0, 3.5)))
    node_area_mm2 = sum(math.pi * s.shape.scale_xy[0] * s.shape.scale_xy[1] for s in plain.sections) * (mpp / 1000) ** 2
    n_follicles = int(rng.integers(2, 4 + int(3 * node_area_mm2)))
    sections = [add_reactive_follicles(rng, s, mpp, max(1, n_follicles // len(plain.sections))) for s in plain.sections]
    n_mimics = int(rng.integers(3, 6 + int(4 * node_area_mm2)))
    mimics, mimic_sizes = place_mimics(rng, sections, [t.shape for t in plain.tumors], mpp, n_mimics)
    extras = SceneExtras(
        centre=centre,
        mimics=tuple(mimics),
        mimic_major_um=tuple(mimic_sizes),
        folds=tuple(draw_folds(rng, sections, mpp)),
        pen_marks=tuple(draw_pen_marks(rng, sections, mpp)),
        reactive_follicles=sum(len(s.follicles_xyr) - len(p.follicles_xyr) for s, p in zip(sections, plain.sections, strict=True)),
        jpeg_quality=int(rng.choice(JPEG_QUALITIES)),
        out_of_focus=out_of_focus,
    )
    return dataclasses.replace(plain, sections=tuple(sections), stain=stain, extras=extras)
