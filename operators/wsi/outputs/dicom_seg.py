"""A FRACTIONAL (probability) DICOM Segmentation of a DICOM whole-slide image, written with highdicom.

The SEG is tiled like its source and lies on the pixel grid of one pyramid level of the source
slide: the VOLUME level whose downsample is closest (in ratio) to the probability map's stride, so
that the SEG neither inflates the map nor throws resolution away. The map is resampled onto that
level's grid with :func:`operators.wsi.outputs.map_resampling.map_on_pixel_grid`, using the level's
downsample from its DICOM PixelSpacing (the physical truth a viewer uses to overlay the SEG; it can
differ from the ratio of the pixel matrix sizes, e.g. wsidicomizer's 139 x 186 level of a 2220 x 2967
slide is exactly 16x coarser by PixelSpacing, 15.97 x 15.95 by size).

Any VOLUME level may be referenced, including levels the slide reader left out because OpenSlide
cannot decode their pixels (wsidicomizer's cropped edge frames): only the headers are used.

Codes (DICOM PS3.16): category SCT 49755003 "Morphologically Abnormal Structure" (CID 7150 Segmentation
Property Categories), type SCT 14799000 "Neoplasm, Secondary" (CID 7151 Segmentation Property Types;
SNOMED CT's "Neoplasm, metastatic (morphologic abnormality)"). SCT 128462008 "Metastasis" exists but
belongs to CIDs 645/8134, not to the segmentation property types.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from operators.dicom.seg import (
    EquipmentSpec,
    ResultSeries,
    SegmentSpec,
    apply_seg_texts,
    new_seg_series_arguments,
    seg_series_description,
    seg_texts,
    segment_description,
    with_empty_type2_attributes,
)
from operators.wsi.grid import ProbabilityMap
from operators.wsi.outputs.map_resampling import map_on_pixel_grid
from operators.wsi.slide.dicom_source import DicomSlideSource
from operators.wsi.slide.reader import SlideHandle

logger = logging.getLogger(__name__)

TUMOR_PROPERTY_CATEGORY = codes.cid7150.MorphologicallyAbnormalStructure  # SCT 49755003
TUMOR_PROPERTY_TYPE = codes.cid7151.NeoplasmSecondary  # SCT 14799000 "Neoplasm, Secondary"
MAX_FRACTIONAL_VALUE = 255
_GEOMETRY_TOLERANCE = 1e-6


def tumor_segment(algorithm_name: str, algorithm_version: str, label: str = "Tumor") -> SegmentSpec:
    """The metastasis segment's codes with the algorithm that made it (name and version from the model card)."""
    return SegmentSpec(label, TUMOR_PROPERTY_CATEGORY, TUMOR_PROPERTY_TYPE, algorithm_name, algorithm_version)


@dataclass(frozen=True)
class SegSourceLevel:
    """A VOLUME pyramid level of a DICOM WSI, as a SEG source: its instances' headers (a level may be
    a concatenation of several), its total pixel matrix (width, height), and its downsample from level 0."""

    index: int
    size_xy: tuple[int, int]
    downsample_xy: tuple[float, float]
    datasets: tuple[Dataset, ...]


