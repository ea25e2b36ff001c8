"""The tumor probability map as a DICOM Parametric Map (highdicom.pm) of a DICOM whole-slide image.

The map is stored as 32-bit floats (Float Pixel Data), the probabilities themselves (0..1, no
rescaling), tiled like its source on the total pixel matrix of one pyramid level of the slide: the
VOLUME level the FRACTIONAL SEG uses (:func:`operators.wsi.outputs.dicom_seg.choose_seg_source_level`,
the level closest to the map's stride), resampled onto it the same way
(:func:`operators.wsi.outputs.map_resampling.map_on_pixel_grid`). The SEG quantises the map to 1/255;
the Parametric Map keeps the float values, for viewers that colour a quantity (Slim) and for analysis.
Level 0 itself is not used: at 64 level-0 pixels per map cell it would hold 4096 times the map's
values for no added information.

Real World Value Mapping (PS3.3 C.7.6.16.2.11): identity (slope 1, intercept 0) over 0..1, unit UCUM
``1``, quantity DCM 111047 "Probability of cancer". Only a DICOM slide gets a Parametric Map: it must
reference its source instances and share their frame of reference (see bulk_annotations).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np

from operators.dicom.result_texts import result_series_description
from operators.dicom.seg import EquipmentSpec, ResultSeries, SegmentSpec, new_seg_series_arguments, with_empty_type2_attributes
from operators.wsi.grid import ProbabilityMap
from operators.wsi.outputs.bulk_annotations import NO_UNITS, PROBABILITY
from operators.wsi.outputs.dicom_seg import choose_seg_source_level
from operators.wsi.outputs.map_resampling import map_on_pixel_grid
from operators.wsi.slide.reader import SlideHandle

logger = logging.getLogger(__name__)


def probability_value_mapping() -> hd.pm.RealWorldValueMapping:
    """The identity mapping of the stored floats to probabilities 0..1."""
    return hd.pm.RealWorldValueMapping(
        lut_label="TUMOR_PROB",
        lut_explanation="Tumor probability (0..1) of the patch classifier",
        unit=NO_UNITS,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=PROBABILITY,
    )


def build_probability_parametric_map(
    slide: SlideHandle,
    prob_map: ProbabilityMap,
    segment: SegmentSpec,
    equipment: EquipmentSpec,
    series_number: int = 904,
    result: ResultSeries | None = None,
    flags: Sequence[str] = (),
) -> hd.pm.ParametricMap:
    """A tiled float Parametric Map of ``prob_map`` on the pyramid level of ``slide`` (a DICOM WSI) the SEG
    uses; ``segment`` gives the algorithm's name and version, ``result`` places it (a new series when None),
    ``flags`` (the SEG's) go into its SeriesDescription. ValueError for a slide that is not DICOM."""
    if slide.dicom_source is None:
        raise ValueError(f"{slide.path}: a DICOM Parametric Map needs a DICOM whole-slide image as its source")
    level = choose_seg_source_level(slide.dicom_source, prob_map.grid.stride_level0_px)
    values = np.clip(map_on_pixel_grid(prob_map, level.size_xy, level.downsample_xy), 0.0, 1.0).astype(np.float32)
    logger.info("DICOM Parametric Map on VOLUME level %d %s", level.index, level.size_xy)
    sources = with_empty_type2_attributes(level.datasets)
    parametric_map = hd.pm.ParametricMap(
        source_images=sources[:1],
        further_source_images=sources[1:] or None,
        pixel_array=values,
        **new_seg_series_arguments(equipment, series_number, result),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[probability_value_mapping()],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_description=f"{segment.label} probability by {segment.algorithm_name} {segment.algorithm_version}"[:64],
        content_label="TUMOR_PROB",
        tile_pixel_array=True,
        dimension_organization_type=hd.DimensionOrganizationTypeValues.TILED_SPARSE,
    )
    parametric_map.SeriesDescription = result_series_description(f"{segment.label} probability map", flags)
    return parametric_map
