"""The spleen SEG read by dcmqi's segimage2itkimage lands on the CT as SimpleITK's series reader reads it.

Two readers nobody here wrote: dcmqi (DCMTK-based) reads the SEG, SimpleITK (GDCM) the source series;
their origin, spacing and direction must agree, and so must the mask's voxels, matched slice by slice
through the SOP Instance UIDs of the files SimpleITK ordered.
"""

from __future__ import annotations

import math
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from operators.ct.seg_writer import build_binary_seg
from operators.ct.series_selector import select_ct_series
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import scan_dicom_folder
from operators.dicom.seg import EquipmentSpec, SegmentSpec, write_seg
from testkit.dicom_factories import ct_stack, save_all
from tests.validators import requires_dcmqi, seg_to_itk_images

SEGMENT = SegmentSpec("Spleen", codes.SCT.AnatomicalStructure, codes.SCT.Spleen, "Spleen CT segmentation (test)", "0.1.0")
EQUIPMENT = EquipmentSpec("clinical-ai-apps", "spleen_seg_app", "0.1.0", "test-host")
TILT = math.radians(20.0)
ORIENTATIONS = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "oblique": (1.0, 0.0, 0.0, 0.0, math.cos(TILT), math.sin(TILT)),
}


def sitk_series(folder: Path) -> tuple[sitk.Image, list[str]]:
    """The CT as SimpleITK's ImageSeriesReader reads it, and the SOP Instance UIDs in its slice order."""
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(files)
    return reader.Execute(), [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]


@requires_dcmqi
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, RLELossless], ids=["explicit-le", "rle"])
def test_dcmqi_reads_the_seg_onto_the_ct_geometry_simpleitk_reads(tmp_path: Path, orientation, transfer_syntax):
    slices = ct_stack([6.0, 0.0, 4.0, 2.0, 8.0, 10.0], rows=16, columns=12, orientation=ORIENTATIONS[orientation])
    for ds in slices:
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
    save_all(slices, tmp_path / "ct")
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))
    mask = np.zeros(volume.hu_zyx.shape, np.uint8)
    mask[1:4, 3:11, 2:6] = 1
    mask[4, 12:15, 8:11] = 1  # an asymmetric part: a flip of any axis moves it
    seg_path = write_seg(build_binary_seg(volume.source_datasets, mask, SEGMENT, EQUIPMENT), tmp_path / "seg.dcm")

    [segment_image] = seg_to_itk_images(seg_path, tmp_path / "dcmqi")
    seg_image = sitk.ReadImage(str(segment_image))
    ct, ct_uids = sitk_series(tmp_path / "ct")
    assert seg_image.GetSize() == ct.GetSize()
    np.testing.assert_allclose(seg_image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(seg_image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(seg_image.GetDirection(), ct.GetDirection(), atol=1e-5)
    ours = {str(ds.SOPInstanceUID): index for index, ds in enumerate(volume.source_datasets)}
    expected = mask[[ours[uid] for uid in ct_uids]]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg_image), expected)


@requires_dcmqi
def test_dcmqi_reads_the_seg_of_an_enhanced_ct_onto_the_single_frame_series_simpleitk_reads(tmp_path: Path):
    """Legacy Converted Enhanced CT (highdicom's converter) with its frames out of order: the SEG references
    frames, and dcmqi must still put every voxel where SimpleITK puts the single-frame original's."""
    slices = ct_stack([6.0, 0.0, 4.0, 2.0, 8.0, 10.0], rows=16, columns=12, orientation=ORIENTATIONS["oblique"])
    save_all(slices, tmp_path / "ct")
    order = [3, 0, 5, 1, 4, 2]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage([slices[i] for i in order], generate_uid(), 901, generate_uid(), 1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "enhanced")))
    assert volume.multiframe_source
    mask = np.zeros(volume.hu_zyx.shape, np.uint8)
    mask[1:4, 3:11, 2:6] = 1
    mask[4, 12:15, 8:11] = 1
    seg = build_binary_seg(volume.source_images, volume.in_source_order(mask), SEGMENT, EQUIPMENT)
    [segment_image] = seg_to_itk_images(write_seg(seg, tmp_path / "seg.dcm"), tmp_path / "dcmqi")
    seg_image = sitk.ReadImage(str(segment_image))
    ct, ct_uids = sitk_series(tmp_path / "ct")
    np.testing.assert_allclose(seg_image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(seg_image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(seg_image.GetDirection(), ct.GetDirection(), atol=1e-5)
    single_frame = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))  # the same grid, slices by position
    np.testing.assert_allclose(volume.affine_lps, single_frame.affine_lps, atol=1e-6)
    ours = {str(ds.SOPInstanceUID): index for index, ds in enumerate(single_frame.source_datasets)}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg_image), mask[[ours[uid] for uid in ct_uids]])
