"""Procedural H&E lymph-node scene for synthetic whole-slide images (Camelyon16-like).

Frame: everything is defined in level-0 pixel coordinates (x to the right, y down) at ``mpp``
micrometres per pixel (0.243 um/px, Camelyon16's 40x). A pixel ``(row i, column j)`` of a render
with origin ``(x0, y0)`` and downsample ``d`` covers level-0 ``[x0 + j d, x0 + (j + 1) d)`` and is
sampled at its centre ``x0 + (j + 0.5) d``; annotation polygons use the same continuous frame.

The scene is a pure function of its parameters: :meth:`SlideScene.render` draws ANY rectangle at
ANY downsample, so a region's pixels do not depend on how a slide is tiled, and a low level is
approximately the box-downsampled high level (nuclei and fine texture fade to their mean below the
pixel size). Texture comes from hashing integer cell coordinates (:mod:`.wsi_texture`), so a render
costs O(region size) in vectorised numpy.

Anatomy: a few tissue sections (smooth star-shaped blobs on glass), each a lymph node (dense small
dark lymphocytes; paler germinal centres of larger nuclei; sinuses with sparse pale histiocytes;
a fibrous capsule with spindle nuclei) inside a rim of perinodal fat. Metastases are smooth
irregular blobs inside a node: cohesive nests of large (10-16 um) pale vesicular nuclei with
nucleoli and pink cytoplasm, separated by fibrous stroma. Their outlines, as polygons, are the
ground truth. Colours come from a Beer-Lambert H&E stain model whose stain vectors, intensities,
glass colour and focus blur vary per slide, plus regional stain unevenness, so that mean colour
alone does not tell tumour from normal tissue; nuclear size and texture do.

Here: the scene, its stain and its render; :func:`make_slide_scene` draws the stain and lays out
the sections and tumours with :mod:`.wsi_placement`; :mod:`.wsi_anatomy` computes the stain
concentrations a render shows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .wsi_anatomy import TISSUE_EDGE_UM, concentrations
from .wsi_artefacts import SceneExtras
from .wsi_placement import TUMOR_GAP_UM, TissueSection, TumorRegion, place_sections, place_tumors, tumor_template
from .wsi_texture import F32

logger = logging.getLogger(__name__)

CAMELYON_MPP = 0.243
"""Level-0 resolution of Camelyon16 slides (um per pixel)."""

DEFAULT_TUMOR_SIZES_UM: tuple[float, ...] = (2100.0, 600.0, 250.0, 80.0)
"""One macro-metastasis (> 2 mm), two micro-metastases (0.2-2 mm) and one isolated tumour cell cluster.

