"""The slide's findings as DICOM Microscopy Bulk Simple Annotations (highdicom.ann), for Slim and OHIF.

The annotations are the GeoJSON's features (:func:`operators.wsi.outputs.geojson.detections_and_contours_geojson`,
the app's one geometry), in the same coordinates: level-0 pixels, x right, y down, the top-left corner
of the top-left pixel at (0, 0). That is DICOM's 2D image coordinate system of the total pixel matrix
(PS3.3 C.10.5.1.2 Graphic Data; Annotation Coordinate Type "2D", Pixel Origin Interpretation VOLUME),
so the source image is the slide's level-0 VOLUME instance and no coordinate is transformed.

Two annotation groups (a group with no annotation is left out; with neither there is no object):

1. "Tumor detections": one POINT per NMS detection, its measurement DCM 111047 "Probability of cancer"
   (unit UCUM ``1``), the detection's probability;
2. "Tumor regions": one POLYGON per region of the map at or above the threshold, its exterior ring
   without the closing point (the ANN graphic type closes polygons implicitly, PS3.3 C.37.1.2), with
   the region's maximum probability (DCM 111047) and its area net of holes (SCT 42798000 "Area", UCUM
   ``um2``). ANN polygons cannot carry holes; the GeoJSON keeps them.

Both groups are coded like the SEG's segment: SCT 49755003 "Morphologically Abnormal Structure" and
SCT 14799000 "Neoplasm, Secondary", with the algorithm (name and version from the model card).

Only a DICOM slide gets annotations, as only a DICOM slide gets a SEG
(:mod:`operators.wsi.outputs.dicom_seg`): an annotation must reference its source image by UID, and a
TIFF or SVS has no instance in any archive to reference, nor a patient or study to join; the GeoJSON
carries the same geometry for such slides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from operators.dicom.result_texts import result_series_description
from operators.dicom.seg import EquipmentSpec, ResultSeries, SegmentSpec, new_seg_series_arguments, with_empty_type2_attributes
from operators.wsi.slide.dicom_source import VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE

PROBABILITY = codes.DCM.ProbabilityOfCancer  # DCM 111047
AREA = codes.SCT.Area  # SCT 42798000
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
SQUARE_MICROMETER = hd.sr.CodedConcept("um2", "UCUM", "square micrometer")
AI_FAMILY = hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence")
DETECTIONS_LABEL, REGIONS_LABEL = "Tumor detections", "Tumor regions"


def _features(feature_collection: dict[str, Any], geometry_type: str) -> list[dict[str, Any]]:
    return [f for f in feature_collection.get("features", []) if f.get("geometry", {}).get("type") == geometry_type]


def _exterior_without_closing_point(feature: dict[str, Any]) -> np.ndarray:
    ring = np.asarray(feature["geometry"]["coordinates"][0], dtype=np.float64)
    return ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring


def _group(
    number: int,
    label: str,
    graphic_type: hd.ann.GraphicTypeValues,
    graphic_data: list[np.ndarray],
    segment: SegmentSpec,
    measurements: list[hd.ann.Measurements],
    description: str,
) -> hd.ann.AnnotationGroup:
    return hd.ann.AnnotationGroup(
        number=number,
        uid=hd.UID(),
        label=label,
        annotated_property_category=segment.property_category,
        annotated_property_type=segment.property_type,
        graphic_type=graphic_type,
        graphic_data=graphic_data,
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=segment.algorithm_name, family=AI_FAMILY, version=segment.algorithm_version
        ),
        measurements=measurements,
        description=description,
    )


def annotation_groups(feature_collection: dict[str, Any], segment: SegmentSpec) -> list[hd.ann.AnnotationGroup]:
    """The detections' points and the regions' outlines of a GeoJSON FeatureCollection as annotation groups."""
    groups: list[hd.ann.AnnotationGroup] = []
    points = _features(feature_collection, "Point")
    if points:
        groups.append(
            _group(
                len(groups) + 1,
                DETECTIONS_LABEL,
                hd.ann.GraphicTypeValues.POINT,
                [np.asarray([f["geometry"]["coordinates"]], dtype=np.float64) for f in points],
                segment,
                [hd.ann.Measurements(PROBABILITY, np.asarray([f["properties"]["measurements"]["probability"] for f in points]), NO_UNITS)],
                "Lesion detections (non-maximum suppression of the tumor probability map)",
            )
        )
    polygons = _features(feature_collection, "Polygon")
    if polygons:
        measured = [f["properties"]["measurements"] for f in polygons]
        groups.append(
            _group(
                len(groups) + 1,
                REGIONS_LABEL,
                hd.ann.GraphicTypeValues.POLYGON,
                [_exterior_without_closing_point(f) for f in polygons],
                segment,
                [
                    hd.ann.Measurements(PROBABILITY, np.asarray([m["max probability"] for m in measured]), NO_UNITS),
                    hd.ann.Measurements(AREA, np.asarray([m["area um^2"] for m in measured]), SQUARE_MICROMETER),
                ],
                f"Outlines of the map's regions at or above probability {measured[0]['threshold']:g} (holes left out)",
            )
        )
    return groups


def build_bulk_annotations(
    source_image: Dataset,
    feature_collection: dict[str, Any],
    segment: SegmentSpec,
    equipment: EquipmentSpec,
    series_number: int = 903,
    result: ResultSeries | None = None,
    flags: Sequence[str] = (),
) -> hd.ann.MicroscopyBulkSimpleAnnotations | None:
    """Microscopy Bulk Simple Annotations of ``source_image`` (the slide's level-0 VOLUME instance header)
    holding the FeatureCollection's points and polygons; None when it holds neither. ``result`` places it
    (a new series when None); ``flags`` (the SEG's, e.g. "UNVERIFIED MODEL") go into its SeriesDescription."""
    if str(source_image.get("SOPClassUID", "")) != VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE:
        raise ValueError(f"annotations reference a VL Whole Slide Microscopy Image, got SOP Class {source_image.get('SOPClassUID')}")
    groups = annotation_groups(feature_collection, segment)
    if not groups:
        return None
    annotations = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=with_empty_type2_attributes([source_image]),
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=groups,
        **new_seg_series_arguments(equipment, series_number, result),
        content_description=f"{segment.label} findings by {segment.algorithm_name} {segment.algorithm_version}"[:64],
        content_label="TUMOR_FINDINGS",
    )
    annotations.SeriesDescription = result_series_description(f"{segment.label} findings", flags)
    return annotations
