"""Tissue mask of a whole-slide image at low resolution.

The rule is the model-zoo pathology bundle's (MONAI ``ForegroundMask(hsv_threshold={"S": "otsu"})``:
a pixel is tissue when it is darker than Otsu's threshold in any of R, G, B and more saturated than
Otsu's threshold in HSV saturation), plus two absolute rules: NCRF's, that no RGB channel is below
``min_rgb`` (pen marks, debris), and a saturation floor, because Otsu always splits an image in two
and would call half of a blank slide "tissue".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.transforms import ForegroundMask
from skimage.color import rgb2hsv

from operators.core.errors import SlideReadError
from operators.core.timing import StageTimings
from operators.wsi.grid import MapGrid, grid_for_slide
from operators.wsi.slide.backend_choice import BackendRequest
from operators.wsi.slide.backends import BackendName
from operators.wsi.slide.reader import ResolvedSlide, open_slide
from operators.wsi.slide.sources import SlideSource

logger = logging.getLogger(__name__)

MIN_TISSUE_SATURATION = 0.07  # glass and out-of-focus background stay below about 0.04
NCRF_MIN_RGB = 50
# How much coarser than the model's scale level 0 may be: a 20x scan (0.5 um/px) is read 2.06x upsampled
# for a 0.243 um/px model; a 10x scan, or a pyramid without its full-resolution level, would be 4x and more.
MAX_UPSAMPLING = 2.5


def resolution_problem(slide_mpp: float, model_mpp: float, max_upsampling: float = MAX_UPSAMPLING) -> str | None:
    """Why a slide whose level 0 is ``slide_mpp`` micrometres per pixel is too coarse for a model trained
    at ``model_mpp``, or None."""
    ratio = slide_mpp / model_mpp
    if ratio <= max_upsampling:
        return None
    return (
        f"level 0 is {slide_mpp:.4g} um/pixel, {ratio:.1f}x coarser than the {model_mpp:.4g} um/pixel the model reads "
        f"(at most {max_upsampling:g}x): a pyramid without its full-resolution level, or a scan at too low a magnification"
    )


def tissue_mask(thumbnail_rgb: np.ndarray, min_saturation: float = MIN_TISSUE_SATURATION, min_rgb: int = 0) -> np.ndarray:
    """Boolean (h, w) tissue mask of an (h, w, 3) uint8 RGB thumbnail."""
    if thumbnail_rgb.ndim != 3 or thumbnail_rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {thumbnail_rgb.shape}")
    channels_first = np.moveaxis(thumbnail_rgb, -1, 0)
    if np.ptp(channels_first.reshape(3, -1), axis=1).max() == 0:
        return np.zeros(thumbnail_rgb.shape[:2], dtype=bool)  # a constant image has no tissue
    mask = np.asarray(ForegroundMask(hsv_threshold={"S": "otsu"})(channels_first))[0].astype(bool)
    if min_saturation > 0:
        mask &= rgb2hsv(thumbnail_rgb)[..., 1] > min_saturation
    if min_rgb > 0:
        mask &= (thumbnail_rgb >= min_rgb).all(axis=2)
    return mask


@dataclass(frozen=True)
class SlideTissue:
    """A slide's identity, what opening it decided, and its tissue mask on the mask grid.

    ``slide`` re-opens the slide for the later stages without choosing its backend, checking its
    DICOM levels or calibrating its colours again. ``thumbnail_rgb`` is the slide at the mask grid's
    resolution (h, w, 3); ``mask[row, col]`` says whether the window of ``mask_grid`` cell (row, col)
    is tissue.
    """

    source: SlideSource
    slide: ResolvedSlide
    thumbnail_rgb: np.ndarray
    mask: np.ndarray
    mask_grid: MapGrid

    @property
    def size_xy(self) -> tuple[int, int]:
        """Level 0 (width, height) in pixels."""
        return self.slide.size_xy

    @property
    def mpp(self) -> float:
        """Level-0 micrometres per pixel (the mean of x and y)."""
        return float(np.mean(self.slide.mpp_xy))

    @property
    def mpp_source(self) -> str:
        return self.slide.mpp_source

    @property
    def backend(self) -> BackendName:
        return self.slide.backend

    @property
    def is_dicom(self) -> bool:
        return self.slide.is_dicom

    @property
    def tissue_area_mm2(self) -> float:
        return float(self.mask.sum()) * (self.mask_grid.map_mpp / 1000.0) ** 2


def compute_slide_tissue(
    source: SlideSource,
    model_mpp: float,
    mask_stride_model_px: int,
    window_model_px: int,
    mpp_override: float | None = None,
    backend: BackendRequest = "auto",
    min_rgb: int = 0,
) -> SlideTissue:
    """Open the slide (deciding its backend and resolution, once for all stages; refusing a level 0 too
    coarse for the model, see :func:`resolution_problem`), build its thumbnail on the mask grid (tile by
    tile) and its tissue mask."""
    with open_slide(source.path, mpp_override, backend) as slide:
        mpp = float(np.mean(slide.mpp_xy))
        if problem := resolution_problem(mpp, model_mpp):
            raise SlideReadError(f"{source.path}: {problem}")
        grid = grid_for_slide(slide.size_xy, mpp, model_mpp, mask_stride_model_px, window_model_px)
        thumbnail = slide.thumbnail(grid.stride_level0_px)[: grid.shape_rows_cols[0], : grid.shape_rows_cols[1]]
        mask = np.zeros(grid.shape_rows_cols, dtype=bool)
        mask[: thumbnail.shape[0], : thumbnail.shape[1]] = tissue_mask(thumbnail, min_rgb=min_rgb)
        tissue = SlideTissue(source, slide.resolved, thumbnail, mask, grid)
    logger.info(
        "%s: %d x %d px at %.3f um/px (%s, %s); tissue %.2f mm^2 on a %d x %d mask",
        source.name,
        *tissue.size_xy,
        mpp,
        tissue.mpp_source,
        tissue.backend,
        tissue.tissue_area_mm2,
        grid.shape_rows_cols[1],
        grid.shape_rows_cols[0],
    )
    return tissue


class TissueMaskOperator(Operator):
    """Opens one slide and computes its tissue mask at low resolution.

    Named inputs:
        none; the slide is given at construction.

    Named outputs:
        tissue: SlideTissue, the resolved slide (size in x, y level-0 px, mpp, backend, DICOM fixes;
        later stages re-open it from this), its thumbnail on the mask grid (h, w, 3 uint8) and the
        boolean tissue mask on that grid (stride 64 model px).
    """

    OUTPUT_TISSUE = "tissue"

    def __init__(
        self,
        fragment: Fragment,
        *args,
        source: SlideSource,
        model_mpp: float,
        mask_stride_model_px: int,
        window_model_px: int,
        mpp_override: float | None,
        backend: BackendRequest,
        timings: StageTimings,
        **kwargs,
    ) -> None:
        self.source = source
        self.model_mpp = model_mpp
        self.mask_stride_model_px = mask_stride_model_px
        self.window_model_px = window_model_px
        self.mpp_override = mpp_override
        self.backend = backend
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(self.OUTPUT_TISSUE)

    def compute(self, op_input, op_output, context) -> None:
        with self.timings.stage("tissue_mask"):
            tissue = compute_slide_tissue(
                self.source, self.model_mpp, self.mask_stride_model_px, self.window_model_px, self.mpp_override, self.backend
            )
        op_output.emit(tissue, self.OUTPUT_TISSUE)
