"""The volume SR (TID 1500) read back by highdicom, dciodvfy and dcmqi's tid1500reader."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import Comprehensive3DSRStorage

from operators.ct.seg_writer import build_binary_seg
from operators.ct.series_selector import select_ct_series
from operators.ct.sr_writer import MILLILITER, build_volume_sr
from operators.ct.summary import organ_volume_ml
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import scan_dicom_folder
from operators.dicom.seg import EquipmentSpec, ResultSeries, SegmentSpec, write_seg
from testkit.dicom_factories import ct_stack, save_all
from tests.validators import dciodvfy_errors, requires_dciodvfy, requires_dcmqi, tid1500_metadata

SEGMENT = SegmentSpec("Spleen", codes.SCT.AnatomicalStructure, codes.SCT.Spleen, "Spleen CT segmentation (test)", "0.1.0")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "spleen_seg_app", "0.1.0", "test-host")


@pytest.fixture
def volume_and_seg(tmp_path: Path):
    save_all(ct_stack([6.0, 0.0, 4.0, 2.0, 8.0], rows=16, columns=12), tmp_path / "ct")
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))
    mask = np.zeros(volume.hu_zyx.shape, np.uint8)
    mask[1:4, 4:9, 3:7] = 1
    seg_path = write_seg(build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT), tmp_path / "seg.dcm")
    return volume, mask, dcmread(seg_path, stop_before_pixels=True)


def written_sr(seg: Dataset, volume_ml: float, folder: Path) -> Path:
    return write_seg(build_volume_sr(seg, volume_ml, SEGMENT, EQUIPMENT), folder / "sr.dcm")  # the one atomic DICOM write


def volume_group(sr: hd.sr.Comprehensive3DSR) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    [group] = sr.content.get_volumetric_roi_measurement_groups()
    return group


def text_values(container: Dataset, name: Code) -> list[str]:
    """TextValue of the container's children named ``name`` (e.g. TID 4019's Algorithm Name)."""
    return [str(item.TextValue) for item in container.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == name.value]


@pytest.mark.parametrize("volume_ml", [0.0, 0.123, 187.654321])
def test_sr_reads_back_with_highdicom_to_the_volume_of_the_segment(volume_and_seg, tmp_path: Path, volume_ml):
    _, _, seg = volume_and_seg
    sr = hd.sr.srread(written_sr(seg, volume_ml, tmp_path))
    group = volume_group(sr)
    [measurement] = group.get_measurements(name=codes.SCT.Volume)
    assert measurement.value == pytest.approx(round(volume_ml, 3), abs=1e-9)
    assert measurement.unit == MILLILITER and measurement.unit.value == "ml"
    referenced = group.referenced_segment
    assert referenced is not None and referenced.referenced_segment_numbers == [1]
    assert (referenced[0].referenced_sop_instance_uid, referenced[0].referenced_sop_class_uid) == (seg.SOPInstanceUID, seg.SOPClassUID)
    assert referenced.source_series_for_segmentation.value == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    container = group[0]
    assert text_values(container, codes.DCM.AlgorithmName) == [SEGMENT.algorithm_name]
    assert text_values(container, codes.DCM.AlgorithmVersion) == [SEGMENT.algorithm_version]
    assert text_values(measurement[0], codes.DCM.AlgorithmName) == [SEGMENT.algorithm_name]
    assert group.finding_type == codes.SCT.Spleen and group.finding_category == codes.SCT.AnatomicalStructure
    assert group.tracking_uid == seg.SegmentSequence[0].TrackingUID


def test_sr_joins_the_ct_study_in_its_own_series(volume_and_seg, tmp_path: Path):
    volume, _, seg = volume_and_seg
    sr = dcmread(written_sr(seg, 10.0, tmp_path))
    ct = volume.source_datasets[0]
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert (sr.StudyInstanceUID, sr.PatientID) == (ct.StudyInstanceUID, ct.PatientID)
    assert sr.SeriesInstanceUID not in {ct.SeriesInstanceUID, seg.SeriesInstanceUID}
    assert sr.Modality == "SR" and "NOT FOR CLINICAL USE" in sr.SeriesDescription
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    [study] = sr.CurrentRequestedProcedureEvidenceSequence
    [series] = study.ReferencedSeriesSequence
    assert (series.SeriesInstanceUID, [ref.ReferencedSOPInstanceUID for ref in series.ReferencedSOPSequence]) == (
        seg.SeriesInstanceUID,
        [seg.SOPInstanceUID],
    )
    assert (sr.Manufacturer, sr.ManufacturerModelName, sr.SoftwareVersions) == ("clinical-ai-apps", "spleen_seg_app", "0.1.0")


def test_sr_placed_by_a_result_series_keeps_its_uids(volume_and_seg):
    _, _, seg = volume_and_seg
    result = ResultSeries.new("1.2.826.0.1.3680043.8.498.778")
    sr = build_volume_sr(seg, 1.0, SEGMENT, EQUIPMENT, result=result)
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (result.series_instance_uid, result.sop_instance_uid)


@pytest.mark.parametrize(
    ("flags", "description"),
    [((), "Spleen volume - NOT FOR CLINICAL USE"), (("IMPLAUSIBLE VOLUME",), "Spleen volume - IMPLAUSIBLE VOLUME - NOT FOR CLINICAL USE")],
)
def test_sr_carries_the_segs_flags_in_its_series_description(volume_and_seg, flags, description):
    _, _, seg = volume_and_seg
    assert build_volume_sr(seg, 1.0, SEGMENT, EQUIPMENT, flags=flags).SeriesDescription == description


def _without_source_series(seg: Dataset) -> Dataset:
    broken = copy.deepcopy(seg)
    del broken.ReferencedSeriesSequence
    return broken


def _as_ct(seg: Dataset) -> Dataset:
    broken = copy.deepcopy(seg)
    broken.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return broken


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (None, {"segment_number": 2}, r"has no segment 2 \(it has \[1\]\)"),
        (None, {"volume_ml": float("nan")}, "finite, non-negative"),
        (None, {"volume_ml": -1.0}, "finite, non-negative"),
        (None, {"segment": SegmentSpec("Liver", codes.SCT.AnatomicalStructure, codes.SCT.Liver, "x", "1")}, "is 'Spleen', not 'Liver'"),
        (_without_source_series, {}, "references 0 source series"),
        (_as_ct, {}, "Segmentation Storage"),
    ],
)
def test_sr_refuses_what_it_cannot_reference_truthfully(volume_and_seg, change, kwargs, message):
    _, _, seg = volume_and_seg
    arguments = {"seg": change(seg) if change else seg, "volume_ml": 5.0, "segment": SEGMENT, "equipment": EQUIPMENT} | kwargs
    with pytest.raises(ValueError, match=message):
        build_volume_sr(**arguments)


@requires_dciodvfy
@pytest.mark.parametrize("volume_ml", [0.0, 187.654])
def test_sr_passes_dciodvfy(volume_and_seg, tmp_path: Path, volume_ml):
    _, _, seg = volume_and_seg
    assert dciodvfy_errors(written_sr(seg, volume_ml, tmp_path)) == []


@requires_dcmqi
def test_dcmqi_tid1500reader_reads_the_volume_the_segment_and_the_algorithm(volume_and_seg, tmp_path: Path):
    volume, mask, seg = volume_and_seg
    volume_ml = organ_volume_ml(mask, volume.voxel_volume_mm3)
    metadata = tid1500_metadata(written_sr(seg, volume_ml, tmp_path), tmp_path)
    [group] = metadata["Measurements"]
    [item] = group["measurementItems"]
    assert float(item["value"]) == pytest.approx(volume_ml, abs=5e-4)
    assert (item["units"]["CodeValue"], item["units"]["CodingSchemeDesignator"]) == ("ml", "UCUM")
    assert item["quantity"]["CodeValue"] == "118565006"
    assert group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID and group["ReferencedSegment"] == 1
    assert group["SourceSeriesForImageSegmentation"] == volume.source_datasets[0].SeriesInstanceUID
    assert group["measurementAlgorithmIdentification"] == {
        "AlgorithmName": SEGMENT.algorithm_name,
        "AlgorithmVersion": SEGMENT.algorithm_version,
    }
    assert group["FindingSite"]["CodeValue"] == codes.SCT.Spleen.value