Sizes are max Feret diameters. The official Camelyon16 evaluation grows each lesion by 75 um and
ignores those whose grown major axis is below 275 um, so ITC clusters should stay at or below
~100 um to be ignored robustly, and micro-metastases at or above ~200 um to be counted robustly.
These defaults fit a 16384 x 12288 (4.0 x 3.0 mm) slide.
"""


@dataclass(frozen=True)
class StainParams:
    """Per-slide Beer-Lambert stain model: RGB = glass * exp(-(H * h_scale * h_vector + E * e_scale * e_vector))."""

    h_vector: tuple[float, float, float]
    e_vector: tuple[float, float, float]
    h_scale: float
    e_scale: float
    glass_rgb: tuple[float, float, float]  # integers, so that glass renders exactly
    blur_px: float  # Gaussian focus blur (sigma, level-0 px)


@dataclass(frozen=True, eq=False)
class SlideScene:
    """A synthetic H&E lymph-node slide, renderable at any region and downsample (see the module docstring)."""

    size_xy: tuple[int, int]
    seed: int
    mpp: float
    sections: tuple[TissueSection, ...]
    tumors: tuple[TumorRegion, ...]
    stain: StainParams
    extras: SceneExtras | None = None  # the hard cases (:mod:`.wsi_hard`); None: the plain scene

    @property
    def is_tumor(self) -> bool:
        return bool(self.tumors)

    @property
    def tumor_polygons(self) -> list[np.ndarray]:
        """Ground-truth polygons ((n, 2) float64, level-0 x, y), one per tumour region, in ``tumors`` order."""
        return [t.polygon_xy.copy() for t in self.tumors]

    @property
    def glass_rgb_u8(self) -> np.ndarray:
        """The background (glass) colour, exactly what renders of empty regions contain."""
        return np.asarray(self.stain.glass_rgb, np.float64).round().astype(np.uint8)

    def blur_margin(self, downsample: float) -> int:
        """Output pixels a render needs around a region for the focus blur."""
        sigma = self.stain.blur_px / downsample
        return 0 if sigma < 0.3 else int(math.ceil(3.5 * sigma)) + 1

    def has_tissue(self, region_xy_level0: tuple[float, float], size_xy_level0: tuple[float, float], downsample: float = 1.0) -> bool:
        """Whether tissue can show in a level-0 rectangle rendered at ``downsample`` (conservative).

        When False, a render of the rectangle is exactly the glass colour.
        """
        x0, y0 = region_xy_level0
        x1, y1 = x0 + size_xy_level0[0], y0 + size_xy_level0[1]
        m = (self.blur_margin(downsample) + 1) * downsample + max(TISSUE_EDGE_UM / self.mpp, downsample)
        if self.extras is not None and self.extras.pen_touches(x0, y0, x1, y1, m):
            return True
        return any(s.shape.may_touch(x0, y0, x1, y1, m) for s in self.sections)

    def render(self, region_xy_level0: tuple[float, float], size_xy: tuple[int, int], downsample: float = 1.0) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``size_xy`` output pixels from level-0 origin ``region_xy_level0`` at ``downsample``.

        Output pixel (i, j) samples level-0 point (x0 + (j + 0.5) d, y0 + (i + 0.5) d). Regions
        outside the slide render too (glass, or tissue continuing past the edge).
        """
        x0, y0 = float(region_xy_level0[0]), float(region_xy_level0[1])
        w, h = int(size_xy[0]), int(size_xy[1])
        d = float(downsample)
        if w <= 0 or h <= 0 or not d > 0:
            raise ValueError(f"invalid render request: size {size_xy}, downsample {downsample}")
        if not self.has_tissue((x0, y0), (w * d, h * d), d):
            return np.broadcast_to(self.glass_rgb_u8, (h, w, 3)).copy()
        m = self.blur_margin(d)
        X = x0 + (np.arange(-m, w + m, dtype=np.float64) + 0.5) * d
        Y = y0 + (np.arange(-m, h + m, dtype=np.float64) + 0.5) * d
        extras = self.extras
        H, E = concentrations(self.sections, self.tumors, self.seed, self.mpp, X, Y, d, () if extras is None else extras.mimics)
        fold = None if extras is None else extras.fold_factor(X, Y, d)
        if fold is not None:  # before the blur: a fold is tissue
            H *= fold
            E *= fold
        if m:
            sigma = self.stain.blur_px / d
            H = ndimage.gaussian_filter(H, sigma, truncate=3.5, mode="nearest")[m:-m, m:-m]
            E = ndimage.gaussian_filter(E, sigma, truncate=3.5, mode="nearest")[m:-m, m:-m]
        ink = [] if extras is None else extras.ink(X[m : X.size - m], Y[m : Y.size - m], d)
        return self._to_rgb(H, E, ink)

    def _to_rgb(self, H: np.ndarray, E: np.ndarray, ink: Sequence[tuple[np.ndarray, tuple[float, float, float]]] = ()) -> np.ndarray:
        st = self.stain
        out = np.empty((*H.shape, 3), np.uint8)
        for ch in range(3):
            od = H * F32(st.h_vector[ch] * st.h_scale)
            od += E * F32(st.e_vector[ch] * st.e_scale)
            for cover, ink_od in ink:  # on the coverslip: over glass and tissue alike
                od += cover * F32(ink_od[ch])
            np.negative(od, out=od)
            np.exp(od, out=od)
            od *= F32(st.glass_rgb[ch])
            od += F32(0.5)
            out[..., ch] = od  # in [0.5, 255.5): truncation rounds
        return out


