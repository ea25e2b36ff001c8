"""Camelyon16 evaluation masks: ground truth at the evaluation level, grown, holes filled, labelled.

Follows ``computeEvaluationMask`` and ``computeITCList`` of the official evaluation
(computationalpathologygroup/Camelyon16, ``Python/Evaluation_FROC.py``; NCRF's Python 3 port
``wsi/bin/Evaluation_FROC.py`` is identical there):

- the ground-truth mask is read at ``level`` (downsample ``2**level``; level 5 = 32);
- ``distance_transform_edt`` of the non-tumour area, tumour region = distance < 75 / (mpp * 2**level * 2)
  pixels. Note the factor 2: the official comment says the annotations are "expanded by 75 um" but
  the radius is 37.5 um; the 75 um is what two sides add to a diameter, which is how the ITC rule uses it;
- ``binary_fill_holes`` with scipy's default (4-connected) structure, then ``measure.label`` with
  ``connectivity=2`` (8-connected);
- isolated tumour cells: labels whose ``regionprops`` major axis (4 sqrt of the largest eigenvalue of
  the inertia tensor, in evaluation-level pixels, no extra factor) is < 275 / (mpp * 2**level) px
  (200 um ITC limit + the 75 um growth): 35.36 px at level 5.

Deviation: the official code takes the mask's first channel and calls a pixel tumour only where it
is exactly 255 (``255 - R`` is zero); here any non-zero value is tumour, so 0/1 masks (Camelyon17,
this repository's synthetic masks) and 0/255 masks (Camelyon16) both work. For 0/255 masks with a
nearest-neighbour pyramid the two agree.

Ground truth sources (:func:`read_tumor_mask_at_level`):

- a mask TIFF ``<slide>.tif`` (also ``<slide>_mask.tif`` / ``<slide>_Mask.tif``, ``.tiff``): non-zero = tumour,
  level-0 frame. A pyramid level of downsample ``2**level`` (size floor or ceil of level 0 / downsample)
  is read as it is, as OpenSlide's ``read_region`` does in the official code. Without one, level 0 is
  sampled at the centre of each ``2**level`` block, tile by tile (memory bounded), which is what a
  nearest-neighbour pyramid and :func:`rasterize_polygons` (pixel-centre test) give;
- an ASAP XML ``<slide>.xml``: tumour polygons (all groups but ``_2`` / ``Exclusion``, which are
  subtracted, as the Camelyon16 masks were made) rasterised directly at the evaluation level with
  :func:`training.pathology.annotations.rasterize_polygons`. The frame is the slide's level-0 size
  when known (``slide_size_xy_level0``); otherwise it is the polygons' extent plus a margin wider than
  the growth radius: labels, ITCs and look-ups inside the slide are then the same as with the full
  frame (the distance transform, hole filling and labelling only see tumour and the background around
  it), except for polygons crossing the slide's right or bottom edge, which the full frame would clip.
  Detections beyond the frame are background.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import tifffile
from scipy import ndimage
from skimage import measure

from training.pathology.annotations import EXCLUSION_GROUPS, rasterize_polygons, read_asap_xml, read_asap_xml_groups

logger = logging.getLogger(__name__)

CAMELYON16_MPP = 0.243
"""Level-0 pixel size of the Camelyon16 slides (um), the official ``L0_RESOLUTION``."""
OFFICIAL_LEVEL = 5
"""The official ``EVALUATION_MASK_LEVEL``."""
BUNDLE_LEVEL = 6
"""The MONAI model-zoo bundle's evaluation level (its probability maps are at level 6)."""
GROW_DISTANCE_UM = 75.0
ITC_MAJOR_AXIS_UM = 275.0
"""200 um (the largest ITC) + 75 um (the growth)."""

MASK_SUFFIX = re.compile(r"_mask$", re.IGNORECASE)
TIFF_SUFFIXES = (".tif", ".tiff")


def level_downsample(level: int) -> int:
    """Downsample of ``level`` relative to level 0: ``2**level``."""
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    return 2**level


def growth_radius_px(mpp: float, level: int, grow_distance_um: float = GROW_DISTANCE_UM) -> float:
    """Distance threshold of the growth in evaluation-level pixels: ``75 / (mpp * 2**level * 2)`` (4.82 at level 5)."""
    return grow_distance_um / (mpp * level_downsample(level) * 2)


def itc_threshold_px(mpp: float, level: int, itc_major_axis_um: float = ITC_MAJOR_AXIS_UM) -> float:
    """Major-axis limit of an isolated tumour cell region in evaluation-level pixels: ``275 / (mpp * 2**level)``."""
    return itc_major_axis_um / (mpp * level_downsample(level))


