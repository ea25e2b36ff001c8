"""The spleen app's DICOM outputs read by tools nobody here wrote: dcmqi (tid1500reader, segimage2itkimage),
SimpleITK, dciodvfy, and a real Orthanc that takes them by C-STORE and STOW-RS and returns them on WADO-RS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread, uid

from gateway.config import Destination
from gateway.runner import dicom_outputs, output_set_problem
from gateway.sender import cstore_files, stow_files
from operators.models.config import load_model_card
from testkit.dicomweb import wado_rs_instance
from testkit.orthanc import Orthanc
from testkit.transcode import transcode_series
from tests.conftest import run_app
from tests.validators import dciodvfy_errors, requires_dciodvfy, requires_dcmqi, seg_to_itk_images, tid1500_metadata

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs the app end to end (its own limit: 900 s)
SR_FILE, SEG_FILE = "spleen_sr.dcm", "spleen_seg.dcm"


@pytest.fixture(scope="module")
def demo_run(demo_ct, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("spleen_dicom_outputs")
    result = run_app("spleen_seg_app", ["-i", str(demo_ct.dicom_dir), "-o", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def test_the_sr_is_listed_beside_the_seg_and_the_gateway_exports_both(demo_run):
    out, summary = demo_run
    assert (summary["outputs"]["dicom_seg"], summary["outputs"]["dicom_sr"]) == (SEG_FILE, SR_FILE)
    exported = dicom_outputs(out)
    assert set(exported) == {out / SEG_FILE, out / SR_FILE}
    assert exported[out / SR_FILE].sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert output_set_problem(out) is None
    sr, seg = dcmread(out / SR_FILE), dcmread(out / SEG_FILE, stop_before_pixels=True)
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == summary["input"]["study_instance_uid"]
    assert len({sr.SeriesInstanceUID, seg.SeriesInstanceUID, summary["input"]["series_instance_uid"]}) == 3


@requires_dciodvfy
def test_the_sr_passes_dciodvfy(demo_run):
    out, _ = demo_run
    assert dciodvfy_errors(out / SR_FILE) == []


@requires_dcmqi
def test_dcmqi_reads_the_summary_volume_of_the_seg_segment_made_by_the_model_of_the_card(demo_run, tmp_path: Path):
    out, summary = demo_run
    [group] = tid1500_metadata(out / SR_FILE, tmp_path)["Measurements"]
    [item] = group["measurementItems"]
    assert summary["spleen"]["volume_ml"] > 0
    assert float(item["value"]) == pytest.approx(summary["spleen"]["volume_ml"], abs=5e-4)
    assert (item["units"]["CodeValue"], item["units"]["CodingSchemeDesignator"]) == ("ml", "UCUM")
    seg = dcmread(out / SEG_FILE, stop_before_pixels=True)
    assert (group["segmentationSOPInstanceUID"], group["ReferencedSegment"]) == (seg.SOPInstanceUID, 1)
    assert group["SourceSeriesForImageSegmentation"] == summary["input"]["series_instance_uid"]
    card = load_model_card("spleen_ct_segmentation")
    assert group["measurementAlgorithmIdentification"] == {"AlgorithmName": card["name"], "AlgorithmVersion": card["version"]}


def simpleitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def dcmqi_seg_on(ct: sitk.Image, seg_path: Path, folder: Path) -> np.ndarray:
    """The SEG's one segment as dcmqi's segimage2itkimage reads it, after checking it lies on ``ct``'s grid."""
    [segment_image] = seg_to_itk_images(seg_path, folder)
    seg_image = sitk.ReadImage(str(segment_image))
    assert seg_image.GetSize() == ct.GetSize()
    np.testing.assert_allclose(seg_image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(seg_image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(seg_image.GetDirection(), ct.GetDirection(), atol=1e-5)
    return sitk.GetArrayFromImage(seg_image)


@requires_dcmqi
def test_dcmqi_reads_the_seg_onto_the_ct_as_simpleitk_reads_the_series(demo_run, demo_ct, tmp_path: Path):
    out, summary = demo_run
    ct = simpleitk_series(demo_ct.dicom_dir)
    mask = dcmqi_seg_on(ct, out / SEG_FILE, tmp_path / "dcmqi")
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    assert int(mask.sum()) == summary["spleen"]["voxel_count"]
    assert mask.sum() * voxel_ml == pytest.approx(summary["spleen"]["volume_ml"], abs=1e-3)
    # the mask lands where the app found it: the centroid of its voxels, through SimpleITK's own geometry, is the summary's
    centroid = np.mean([ct.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]]) for index in np.argwhere(mask)], axis=0)
    np.testing.assert_allclose(centroid, summary["spleen"]["centroid_lps_mm"], atol=0.01)


@requires_dcmqi
def test_a_jpeg_lossless_series_gives_the_same_seg_voxels_and_sr_volume_to_dcmqi(demo_run, demo_ct, tmp_path: Path):
    out, summary = demo_run
    transcode_series(demo_ct.dicom_dir, tmp_path / "jpeg-lossless", uid.JPEGLosslessSV1)  # DCMTK's dcmcjpeg
    compressed_out = tmp_path / "out"
    result = run_app("spleen_seg_app", ["-i", str(tmp_path / "jpeg-lossless"), "-o", str(compressed_out)])
    assert result.returncode == 0, result.stderr[-3000:]
    ct = simpleitk_series(demo_ct.dicom_dir)
    np.testing.assert_array_equal(
        dcmqi_seg_on(ct, compressed_out / SEG_FILE, tmp_path / "compressed"), dcmqi_seg_on(ct, out / SEG_FILE, tmp_path / "uncompressed")
    )
    [group] = tid1500_metadata(compressed_out / SR_FILE, tmp_path)["Measurements"]
    assert float(group["measurementItems"][0]["value"]) == pytest.approx(summary["spleen"]["volume_ml"], abs=5e-4)


def test_orthanc_takes_seg_and_sr_by_c_store_and_stow_rs_and_returns_them_on_wado_rs(demo_run, orthanc_dicomweb: Orthanc):
    out, _ = demo_run
    files = [out / SEG_FILE, out / SR_FILE]
    by_cstore = Destination(name="orthanc", type="dicom", ae_title=orthanc_dicomweb.aet, host="127.0.0.1", port=orthanc_dicomweb.dicom_port)
    assert cstore_files(files, by_cstore, "GATEWAY") == dict.fromkeys(files)
    assert stow_files(files, Destination(name="web", type="dicomweb", url=f"{orthanc_dicomweb.url}/dicom-web")) == dict.fromkeys(files)
    for path in files:
        sent = dcmread(path)
        returned = wado_rs_instance(f"{orthanc_dicomweb.url}/dicom-web", sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID)
        assert returned == sent
