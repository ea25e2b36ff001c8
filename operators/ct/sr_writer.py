"""The organ volume as a DICOM Structured Report: Comprehensive 3D SR holding a TID 1500 Measurement Report.

One measurement group (TID 1411 Volumetric ROI Measurements) per report: the volume in millilitres
(UCUM ``ml``) of one segment of the run's SEG, which it references by SOP Instance UID and segment
number (TID 1411 "Referenced Segment"), together with the source series the SEG was made from
("Source series for segmentation", from the SEG's ReferencedSeriesSequence). The algorithm that made
the segment (TID 4019, name and version from the model card) is recorded on the group and on the
measurement; the observer is the writing application as a device (TID 1004).

The SR inherits patient and study from the SEG (its only evidence), so it joins the CT's study, in a
series of its own. ``highdicom.sr.ReferencedSegment.from_segmentation`` cannot be used on a SEG of one
segment (highdicom 0.28), so the reference is built directly from the SEG's attributes.

Codes (DICOM PS3.16): SCT 118565006 "Volume" (CID 7469 Generic Intensity and Size Measurements), UCUM
``ml`` "milliliter" (CID 7462 Units of Volume), LN 25045-6 "CT unspecified body region" (CID 100), the
segment's own property category and type as finding category and type, and its type as finding site.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from operators.core.timing import StageTimings
from operators.ct.summary import organ_volume_ml
from operators.ct.volume import CTVolume
from operators.dicom.result_texts import result_series_description
from operators.dicom.seg import EquipmentSpec, ResultSeries, SegmentSpec, write_seg

logger = logging.getLogger(__name__)

MILLILITER = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
VOLUME = codes.SCT.Volume
CT_PROCEDURE = codes.LN.CTUnspecifiedBodyRegion
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
VOLUME_DECIMALS = 3  # mL, as summary.json reports it


def seg_segment(seg: Dataset, segment_number: int) -> Dataset:
    """The SEG's SegmentSequence item of ``segment_number``; ValueError naming the numbers it has."""
    numbers = [int(item.SegmentNumber) for item in seg.get("SegmentSequence", [])]
    if segment_number not in numbers:
        raise ValueError(f"SEG {seg.get('SOPInstanceUID')} has no segment {segment_number} (it has {numbers})")
    return seg.SegmentSequence[numbers.index(segment_number)]


def seg_source_series_uid(seg: Dataset) -> str:
    """The one series a SEG references as its source (Common Instance Reference module)."""
    series = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    if len(series) != 1:
        raise ValueError(f"SEG {seg.get('SOPInstanceUID')} references {len(series)} source series, the SR needs exactly one")
    return series[0]


def device_observer(equipment: EquipmentSpec) -> hd.sr.ObserverContext:
    """The writing application as the SR's observer (TID 1004); its UID is derived from the equipment,
    so one installation keeps one Device Observer UID across runs."""
    entropy = [equipment.manufacturer, equipment.model_name, equipment.device_serial_number]
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=entropy),
            name=equipment.model_name,
            manufacturer_name=equipment.manufacturer,
            model_name=equipment.model_name,
            serial_number=equipment.device_serial_number,
        ),
    )


