from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from operators.core.atomic_io import write_atomically, write_json_atomically
from operators.core.errors import OutputFolderError, OutputWriteError
from operators.core.output_set import STAGING_PREFIX, check_output_folder, publish_output_set, staged_output_set

OUTPUTS = ("seg.dcm", "surface.stl", "summary.json")


def contents(folder: Path) -> dict[str, str]:
    return {p.name: (p.read_text() if p.is_file() else "<dir>") for p in sorted(folder.iterdir())}


def previous_set(folder: Path) -> Path:
    folder.mkdir()
    for name in OUTPUTS:
        (folder / name).write_text(f"old {name}")
    return folder


def test_a_finished_body_publishes_the_set_and_removes_what_the_new_set_lacks(tmp_path: Path):
    out = previous_set(tmp_path / "out")
    (out / "error.json").write_text("an earlier failure")
    (out / "notes.txt").write_text("the user's own file")
    with staged_output_set(out, OUTPUTS) as staging:
        assert staging.parent == out and staging.name.startswith(STAGING_PREFIX)
        (staging / "seg.dcm").write_text("new seg")  # no STL this time
        write_json_atomically(staging / "summary.json", {"run": 2})
    assert contents(out) == {"notes.txt": "the user's own file", "seg.dcm": "new seg", "summary.json": '{\n  "run": 2\n}\n'}


def test_a_failing_body_leaves_the_previous_set_and_no_staging_folder(tmp_path: Path):
    out = previous_set(tmp_path / "out")
    before = contents(out)
    with pytest.raises(RuntimeError, match="graph failed"), staged_output_set(out, OUTPUTS) as staging:
        (staging / "seg.dcm").write_text("half a result")
        raise RuntimeError("graph failed")
    assert contents(out) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_running_out_of_room_is_an_output_folder_error_keeping_the_previous_set(tmp_path: Path, code: int):
    out = previous_set(tmp_path / "out")
    before = contents(out)

    def write(tmp: Path) -> None:
        tmp.write_text("part of a")
        raise OSError(code, os.strerror(code))

    message = f"cannot write the outputs into {out}: no space left for seg.dcm [(]{os.strerror(code)}[)]; the previous outputs are kept$"
    with pytest.raises(OutputFolderError, match=message):
        with staged_output_set(out, OUTPUTS) as staging:
            write_atomically(staging / "seg.dcm", write)
    assert contents(out) == before


def test_a_short_write_without_an_errno_is_an_output_write_error(tmp_path: Path):
    def write(tmp: Path) -> None:
        raise OSError("19372 requested and 8190 written")  # what numpy's tofile raises on a full disk

    with pytest.raises(OutputWriteError, match="cannot write surface.stl .19372 requested and 8190 written"):
        write_atomically(tmp_path / "surface.stl", write)
    assert list(tmp_path.iterdir()) == []


def test_a_set_without_its_marker_is_never_published(tmp_path: Path):
    out = previous_set(tmp_path / "out")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "seg.dcm").write_text("new")
    with pytest.raises(RuntimeError, match="no summary.json"):
        publish_output_set(staging, out, OUTPUTS)
    assert (out / "seg.dcm").read_text() == "old seg.dcm"


def test_the_output_folder_is_created_and_probed(tmp_path: Path):
    assert check_output_folder(tmp_path / "new" / "out", 1) == tmp_path / "new" / "out"
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "a_file" / "out", r"is not writable \(Not a directory\)"),
        (lambda tmp: Path("/proc"), "is not writable"),  # takes no new file, even from root
    ],
)
def test_an_unusable_output_folder_is_named(tmp_path: Path, make, message: str):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputFolderError, match=message):
        check_output_folder(make(tmp_path), 1)


def test_an_output_folder_without_room_for_the_outputs_is_named(tmp_path: Path):
    stats = os.statvfs(tmp_path)
    free = stats.f_bavail * stats.f_frsize
    with pytest.raises(OutputFolderError, match="MiB free, the outputs need about"):
        check_output_folder(tmp_path, free + 2**40)


def test_a_publication_failing_part_way_says_the_folder_holds_no_complete_set(tmp_path: Path):
    out = previous_set(tmp_path / "out")
    (out / "surface.stl").unlink()
    (out / "surface.stl").mkdir()  # a rename onto a folder fails after the marker is gone
    (out / "surface.stl" / "x").write_text("")
    with pytest.raises(OutputFolderError, match=r"\(Is a directory\); the folder holds no complete set \(no summary.json\)$"):
        with staged_output_set(out, OUTPUTS) as staging:
            write_atomically(staging / "surface.stl", lambda tmp: tmp.write_text("new"))
            write_json_atomically(staging / "summary.json", {"run": 2})
    assert "summary.json" not in contents(out) and not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())


def test_a_destination_that_cannot_be_made_is_an_output_folder_error(tmp_path: Path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputFolderError, match=r"output folder .*a_file/slide is not writable \(Not a directory\)"):
        with staged_output_set(tmp_path / "a_file" / "slide", OUTPUTS):
            pass
