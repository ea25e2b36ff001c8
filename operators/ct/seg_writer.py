"""Write a binary DICOM Segmentation (highdicom) on the grid of its source CT slices.

One frame per source slice, empty frames included: viewers then place every frame at its source
slice's position (omitting empty frames has made SEGs appear shifted in some viewers). When the
volume left out slices of the series (unreadable pixel data at an end), ImageComments says so and
names them, and the result's flags (SeriesDescription) carry SLICES DROPPED.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from monai.deploy.core import Fragment, OperatorSpec
from pydicom.dataset import Dataset

from operators.ct.file_writer import VolumeMaskFileWriter
from operators.ct.volume import CTVolume
from operators.dicom.result_texts import dropped_slices_note
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
    write_seg,
)

logger = logging.getLogger(__name__)


def build_binary_seg(
    source_datasets: Sequence[Dataset],
    mask_zyx: np.ndarray,
    segment: SegmentSpec,
    equipment: EquipmentSpec,
    series_number: int = 900,
    result: ResultSeries | None = None,
    flags: Sequence[str] = (),
    note: str | None = None,
) -> hd.seg.Segmentation:
    """A BINARY SEG with one frame per source slice; ``mask_zyx`` follows ``source_datasets``' order.

    A multi-frame source (Enhanced CT) is one dataset, and ``mask_zyx`` then follows its frames
    (``CTVolume.in_source_order``): each SEG frame references its source frame by number.

    ``result`` places it (a new series when None, or the series of an earlier result it supersedes);
    ``flags`` (e.g. "IMPLAUSIBLE VOLUME") go into its SeriesDescription, ``note`` (e.g. the slices of the
    series it leaves out) into its ImageComments.
    """
    frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in source_datasets)
    if mask_zyx.shape[0] != frames:
        raise ValueError(f"mask has {mask_zyx.shape[0]} slices, the source {frames} frames")
    description = segment_description(segment)
    result = result or ResultSeries.new()
    texts = seg_texts(f"{segment.label} by {segment.algorithm_name} {segment.algorithm_version}", result.supersedes_sop_instance_uid, note)
    seg = hd.seg.Segmentation(
        source_images=with_empty_type2_attributes(source_datasets),
        pixel_array=(mask_zyx > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        **new_seg_series_arguments(equipment, series_number, result),
        series_description=seg_series_description(segment.label, flags),
        content_description=texts.content_description,
        content_label=segment.label.upper().replace(" ", "_")[:16],
        omit_empty_frames=False,
    )
    apply_seg_texts(seg, texts)
    return seg


class DicomSegWriterOperator(VolumeMaskFileWriter):
    """Writes the mask as a BINARY DICOM SEG referencing the source slices.

    Named inputs:
        volume: CTVolume, whose ``source_images`` are referenced: the slices, or one multi-frame instance.
        mask: numpy uint8 (z, y, x) on the volume's grid.
        checks: an object with ``flags`` (operators.ct.checks.ResultChecks), written into SeriesDescription.
        The volume's dropped slices, if any, are named in ImageComments.

    Named outputs:
        seg_path: pathlib.Path of the written file.

    File outputs:
        <output_path>: the SEG (Segmentation Storage), in ``result``'s series, written atomically.
    """

    OUTPUT_PATH = "seg_path"
    INPUT_CHECKS = "checks"
    STAGE = "dicom_seg"

    def __init__(
        self, fragment: Fragment, *args, segment: SegmentSpec, equipment: EquipmentSpec, result: ResultSeries | None = None, **kwargs
    ) -> None:
        self.segment = segment
        self.equipment = equipment
        self.result = result
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        super().setup(spec)
        spec.input(self.INPUT_CHECKS)

    def compute(self, op_input, op_output, context) -> None:
        volume: CTVolume = op_input.receive(self.INPUT_VOLUME)
        mask = op_input.receive(self.INPUT_MASK)
        flags = tuple(op_input.receive(self.INPUT_CHECKS).flags)
        with self.timings.stage(self.STAGE):
            source_mask = volume.in_source_order(mask)
            dropped = [(d.sop_instance_uid, d.image_position_patient_mm, d.reason) for d in volume.dropped_slices]
            note = dropped_slices_note(len(volume.source_datasets), dropped)
            seg = build_binary_seg(
                volume.source_images, source_mask, self.segment, self.equipment, result=self.result, flags=flags, note=note
            )
            path = write_seg(seg, self.output_path)
        logger.info("Wrote DICOM SEG %s", path)
        op_output.emit(path, self.OUTPUT_PATH)
