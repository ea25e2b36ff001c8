"""Layout of a synthetic slide: lymph-node sections and the metastases inside them (level-0 pixels).

Sections are star-shaped blobs placed on the slide without overlap, each with perinodal fat, a
capsule and follicles; tumours are star-shaped blobs of a prescribed max Feret diameter, placed
inside the nodes far enough apart that Camelyon16's evaluation (which grows each by 75 um) never
merges two. Everything is drawn from the ``rng`` it is given, in a fixed order.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from .wsi_geometry import LUT_N, StarShape, harmonic_lut, local_to_xy, lut_at
from .wsi_texture import F32

logger = logging.getLogger(__name__)

MACRO_MIN_UM = 2000.0
MICRO_MIN_UM = 200.0

TUMOR_GAP_UM = 180.0  # between lesions: Camelyon16's evaluation grows each by 75 um


@dataclass(frozen=True, eq=False)
class TissueSection:
    """One lymph-node section: outer outline (tissue edge), node outline (inside the perinodal fat), follicles."""

    shape: StarShape
    node_lut: np.ndarray = field(repr=False)  # node boundary radius LUT in the shape's local frame
    capsule_px: float = 80.0
    follicles_xyr: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3)))  # (n, 3): x, y, radius px


@dataclass(frozen=True, eq=False)
class TumorRegion:
    """A metastasis: a smooth blob whose polygon is its ground-truth annotation."""

    shape: StarShape
    major_axis_um: float  # max Feret diameter
    category: str  # "macro" | "micro" | "itc"
    polygon_xy: np.ndarray = field(repr=False)  # (n, 2) level-0 (x, y)


def tumor_category(major_axis_um: float) -> str:
    """Camelyon16 size classes: macro (> 2 mm), micro (0.2-2 mm), isolated tumour cells (< 0.2 mm)."""
    if major_axis_um > MACRO_MIN_UM:
        return "macro"
    if major_axis_um >= MICRO_MIN_UM:
        return "micro"
    return "itc"


def _make_section(
    rng: np.random.Generator, centre: tuple[float, float], semi_axes_px: tuple[float, float], angle: float, mpp: float, tight: bool
) -> TissueSection:
    """A lymph node of the given semi-axes (outer edge), with a variable fat rim, capsule and follicles.

    ``tight``: a rounder outline and a thin fat rim, for a node that must hold a big tumour.
    """
    outer = harmonic_lut(rng, 1.0, rng.uniform(0.04, 0.07) if tight else rng.uniform(0.10, 0.22))
    shape = StarShape(centre, angle, semi_axes_px, outer)
    # perinodal fat: thick on some sides, absent on others (as cut)
    theta = np.linspace(-np.pi, np.pi, LUT_N + 1)
    fat_um = rng.uniform(-150, 250) + sum(rng.uniform(80, 250) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
    fat_um = np.clip(fat_um, 0, 60 if tight else None)
    node_lut = np.maximum(outer - fat_um / mpp / min(semi_axes_px), 0.25 * outer).astype(F32)
    capsule_px = rng.uniform(15, 30) / mpp
    node_shape = StarShape(centre, angle, semi_axes_px, node_lut)
    # follicles in the cortex: 40-200 um below the capsule, 90-240 um radius, about one per 0.6 mm of perimeter
    follicles: list[tuple[float, float, float]] = []
    n_target = int(2 * math.pi * max(semi_axes_px) * mpp / 600)
    for _ in range(8 * n_target):
        if len(follicles) >= n_target:
            break
        th = rng.uniform(-np.pi, np.pi)
        fr = rng.uniform(90, 240) / mpp
        depth_px = capsule_px + fr + rng.uniform(40, 200) / mpp
        r_local = lut_at(node_lut, th) - depth_px / min(semi_axes_px)
        if r_local <= 0.2:
            continue
        fx, fy = local_to_xy(node_shape, r_local, th)
        if any(math.hypot(fx - gx, fy - gy) < fr + gr + 30 / mpp for gx, gy, gr in follicles):
            continue
        if node_shape.depth_at(np.array([fx]), np.array([fy]))[0][0] < fr + capsule_px:
            continue
        follicles.append((fx, fy, fr))
    return TissueSection(shape, node_lut, capsule_px, np.array(follicles, np.float64).reshape(-1, 3))


def place_sections(
    rng: np.random.Generator,
    W: int,
    H: int,
    mpp: float,
    tissue_fraction: float,
    first_semi_axes: tuple[float, float] | None,
    min_first_semi_axes: tuple[float, float] | None = None,
) -> list[TissueSection]:
    """1-3 sections covering about ``tissue_fraction`` of the slide.

    The first has at least ``first_semi_axes`` where the slide allows, and never less than
    ``min_first_semi_axes`` (ValueError when that does not fit).
    """
    n = int(rng.integers(1, 4))
    shares = np.sort(rng.dirichlet(np.full(n, 3.0)))[::-1]
    landscape = W >= H
    margin = 0.03 * min(W, H)
    sections: list[TissueSection] = []
    placed_discs: list[tuple[float, float, float]] = []
    for i, share in enumerate(shares):
        area = tissue_fraction * W * H * share
        aspect = rng.uniform(1.15, 1.6)
        a = math.sqrt(area * aspect / math.pi)
        b = a / aspect
        tight = i == 0 and first_semi_axes is not None and (first_semi_axes[0] > 0.8 * a or first_semi_axes[1] > 0.8 * b)
        grow = 1.1 if tight else 1.25  # harmonics reach out this far
        if i == 0 and first_semi_axes is not None:  # big enough for the largest tumour
            a, b = max(a, first_semi_axes[0]), max(b, first_semi_axes[1])
            if tight:  # rounder where the slide allows, leaving room for the other tumours
                b = max(b, min(a / 1.25, 0.97 * (min(W, H) / 2 - margin) / grow))
        # major axis along the slide's long side, +-20 degrees (0 for a tight fit)
        angle = (0.0 if landscape else math.pi / 2) + (0.0 if tight else rng.uniform(-0.35, 0.35))
        half_long, half_short = grow * a, grow * b
        ext_x, ext_y = (half_long, half_short) if landscape else (half_short, half_long)
        if tight and (ext_x > W / 2 - margin or ext_y > H / 2 - margin):
            # shrink to the slide, but never below what the tumour needs
            lim_x, lim_y = (W / 2 - margin) / grow, (H / 2 - margin) / grow
            lim_a, lim_b = (lim_x, lim_y) if landscape else (lim_y, lim_x)
            need_a, need_b = min_first_semi_axes or first_semi_axes
            if need_a > lim_a or need_b > lim_b:
                raise ValueError(
                    f"a {2 * need_a * mpp:.0f} x {2 * need_b * mpp:.0f} um lymph node for the largest tumour does not fit "
                    f"a {W * mpp:.0f} x {H * mpp:.0f} um slide; use a larger slide or smaller tumour_sizes_um"
                )
            a, b = min(a, lim_a), min(b, lim_b)
            half_long, half_short = grow * a, grow * b
            ext_x, ext_y = (half_long, half_short) if landscape else (half_short, half_long)
        radius = half_long
        for _ in range(200):
            cx = rng.uniform(min(ext_x + margin, W / 2), max(W - ext_x - margin, W / 2))
            cy = rng.uniform(min(ext_y + margin, H / 2), max(H - ext_y - margin, H / 2))
            if all(math.hypot(cx - px, cy - py) > radius + pr + margin for px, py, pr in placed_discs):
                break
        else:
            if i > 0:
                logger.debug("section %d of %d did not fit; dropped", i + 1, n)
                continue
            cx, cy = W / 2, H / 2
        placed_discs.append((cx, cy, radius))
        sections.append(_make_section(rng, (cx, cy), (a, b), angle, mpp, tight))
    return sections


@dataclass(frozen=True, eq=False)
class TumorTemplate:
    major_um: float
    semi_axes_px: tuple[float, float]
    lut: np.ndarray


def tumor_template(rng: np.random.Generator, major_um: float, mpp: float) -> TumorTemplate:
    """Outline of a tumour whose longest chord (max Feret diameter) is exactly ``major_um``."""
    ratio = rng.uniform(0.5, 0.7) if major_um >= 1000 else rng.uniform(0.55, 0.9)
    amplitude = 0.12 if major_um < MICRO_MIN_UM else rng.uniform(0.12, 0.3)
    lut = harmonic_lut(rng, 1.0, amplitude, kmax=9)
    lut = (lut / lut.max()).astype(F32)
    unit = StarShape((0.0, 0.0), 0.0, (1000.0, 1000.0 * ratio), lut).polygon(0.5)
    diff = unit[:, None, :] - unit[None, :, :]
    feret = float(np.sqrt((diff**2).sum(-1)).max()) / 1000.0
    s = major_um / mpp / feret
    return TumorTemplate(float(major_um), (s, s * ratio), lut)


def _separated(a: StarShape, pa: np.ndarray, b: StarShape, pb: np.ndarray, gap_px: float) -> bool:
    """Whether two outlines are at least ``gap_px`` apart and neither contains the other."""
    if math.hypot(a.centre_xy[0] - b.centre_xy[0], a.centre_xy[1] - b.centre_xy[1]) > a.max_extent_px + b.max_extent_px + gap_px:
        return True
    if b.depth_at(np.array([a.centre_xy[0]]), np.array([a.centre_xy[1]]))[0][0] > 0:
        return False
    if a.depth_at(np.array([b.centre_xy[0]]), np.array([b.centre_xy[1]]))[0][0] > 0:
        return False
    d2 = ((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)
    return bool(d2.min() >= gap_px * gap_px)


_Placed = dict[int, tuple[StarShape, np.ndarray]]
"""Tumours placed so far: template index -> (shape, coarse outline)."""


def place_tumors(rng: np.random.Generator, sections: list[TissueSection], templates: list[TumorTemplate], mpp: float) -> list[TumorRegion]:
    """Tumours inside the nodes (>= 40 um from the node edge), >= 180 um apart so that regions grown by 75 um never merge.

    Placed largest first; the largest in the first node, roughly along its major axis. The whole set
    is re-drawn when one cannot be placed.
    """
    order = sorted(range(len(templates)), key=lambda k: -templates[k].major_um)
    for _trial in range(12):
        placed = _place_all(rng, sections, templates, order, mpp)
        if placed is not None:
            tumors = []
            for k, tpl in enumerate(templates):
                shape = placed[k][0]
                poly = shape.polygon(float(np.clip(tpl.major_um / mpp / 400, 0.1, 0.5)))
                tumors.append(TumorRegion(shape, tpl.major_um, tumor_category(tpl.major_um), poly))
            return tumors
    raise ValueError(f"could not place tumours of {[round(t.major_um) for t in templates]} um inside the lymph node(s)")


def _place_all(
    rng: np.random.Generator, sections: list[TissueSection], templates: list[TumorTemplate], order: list[int], mpp: float
) -> _Placed | None:
    """One trial: every template in ``order``, each with up to 100 draws; None when one finds no place."""
    gap_px = TUMOR_GAP_UM / mpp
    margin_px = 40 / mpp
    placed: _Placed = {}
    for rank, k in enumerate(order):
        tpl = templates[k]
        r_in = float(tpl.lut.min()) * min(tpl.semi_axes_px)  # the tumour contains this disc about its centre
        for _attempt in range(100):
            s, centre, angle = draw_position(rng, sections, tpl, rank == 0, margin_px)
            fit = fit_in_node(s, centre, angle, tpl, r_in, placed, gap_px, margin_px)
            if fit is not None:
                placed[k] = fit
                break
        else:
            return None
    return placed


def draw_position(
    rng: np.random.Generator, sections: list[TissueSection], tpl: TumorTemplate, largest: bool, margin_px: float
) -> tuple[TissueSection, tuple[float, float], float]:
    """A candidate (section, level-0 centre, angle): the largest tumour along the first node's major axis, others anywhere in a node."""
    if largest:
        s = sections[0]
        a_node, b_node = s.shape.scale_xy
        free_a = max(a_node * 0.9 - tpl.semi_axes_px[0] - margin_px, 0.0)
        free_b = max(b_node * 0.9 - tpl.semi_axes_px[1] - margin_px, 0.0)
        u, v = rng.uniform(-1, 1) * free_a, rng.uniform(-0.5, 0.5) * free_b
        cs, sn = math.cos(s.shape.angle), math.sin(s.shape.angle)
        centre = (s.shape.centre_xy[0] + u * cs - v * sn, s.shape.centre_xy[1] + u * sn + v * cs)
        angle = s.shape.angle + rng.uniform(-0.15, 0.15)
    else:
        s = sections[int(rng.integers(len(sections)))]
        th = rng.uniform(-np.pi, np.pi)
        centre = local_to_xy(s.shape, lut_at(s.node_lut, th) * math.sqrt(rng.uniform(0, 1)) * 0.95, th)
        angle = rng.uniform(0, np.pi)
    return s, centre, angle


def fit_in_node(
    s: TissueSection,
    centre: tuple[float, float],
    angle: float,
    tpl: TumorTemplate,
    r_in: float,
    placed: _Placed,
    gap_px: float,
    margin_px: float,
) -> tuple[StarShape, np.ndarray] | None:
    """The tumour's (shape, coarse outline) at a candidate position, or None when it is not inside the node or too near another."""
    cx, cy = np.array([centre[0]]), np.array([centre[1]])
    # cheap rejections first: the centre's depth in the node, its distance to the others
    if s.shape.depth_at(cx, cy, s.node_lut)[1][0] < r_in + margin_px:
        return None
    if any(
        o.depth_at(cx, cy)[0][0] > -(r_in + gap_px) or np.hypot(op[:, 0] - centre[0], op[:, 1] - centre[1]).min() < r_in + gap_px
        for o, op in placed.values()
    ):
        return None
    shape = StarShape(centre, angle, tpl.semi_axes_px, tpl.lut)
    outline = shape.polygon_n(96)
    if s.shape.depth_at(outline[:, 0], outline[:, 1], s.node_lut)[1].min() < margin_px:
        return None
    if not all(_separated(shape, outline, o, op, gap_px) for o, op in placed.values()):
        return None
    return shape, outline