def random_stain(rng: np.random.Generator) -> StainParams:
    h = np.array([0.56, 0.72, 0.41]) + rng.normal(0, 0.04, 3)
    e = np.array([0.20, 0.80, 0.56]) + rng.normal(0, 0.05, 3)
    h, e = np.clip(h, 0.05, None), np.clip(e, 0.05, None)
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    base = rng.uniform(236, 246)
    glass = np.round(np.clip(base + rng.normal(0, 2.0, 3), 228, 252))  # integers: glass renders exactly
    return StainParams(
        h_vector=tuple(float(v) for v in h),
        e_vector=tuple(float(v) for v in e),
        h_scale=float(rng.uniform(0.65, 1.35)),
        e_scale=float(rng.uniform(0.65, 1.35)),
        glass_rgb=tuple(float(v) for v in glass),
        blur_px=float(rng.uniform(0.6, 1.4)),
    )


def make_slide_scene(
    size_xy_level0: tuple[int, int],
    seed: int,
    tumor_sizes_um: Sequence[float] = DEFAULT_TUMOR_SIZES_UM,
    mpp: float = CAMELYON_MPP,
    tissue_fraction: float = 0.35,
) -> SlideScene:
    """Lay out a synthetic lymph-node slide deterministically from ``seed``.

    Args:
        size_xy_level0: level-0 (width, height) in pixels.
        seed: everything (layout, stain, texture) follows from it.
        tumor_sizes_um: major axis (max Feret diameter) of each metastasis in micrometres; empty
            for a normal slide. Tumours keep their order in :attr:`SlideScene.tumors`.
        mpp: level-0 micrometres per pixel.
        tissue_fraction: approximate fraction of the slide covered by tissue (the first section
            grows past it when the largest tumour needs a bigger node).

    Raises:
        ValueError: when the tumours cannot be placed inside the nodes of a slide this size.
    """
    W, H = int(size_xy_level0[0]), int(size_xy_level0[1])
    if W < 256 or H < 256:
        raise ValueError(f"slide too small: {W} x {H}")
    if not 0 < tissue_fraction <= 0.8:
        raise ValueError(f"tissue_fraction {tissue_fraction} not in (0, 0.8]")
    sizes = [float(s) for s in tumor_sizes_um]
    if any(not s > 0 for s in sizes):
        raise ValueError(f"tumour sizes must be positive: {sizes}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 0x5EED])
    stain = random_stain(rng)
    templates = [tumor_template(rng, s, mpp) for s in sizes]
    first: tuple[float, float] | None = None
    need: tuple[float, float] | None = None
    tumors: list[TumorRegion] = []
    if templates:
        big = max(templates, key=lambda t: t.major_um)
        pad = 120 / mpp  # node margin + capsule
        need = ((big.semi_axes_px[0] + pad) / 0.9, (big.semi_axes_px[1] + pad) / 0.9)
        # room for the others beside it along the node's major axis, where the slide allows
        others = sum(2 * t.semi_axes_px[0] + TUMOR_GAP_UM / mpp for t in templates if t is not big)
        first = (need[0] + 0.5 * others, need[1])
    for attempt in range(12):
        sections = place_sections(rng, W, H, mpp, tissue_fraction, first, need)
        if not templates:
            break
        try:
            tumors = place_tumors(rng, sections, templates, mpp)
            break
        except ValueError:
            if attempt == 11:
                raise
            assert first is not None
            first = (first[0] * 1.04, first[1] * 1.04)
            logger.debug("tumour placement failed (attempt %d); retrying with a larger first node", attempt + 1)
    scene = SlideScene((W, H), int(seed), float(mpp), tuple(sections), tuple(tumors), stain)
    logger.debug(
        "scene seed=%d size=%dx%d sections=%d tumours=%s", seed, W, H, len(sections), [(t.category, round(t.major_axis_um)) for t in tumors]
    )
    return scene