def label_evaluation_mask(tumor: np.ndarray, mpp: float, level: int) -> np.ndarray:
    """Evaluation mask (int32 labels, 0 = background) of a boolean tumour mask at ``level``.

    The distance transform runs on the tumour bounding box plus a margin of ``ceil(radius) + 1``
    pixels: every pixel outside it is farther than the radius from any tumour pixel, and the margin
    keeps the background around the grown regions connected to the outside, so growth, hole filling
    and labels (numbered in raster order, as on the full frame) are the same as on the full frame.
    """
    tumor = np.asarray(tumor, bool)
    if tumor.ndim != 2:
        raise ValueError(f"tumor mask must be 2-D (h, w), got shape {tumor.shape}")
    labels = np.zeros(tumor.shape, np.int32)
    if not tumor.any():
        # Not replicated: on a mask without tumour scipy's distance_transform_edt (no zero pixel)
        # measures from a point just outside the top-left corner, so the official code finds a
        # phantom region of radius ~4.8 px at (0, 0) (an ITC: detections there are ignored).
        return labels
    radius = growth_radius_px(mpp, level)
    margin = int(math.ceil(radius)) + 1
    rows = np.flatnonzero(tumor.any(axis=1))
    cols = np.flatnonzero(tumor.any(axis=0))
    box = (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, tumor.shape[0])),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, tumor.shape[1])),
    )
    distance = ndimage.distance_transform_edt(~tumor[box])
    filled = ndimage.binary_fill_holes(distance < radius)
    labels[box] = measure.label(filled, connectivity=2)
    return labels


def itc_labels(labels: np.ndarray, mpp: float, level: int) -> list[int]:
    """Labels of the isolated-tumour-cell regions: regionprops major axis < :func:`itc_threshold_px`."""
    limit = itc_threshold_px(mpp, level)
    return [int(p.label) for p in measure.regionprops(labels) if p.axis_major_length < limit]


@dataclass(frozen=True)
class LesionInfo:
    """One labelled region of an evaluation mask."""

    label: int
    is_itc: bool
    major_axis_px: float  # at the evaluation level
    area_px: int  # at the evaluation level
    centroid_xy_level0: tuple[float, float]
    bbox_xyxy_level0: tuple[int, int, int, int]
    longest_diameter_px: float = 0.0  # max Feret diameter at the evaluation level (Camelyon16's size classes)


def describe_lesions(labels: np.ndarray, mpp: float, level: int) -> list[LesionInfo]:
    """Every region of ``labels`` with its ITC flag, size and level-0 position (pixel centres)."""
    d = level_downsample(level)
    limit = itc_threshold_px(mpp, level)
    out = []
    for p in measure.regionprops(labels):
        r, c = p.centroid
        r0, c0, r1, c1 = p.bbox
        out.append(
            LesionInfo(
                int(p.label),
                bool(p.axis_major_length < limit),
                float(p.axis_major_length),
                int(p.area),
                ((c + 0.5) * d, (r + 0.5) * d),
                (c0 * d, r0 * d, c1 * d, r1 * d),
                float(p.feret_diameter_max),
            )
        )
    return out


# ---------------------------------------------------------------- ground truth files


@dataclass(frozen=True)
class GroundTruthFile:
    """The ground truth of one slide: a mask TIFF or an ASAP XML."""

    slide: str
    path: Path
    kind: str  # "mask" or "xml"


def slide_name_of(path: Path) -> str:
    """Slide name of a ground-truth file: the stem without a ``_mask`` / ``_Mask`` suffix."""
    return MASK_SUFFIX.sub("", path.stem)


def find_ground_truth(gt_dir: str | Path) -> dict[str, GroundTruthFile]:
    """Ground truth per slide name in ``gt_dir``; a mask TIFF wins over an XML of the same slide.

    Raises ValueError when two masks (or two XMLs) name the same slide.
    """
    found: dict[str, GroundTruthFile] = {}
    for path in sorted(Path(gt_dir).iterdir()):
        suffix = path.suffix.lower()
        kind = "mask" if suffix in TIFF_SUFFIXES else "xml" if suffix == ".xml" else None
        if kind is None or not path.is_file():
            continue
        name = slide_name_of(path)
        prev = found.get(name)
        if prev is not None and prev.kind == kind:
            raise ValueError(f"two {kind} ground truths for slide {name!r}: {prev.path.name}, {path.name}")
        if prev is None or kind == "mask":
            if prev is not None:
                logger.debug("%s: using the mask %s, not the XML %s", name, path.name, prev.path.name)
            found[name] = GroundTruthFile(name, path, kind)
    return found


def find_slide_file(slides_dir: str | Path, slide: str) -> Path | None:
    """The whole-slide image named ``slide`` in ``slides_dir`` (any extension), or None."""
    hits = sorted(p for p in Path(slides_dir).glob(f"{glob_escape(slide)}.*") if p.is_file())
    return hits[0] if hits else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)


def slide_size_xy_level0(path: str | Path) -> tuple[int, int]:
    """Level-0 (width, height) of a slide or mask: OpenSlide when it reads the file, else tifffile's first page."""
    try:
        with openslide.OpenSlide(str(path)) as slide:
            w, h = slide.dimensions
            return int(w), int(h)
    except (openslide.OpenSlideError, OSError) as exc:  # not a slide OpenSlide knows (a plain TIFF mask)
        logger.debug("OpenSlide cannot read %s (%s); trying tifffile", path, exc)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages.first
        return int(page.imagewidth), int(page.imagelength)