def _pixel_spacing_mm(header: Dataset) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm from the shared functional groups, or None."""
    groups = header.get("SharedFunctionalGroupsSequence")
    measures = groups[0].get("PixelMeasuresSequence") if groups else None
    spacing = measures[0].get("PixelSpacing") if measures else None
    if spacing is None or len(spacing) != 2:
        return None
    values = float(spacing[0]), float(spacing[1])
    return values if all(math.isfinite(v) and v > 0 for v in values) else None


def _same_placement(header: Dataset, reference: Dataset) -> bool:
    """Same ImageOrientationSlide and TotalPixelMatrixOriginSequence as level 0 (when both carry them)."""
    if "ImageOrientationSlide" in header and "ImageOrientationSlide" in reference:
        ours, theirs = ([float(v) for v in ds.ImageOrientationSlide] for ds in (header, reference))
        if not np.allclose(ours, theirs, atol=_GEOMETRY_TOLERANCE):
            return False
    if "TotalPixelMatrixOriginSequence" in header and "TotalPixelMatrixOriginSequence" in reference:
        ours, theirs = header.TotalPixelMatrixOriginSequence[0], reference.TotalPixelMatrixOriginSequence[0]
        for keyword in ("XOffsetInSlideCoordinateSystem", "YOffsetInSlideCoordinateSystem"):
            if keyword in ours and keyword in theirs and abs(float(ours.get(keyword)) - float(theirs.get(keyword))) > 1e-4:
                return False
    return True


def dicom_volume_levels(source: DicomSlideSource) -> list[SegSourceLevel]:
    """Every VOLUME level placed like level 0, with its downsample from PixelSpacing (size ratio when absent)."""
    level0 = source.volume_levels[0][0]
    spacing0 = _pixel_spacing_mm(level0.header)
    width0, height0 = level0.total_size_xy
    levels = []
    for index, instances in enumerate(source.volume_levels):
        header = instances[0].header
        width, height = instances[0].total_size_xy
        spacing = _pixel_spacing_mm(header)
        if spacing0 is not None and spacing is not None:
            downsample = (spacing[1] / spacing0[1], spacing[0] / spacing0[0])
        else:
            downsample = (width0 / width, height0 / height)
        if not _same_placement(header, level0.header):
            logger.warning(
                "%s: VOLUME level %d %s is not placed like level 0 (orientation or origin); not used for a SEG",
                source.folder,
                index,
                (width, height),
            )
            continue
        levels.append(SegSourceLevel(index, (width, height), downsample, tuple(instance.header for instance in instances)))
    return levels


def choose_seg_source_level(source: DicomSlideSource, stride_px_level0: float) -> SegSourceLevel:
    """The VOLUME level whose downsample is closest to the map's stride (by ratio, the finer one on a tie)."""
    if not (math.isfinite(stride_px_level0) and stride_px_level0 > 0):
        raise ValueError(f"stride must be a positive number of level-0 pixels, got {stride_px_level0}")
    levels = dicom_volume_levels(source)
    if not levels:
        raise ValueError(f"{source.folder}: no VOLUME level usable as a SEG source")

    def distance(level: SegSourceLevel) -> tuple[float, float]:
        mean_downsample = math.sqrt(level.downsample_xy[0] * level.downsample_xy[1])
        return (abs(math.log(mean_downsample / stride_px_level0)), mean_downsample)

    return min(levels, key=distance)


def build_fractional_wsi_seg(
    slide: SlideHandle,
    prob_map: ProbabilityMap,
    segment: SegmentSpec,
    equipment: EquipmentSpec,
    series_number: int = 901,
    omit_empty_frames: bool = False,
    result: ResultSeries | None = None,
    flags: Sequence[str] = (),
) -> hd.seg.Segmentation:
    """A tiled FRACTIONAL (PROBABILITY, maximum 255) SEG of ``slide`` (a DICOM WSI) on the grid of the
    pyramid level closest to the map's stride; the level is named in the log.

    Every tile is written unless ``omit_empty_frames`` (each frame carries its position, TILED_SPARSE).
    ``result`` places it (a new series when None, or the series of an earlier result it supersedes);
    ``flags`` go into its SeriesDescription.
    """
    if slide.dicom_source is None:
        raise ValueError(f"{slide.path}: a DICOM SEG needs a DICOM whole-slide image as its source")
    level = choose_seg_source_level(slide.dicom_source, prob_map.grid.stride_level0_px)
    on_level = map_on_pixel_grid(prob_map, level.size_xy, level.downsample_xy)
    fractions = np.clip(on_level, 0.0, 1.0)[np.newaxis]  # (1, rows, columns): one plane, the total pixel matrix
    logger.info(
        "DICOM SEG on VOLUME level %d %s (downsample %.4g x %.4g; map stride %.4g level-0 px)",
        level.index,
        level.size_xy,
        level.downsample_xy[0],
        level.downsample_xy[1],
        prob_map.grid.stride_level0_px,
    )
    sources = with_empty_type2_attributes(level.datasets)
    result = result or ResultSeries.new()
    texts = seg_texts(
        f"{segment.label} probability by {segment.algorithm_name} {segment.algorithm_version}", result.supersedes_sop_instance_uid
    )
    seg = hd.seg.Segmentation(
        source_images=sources[:1],
        further_source_images=sources[1:] or None,
        pixel_array=fractions,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=MAX_FRACTIONAL_VALUE,
        segment_descriptions=[segment_description(segment)],
        **new_seg_series_arguments(equipment, series_number, result),
        series_description=seg_series_description(f"{segment.label} probability", flags),
        content_description=texts.content_description,
        content_label=segment.label.upper().replace(" ", "_")[:16],
        tile_pixel_array=True,
        dimension_organization_type=hd.DimensionOrganizationTypeValues.TILED_SPARSE,
        omit_empty_frames=omit_empty_frames,
    )
    # General Image Module: PatientOrientation is Type 2C, required unless the image requires Image
    # Orientation (Patient) or (Slide); a SEG on the slide frame carries neither at the top level
    # (dciodvfy: "Missing attribute Type 2C ... PatientOrientation"). A slide has no patient
    # orientation, so it is present and empty.
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = None
    apply_seg_texts(seg, texts)
    return seg
