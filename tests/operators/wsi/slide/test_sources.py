from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from operators.core.errors import AppInputError
from operators.wsi.slide.sources import SlideSource, find_slides, output_name


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


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("slide 7", "slide 7"),
        ("..", "__"),
        (".", "_"),
        (".hidden", "_hidden"),
        ("a\nb\x00c", "a_b_c"),
        ("back\\slash", "back_slash"),
        ("", "slide"),
        ("1.2.840.113619", "1.2.840.113619"),
    ],
)
def test_output_names_stay_one_folder_inside_the_output_folder(name, safe):
    assert output_name(name) == safe


def test_a_slide_named_dot_dot_gets_a_folder_of_its_own(tmp_path: Path):
    slide = touch(tmp_path / "in" / "...svs")
    assert find_slides(slide) == [SlideSource("__", slide)]  # its stem is "..": never the output folder's parent


def test_a_dicom_folder_given_through_dot_dot_is_named_by_the_folder_it_means(tmp_path: Path):
    touch(tmp_path / "case1" / "level0.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (tmp_path / "case1" / "sub").mkdir()
    assert find_slides(tmp_path / "case1" / "sub" / "..") == [SlideSource("case1", tmp_path / "case1")]