def build_volume_sr(
    seg: Dataset,
    volume_ml: float,
    segment: SegmentSpec,
    equipment: EquipmentSpec,
    segment_number: int = 1,
    series_number: int = 902,
    result: ResultSeries | None = None,
    flags: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR (TID 1500) with ``volume_ml`` (mL) as the volume of segment ``segment_number``
    of ``seg``; ``segment`` names the finding (its codes) and the algorithm (its name and version).

    The segment must exist in the SEG with ``segment``'s label, and the SEG must reference one source
    series; ValueError otherwise. ``result`` places the SR (a new series and instance when None);
    ``flags`` (the SEG's, e.g. "IMPLAUSIBLE VOLUME") go into its SeriesDescription as into the SEG's.
    """
    if str(seg.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise ValueError(f"the SR references a Segmentation Storage instance, got SOP Class {seg.get('SOPClassUID')}")
    if not (math.isfinite(volume_ml) and volume_ml >= 0.0):
        raise ValueError(f"volume must be a finite, non-negative number of mL, got {volume_ml}")
    item = seg_segment(seg, segment_number)
    if str(item.SegmentLabel) != segment.label:
        raise ValueError(f"segment {segment_number} of the SEG is {item.SegmentLabel!r}, not {segment.label!r}")
    algorithm = hd.sr.AlgorithmIdentification(name=segment.algorithm_name, version=segment.algorithm_version)
    referenced_segment = hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(seg_source_series_uid(seg)),
    )
    tracking = hd.sr.TrackingIdentifier(
        uid=str(item.get("TrackingUID") or hd.UID()),
        identifier=str(item.get("TrackingID") or f"{segment.label} volume"),
    )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=referenced_segment,
        finding_type=segment.property_type,
        finding_category=segment.property_category,
        finding_sites=[hd.sr.FindingSite(segment.property_type)],
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=VOLUME, value=round(float(volume_ml), VOLUME_DECIMALS), unit=MILLILITER, algorithm_id=algorithm)
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_observer(equipment)),
        procedure_reported=CT_PROCEDURE,
        imaging_measurements=[group],
    )
    result = result or ResultSeries.new()
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg],
        content=report[0],
        series_instance_uid=result.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=result.sop_instance_uid,
        instance_number=1,
        manufacturer=equipment.manufacturer,
        is_complete=True,
        series_description=result_series_description(f"{segment.label} volume", flags),
    )
    sr.ManufacturerModelName = equipment.model_name
    sr.SoftwareVersions = equipment.software_version
    sr.DeviceSerialNumber = equipment.device_serial_number
    return sr


class VolumeSrWriterOperator(Operator):
    """Writes the organ volume as a TID 1500 SR referencing the segment of the SEG just written.

    Named inputs:
        volume: CTVolume (its voxel volume); mask: numpy uint8 (z, y, x) on the volume's grid;
        seg_path: pathlib.Path of the SEG the SR references (read back: its UIDs are the reference);
        checks: an object with ``flags`` (operators.ct.checks.ResultChecks), written into SeriesDescription.

    Named outputs:
        sr_path: pathlib.Path of the written file.

    File outputs:
        <output_path>: the SR (Comprehensive 3D SR Storage), written atomically.
    """

    INPUT_VOLUME = "volume"
    INPUT_MASK = "mask"
    INPUT_SEG_PATH = "seg_path"
    INPUT_CHECKS = "checks"
    INPUTS = (INPUT_VOLUME, INPUT_MASK, INPUT_SEG_PATH, INPUT_CHECKS)
    OUTPUT_PATH = "sr_path"
    STAGE = "dicom_sr"

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_path: Path,
        segment: SegmentSpec,
        equipment: EquipmentSpec,
        timings: StageTimings,
        **kwargs,
    ) -> None:
        self.output_path = Path(output_path)
        self.segment = segment
        self.equipment = equipment
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        for name in self.INPUTS:
            spec.input(name)
        spec.output(self.OUTPUT_PATH)

    def compute(self, op_input, op_output, context) -> None:
        volume: CTVolume = op_input.receive(self.INPUT_VOLUME)
        mask: np.ndarray = op_input.receive(self.INPUT_MASK)
        seg_path: Path = op_input.receive(self.INPUT_SEG_PATH)
        flags = tuple(op_input.receive(self.INPUT_CHECKS).flags)
        with self.timings.stage(self.STAGE):
            seg = dcmread(seg_path, stop_before_pixels=True)
            volume_ml = organ_volume_ml(mask, volume.voxel_volume_mm3)
            path = write_seg(build_volume_sr(seg, volume_ml, self.segment, self.equipment, flags=flags), self.output_path)
        logger.info("Wrote DICOM SR %s (%s %.1f mL)", path, self.segment.label, volume_ml)
        op_output.emit(path, self.OUTPUT_PATH)