@dataclass(frozen=True)
class TumorMask:
    """Boolean tumour mask at an evaluation level and how it was obtained."""

    tumor: np.ndarray  # bool (h, w) at the evaluation level
    size_xy_level0: tuple[int, int] | None  # None: XML whose frame is the polygons' extent
    how: str


def read_tumor_mask_at_level(
    gt: GroundTruthFile, level: int, mpp: float = CAMELYON16_MPP, slide_size_xy: tuple[int, int] | None = None
) -> TumorMask:
    """The tumour mask of ``gt`` at ``level`` (see the module docstring for the rules per source)."""
    if gt.kind == "mask":
        return read_mask_tiff_at_level(gt.path, level)
    return rasterize_xml_at_level(gt.path, level, mpp, slide_size_xy)


def _matches(size_xy: tuple[int, int], size0_xy: tuple[int, int], d: int) -> bool:
    return all(s in (n // d, -(-n // d)) for s, n in zip(size_xy, size0_xy, strict=True))


def read_mask_tiff_at_level(path: str | Path, level: int) -> TumorMask:
    """Non-zero pixels of a mask TIFF at ``level``: its pyramid level of that downsample, else level 0 sampled."""
    d = level_downsample(level)
    with tifffile.TiffFile(path) as tf:
        pages = [lvl.keyframe for s in tf.series for lvl in s.levels] + list(tf.pages)
        page0 = max(pages, key=lambda p: p.imagewidth * p.imagelength)
        size0 = (int(page0.imagewidth), int(page0.imagelength))
        for page in pages:
            if _matches((int(page.imagewidth), int(page.imagelength)), size0, d):
                data = page.asarray()
                if data.ndim == 3:
                    data = data[..., 0] if page.planarconfig != 2 else data[0]
                return TumorMask(np.asarray(data) != 0, size0, f"pyramid level {page.imagewidth}x{page.imagelength}")
        tumor = sample_block_centres(page0, d)
    return TumorMask(tumor, size0, f"level 0 {size0[0]}x{size0[1]} sampled at block centres, downsample {d}")


def block_centres(n: int, d: int) -> np.ndarray:
    """Level-0 index sampled for each of the ``ceil(n / d)`` output pixels: the centre of its (last: partial) block."""
    starts = np.arange(0, n, d, dtype=np.int64)
    return (starts + np.minimum(starts + d, n)) // 2


def sample_block_centres(page: tifffile.TiffPage, d: int) -> np.ndarray:
    """``page`` (first sample) != 0 at :func:`block_centres`, decoding one tile or strip at a time."""
    rows = block_centres(int(page.imagelength), d)
    cols = block_centres(int(page.imagewidth), d)
    out = np.zeros((rows.size, cols.size), bool)
    for segment, index, _shape in page.segments(maxworkers=1):
        if segment is None or index[0] != 0:  # empty segment, or a separate plane past the first sample
            continue
        y0, x0 = int(index[2]), int(index[3])
        th, tw = segment.shape[1], segment.shape[2]
        ri = np.flatnonzero((rows >= y0) & (rows < y0 + th))
        ci = np.flatnonzero((cols >= x0) & (cols < x0 + tw))
        if ri.size and ci.size:
            out[np.ix_(ri, ci)] = segment[0][np.ix_(rows[ri] - y0, cols[ci] - x0)][..., 0] != 0
    return out


def rasterize_xml_at_level(
    path: str | Path, level: int, mpp: float = CAMELYON16_MPP, slide_size_xy: tuple[int, int] | None = None
) -> TumorMask:
    """Tumour polygons of an ASAP XML (exclusion groups subtracted) rasterised at ``level``.

    The frame is ``ceil(slide_size_xy / 2**level)`` when the slide size is given, else the polygons'
    extent plus a margin of ``ceil(growth radius) + 2`` evaluation pixels (module docstring).
    """
    d = level_downsample(level)
    polygons = read_asap_xml(path)
    exclusions = [p for g, ps in read_asap_xml_groups(path).items() if g in EXCLUSION_GROUPS for p in ps]
    if slide_size_xy is not None:
        size = (-(-int(slide_size_xy[0]) // d), -(-int(slide_size_xy[1]) // d))
        how = f"XML rasterised on the slide frame {slide_size_xy[0]}x{slide_size_xy[1]}"
    else:
        margin = int(math.ceil(growth_radius_px(mpp, level))) + 2
        if polygons:
            far = np.max(np.concatenate(polygons), axis=0)
            size = (max(int(math.ceil(far[0] / d)), 0) + margin, max(int(math.ceil(far[1] / d)), 0) + margin)
        else:
            size = (1, 1)
        how = "XML rasterised on the polygons' extent (slide size unknown)"
    tumor = rasterize_polygons(polygons, (0.0, 0.0), size, float(d), exclusions=exclusions).astype(bool)
    return TumorMask(tumor, None if slide_size_xy is None else (int(slide_size_xy[0]), int(slide_size_xy[1])), how)
