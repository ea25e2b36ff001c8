"""Write a binary DICOM Segmentation (highdicom) on the grid of its source CT slices.

One frame per source slice, empty frames included: viewers then place every frame at its source
slice's position (omitting empty frames has made SEGs appear shifted in some viewers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from monai.deploy.core import Fragment
from pydicom.dataset import Dataset

from operators.ct.file_writer import VolumeMaskFileWriter
from operators.ct.volume import CTVolume
from operators.dicom.seg import (
    EquipmentSpec,
    SegmentSpec,
    new_seg_series_arguments,
    seg_series_description,
    segment_description,
    with_empty_type2_attributes,
    write_seg,
)

logger = logging.getLogger(__name__)


def build_binary_seg(
    source_datasets: Sequence[Dataset],
    mask_zyx: np.ndarray,
    segment: SegmentSpec,
    equipment: EquipmentSpec,
    series_number: int = 900,
) -> hd.seg.Segmentation:
    """A BINARY SEG with one frame per source slice; ``mask_zyx`` follows ``source_datasets``' order."""
    if mask_zyx.shape[0] != len(source_datasets):
        raise ValueError(f"mask has {mask_zyx.shape[0]} slices, source series {len(source_datasets)}")
    description = segment_description(segment)
    seg = hd.seg.Segmentation(
        source_images=with_empty_type2_attributes(source_datasets),
        pixel_array=(mask_zyx > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        **new_seg_series_arguments(equipment, series_number),
        series_description=seg_series_description(segment.label),
        content_description=f"{segment.label} by {segment.algorithm_name} {segment.algorithm_version}"[:64],
        content_label=segment.label.upper().replace(" ", "_")[:16],
        omit_empty_frames=False,
    )
    return seg


class DicomSegWriterOperator(VolumeMaskFileWriter):
    """Writes the mask as a BINARY DICOM SEG referencing the source slices.

    Named inputs:
        volume: CTVolume, whose ``source_datasets`` are the referenced slices, in mask order.
        mask: numpy uint8 (z, y, x) on the volume's grid.

    Named outputs:
        seg_path: pathlib.Path of the written file.

    File outputs:
        <output_path>: the SEG (Segmentation Storage), written atomically.
    """

    OUTPUT_PATH = "seg_path"
    STAGE = "dicom_seg"

    def __init__(self, fragment: Fragment, *args, segment: SegmentSpec, equipment: EquipmentSpec, **kwargs) -> None:
        self.segment = segment
        self.equipment = equipment
        super().__init__(fragment, *args, **kwargs)

    def write(self, volume: CTVolume, mask: np.ndarray) -> Path:
        path = write_seg(build_binary_seg(volume.source_datasets, mask, self.segment, self.equipment), self.output_path)
        logger.info("Wrote DICOM SEG %s", path)
        return path
