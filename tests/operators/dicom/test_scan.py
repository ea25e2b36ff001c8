from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from operators.core.errors import AppInputError
from operators.dicom.scan import counted_list, scan_dicom_folder
from testkit.dicom_factories import ct_stack, save_all


def test_scan_groups_series_at_any_depth_and_skips_non_dicom_and_dicomdir(tmp_path: Path):
    save_all(ct_stack([0, 2, 4]), tmp_path / "a" / "b" / "c", prefix="IMG")
    save_all(ct_stack([0, 2]), tmp_path / "other", prefix="x")
    (tmp_path / "notes.txt").write_text("not DICOM")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    scan = scan_dicom_folder(tmp_path)
    assert sorted(len(s.instances) for s in scan.series) == [2, 3]
    reasons = {p.path.name: p.reason for p in scan.skipped}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert "DICOMDIR" in reasons["DICOMDIR"]


def test_scan_skips_a_file_truncated_inside_its_header(tmp_path: Path):
    paths = save_all(ct_stack([0, 2, 4]), tmp_path)
    paths[1].write_bytes(paths[1].read_bytes()[:200])
    scan = scan_dicom_folder(tmp_path)
    assert len(scan.series[0].instances) == 2
    assert [s.path for s in scan.skipped] == [paths[1]]


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None], ids=["empty-folder", "missing"])
def test_scan_refuses_an_empty_or_missing_input(tmp_path: Path, make):
    target = tmp_path / "input"
    make(target)
    with pytest.raises(AppInputError, match="empty|does not exist"):
        scan_dicom_folder(target)


def test_scan_reads_headers_only(tmp_path: Path):
    save_all(ct_stack([0, 2, 4]), tmp_path)
    header = scan_dicom_folder(tmp_path).series[0].instances[0].header
    assert "PixelData" not in header
    assert isinstance(header, pydicom.Dataset)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.symlink_to(p.parent / "gone.dcm"), "cannot be read (No such file or directory)"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), "not a DICOM file"),
    ],
    ids=["zero-length", "dangling-link", "png"],
)
def test_scan_names_why_a_file_among_good_ones_is_skipped(tmp_path: Path, make, reason):
    save_all(ct_stack([0, 2, 4]), tmp_path / "ct")
    make(tmp_path / "ct" / "odd.dcm")
    scan = scan_dicom_folder(tmp_path)
    assert len(scan.series[0].instances) == 3
    assert [(s.path.name, s.reason) for s in scan.skipped] == [("odd.dcm", reason)]
    assert scan.skipped_summary() == f"1 file skipped: ct/odd.dcm ({reason})"


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["a"], "1 file skipped: a"),
        (["a", "b", "c"], "3 files skipped: a, b, c"),
        (["a", "b", "c", "d", "e"], "5 files skipped: a, b, c and 2 more"),
    ],
)
def test_counted_list_says_how_many_and_names_the_first_three(items, expected):
    assert counted_list(items, "file", "skipped") == expected
