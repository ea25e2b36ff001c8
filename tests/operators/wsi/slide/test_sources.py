from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from operators.core.errors import AppInputError
from operators.wsi.slide.sources import SlideSource, find_slides


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_folder_of_slide_files_and_dicom_slide_folders(tmp_path: Path):
    touch(tmp_path / "b.svs")
    touch(tmp_path / "a.tif")
    dicom = tmp_path / "c_dicom"
    dicom.mkdir()
    touch(dicom / "level0.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes())
    touch(tmp_path / "notes.txt")
    assert find_slides(tmp_path) == [
        SlideSource("a", tmp_path / "a.tif"),
        SlideSource("b", tmp_path / "b.svs"),
        SlideSource("c_dicom", dicom),
    ]


def test_a_dicom_instance_file_means_its_folder(tmp_path: Path):
    instance = touch(tmp_path / "slide7" / "x", Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert find_slides(instance) == [SlideSource("slide7", tmp_path / "slide7")]
    assert find_slides(tmp_path / "slide7") == [SlideSource("slide7", tmp_path / "slide7")]


@pytest.mark.parametrize(
    ("files", "message"), [([], "no slides"), (["readme.md"], "no slides"), (["x.tif", "x.svs"], "share output names")]
)
def test_unusable_inputs_are_refused(tmp_path: Path, files, message):
    for name in files:
        touch(tmp_path / name)
    with pytest.raises(AppInputError, match=message):
        find_slides(tmp_path)
