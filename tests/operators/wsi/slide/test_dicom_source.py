from __future__ import annotations

import shutil

import pytest

from operators.core.errors import SlideReadError
from operators.wsi.slide.dicom_source import scan_dicom_slide_folder
from training.synthetic.bad_slides import dicom_wsi_copy, volume_size

DICOM_INSTANCE_LEVELS = ((2220, 2967), (1110, 1484), (555, 742), (278, 371), (139, 186))  # wsidicomizer rounds up


def test_a_dicom_wsi_folder_is_grouped_into_its_volume_levels(dicom_wsi):
    source = scan_dicom_slide_folder(dicom_wsi)
    assert source.level_sizes_xy == DICOM_INSTANCE_LEVELS
    assert {instance.image_type for instance in source.other_instances} == {"LABEL", "OVERVIEW", "THUMBNAIL"}
    assert source.level0_path.parent == dicom_wsi and source.level0_path in {i.path for i in source.volume_levels[0]}
    assert source.mpp_xy() == pytest.approx((0.499, 0.499))
    assert source.series_instance_uid and source.pyramid_uid


def test_every_stray_entry_of_a_folder_is_named_and_hidden_files_are_ignored(tmp_path, dicom_wsi):
    folder = tmp_path / "slide"
    shutil.copytree(dicom_wsi, folder)
    (folder / "readme.txt").write_text("scanner notes\n")
    (folder / "extra").mkdir()
    (folder / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(SlideReadError) as raised:
        scan_dicom_slide_folder(folder)
    message = str(raised.value)
    assert "readme.txt is not a readable DICOM file" in message and "extra is a folder" in message
    assert ".DS_Store" not in message and str(folder) in message


@pytest.mark.parametrize(
    ("keyword", "value", "problem"),
    [
        ("SeriesInstanceUID", "../../../x", "it has an empty component (two dots in a row, or a dot at either end)"),
        ("StudyInstanceUID", "1.2/../../x", "component '2/' is not digits only"),
        ("SOPInstanceUID", "1.2.3." + "4" * 70, "it has 76 characters, more than 64"),
        ("FrameOfReferenceUID", "1.02.3", "component '02' has a leading zero"),
    ],
)
def test_uids_that_are_not_uids_are_refused_naming_the_attribute_and_value(tmp_path, dicom_wsi, keyword, value, problem):
    folder = dicom_wsi_copy(dicom_wsi, tmp_path / "slide", keep=lambda header: volume_size(header) is not None, uids={keyword: value})
    with pytest.raises(SlideReadError) as raised:
        scan_dicom_slide_folder(folder)
    assert str(raised.value).startswith(f"{folder}: {keyword} {value!r} is not a DICOM UID ({problem}; in 5 instances, e.g. ")
