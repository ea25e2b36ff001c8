"""How an app is started (as its MAP runs it) and which of its outputs are sent; the job listing."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread

from gateway.cli import format_jobs
from gateway.config import Route
from gateway.queue import Job, Supersession
from gateway.runner import (
    DicomOutput,
    build_command,
    build_env,
    dicom_outputs,
    job_paths,
    last_error_line,
    output_set_problem,
    run_app,
)
from testkit.gateway_samples import ct_series, write_series

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_app_folder_runs_with_python_and_the_holoscan_variables(tmp_path: Path):
    route = Route(
        name="spleen", match={"Modality": ("CT",)}, app=Path("/apps/spleen_seg_app"), model=Path("/models/model.ts"), args=("--x", "1")
    )
    paths = job_paths(tmp_path, 7)
    assert build_command(route, "python3", paths.input, paths.output) == ["python3", "/apps/spleen_seg_app", "--x", "1"]
    env = build_env(route, {"PATH": "/bin"}, paths)
    assert env["HOLOSCAN_INPUT_PATH"] == str(tmp_path / "000007" / "input")
    assert env["HOLOSCAN_OUTPUT_PATH"] == str(tmp_path / "000007" / "output")
    assert env["HOLOSCAN_MODEL_PATH"] == "/models/model.ts" and env["PATH"] == "/bin"


@pytest.mark.parametrize(
    ("earlier", "extra"),
    [
        (None, []),
        (Supersession(3, "1.2.9", "1.2.8"), ["--result-series-uid", "1.2.8", "--supersedes-sop-uid", "1.2.9"]),
        (Supersession(3), []),  # the earlier job made no SEG (or several): a new series
    ],
)
def test_a_rerun_tells_the_app_the_series_to_keep_and_the_seg_it_supersedes(earlier: Supersession | None, extra: list[str]):
    route = Route(name="spleen", match={"Modality": ("CT",)}, app=Path("/apps/spleen_seg_app"), args=("--x", "1"))
    command = build_command(route, "python3", Path("/in"), Path("/out"), earlier)
    assert command == ["python3", "/apps/spleen_seg_app", "--x", "1", *extra]


def test_configured_command_gets_input_output_and_model_filled_in(tmp_path: Path):
    route = Route(
        name="map",
        match={"Modality": ("CT",)},
        model=Path("/m"),
        command=("monai-deploy", "run", "spleen:1.0", "-i", "{input}", "-o", "{output}", "--model={model}"),
    )
    assert build_command(route, "python3", Path("/in"), Path("/out")) == [
        "monai-deploy",
        "run",
        "spleen:1.0",
        "-i",
        "/in",
        "-o",
        "/out",
        "--model=/m",
    ]


def test_only_dicom_files_anywhere_in_the_output_tree_are_outputs(tmp_path: Path):
    [seg] = write_series(ct_series(1), tmp_path / "slide-1")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "overlay.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "tumor_seg.dcm").write_bytes(b"not dicom at all")
    ds = dcmread(seg)
    assert dicom_outputs(tmp_path) == {seg: DicomOutput(seg.stem, CT_IMAGE_STORAGE, str(ds.SeriesInstanceUID))}


def write_set(folder: Path, listed: dict[str, str | None], written: list[str], dicom: tuple[str, ...] | list[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"outputs": listed}))
    for name in written:
        (folder / name).write_bytes(b"data")
    for name in dicom:
        [ds] = ct_series(1)
        ds.save_as(folder / name, enforce_file_format=True)
    return folder


@pytest.mark.parametrize(
    ("listed", "written", "dicom", "problem"),
    [
        ({"dicom_seg": "seg.dcm", "stl": None, "overlay_png": "o.png"}, ["o.png"], ["seg.dcm"], None),
        ({"dicom_seg": "seg.dcm", "overlay_png": "o.png"}, [], ["seg.dcm"], "summary.json lists overlay_png o.png, which is missing"),
        ({"dicom_seg": "seg.dcm"}, [], [], "summary.json lists dicom_seg seg.dcm, which is missing"),
        ({"overlay_png": "o.png"}, ["o.png"], ["stray.dcm"], "stray.dcm is listed in no summary.json"),
        ({"stl": "../s.stl"}, ["../s.stl"], [], "summary.json lists stl ../s.stl, which is outside its folder"),
        ({"stl": "/etc/hostname"}, [], [], "summary.json lists stl /etc/hostname, which is outside its folder"),
    ],
)
def test_an_output_set_is_complete_only_when_every_file_its_summary_lists_is_there(
    tmp_path: Path, listed: dict, written: list[str], dicom: list[str], problem: str | None
):
    found = output_set_problem(write_set(tmp_path / "out", listed, written, dicom))
    assert found == (None if problem is None else f"incomplete output set: {problem}")


def test_an_output_set_without_a_summary_or_with_an_error_record_is_not_exported(tmp_path: Path):
    [seg] = write_series(ct_series(1), tmp_path / "out")
    assert output_set_problem(tmp_path / "out") == f"incomplete output set: no summary.json in {tmp_path / 'out'}"
    (tmp_path / "out" / "summary.json").write_text("[1, 2]")
    assert output_set_problem(tmp_path / "out") == "incomplete output set: summary.json is not a JSON object (AttributeError)"
    (tmp_path / "out" / "error.json").write_text(json.dumps({"error": "disk full\nmore"}))
    assert output_set_problem(tmp_path / "out") == "the app wrote error.json: disk full"
    assert seg.exists()


def test_an_apps_hidden_staging_folder_is_neither_checked_nor_sent(tmp_path: Path):
    write_set(tmp_path / "out", {"dicom_seg": "seg.dcm"}, [], ["seg.dcm"])
    write_set(tmp_path / "out" / ".partial-abc", {"dicom_seg": "seg.dcm", "stl": "s.stl"}, [], ["seg.dcm"])  # another run's, unfinished
    assert output_set_problem(tmp_path / "out") is None
    assert list(dicom_outputs(tmp_path / "out")) == [tmp_path / "out" / "seg.dcm"]


def test_a_whole_slide_app_set_per_slide_folder_is_checked_against_its_own_summary(tmp_path: Path):
    write_set(tmp_path / "out" / "slide-a", {"dicom_seg": "tumor_seg.dcm", "geojson": "d.geojson"}, ["d.geojson"], ["tumor_seg.dcm"])
    write_set(tmp_path / "out" / "slide-b", {"dicom_seg": "tumor_seg.dcm", "geojson": "d.geojson"}, [], ["tumor_seg.dcm"])
    assert output_set_problem(tmp_path / "out") == "incomplete output set: slide-b/summary.json lists geojson d.geojson, which is missing"


def test_app_error_line_is_the_one_the_apps_print(tmp_path: Path):
    log = "INFO loading\nTraceback...\nspleen_seg_app: error: no CT series found\nWARNING bye\n"
    assert last_error_line(log) == "spleen_seg_app: error: no CT series found"
    assert last_error_line("one\ntwo\n") == "two"


def test_app_past_its_timeout_is_stopped_and_reported(tmp_path: Path):
    result = run_app(["sleep", "30"], {}, tmp_path / "log", timeout_s=0.5, stop=threading.Event(), grace_s=1)
    assert result.error == "stopped: timeout after 0.5 s" and result.seconds < 5


def test_missing_command_is_reported_not_raised(tmp_path: Path):
    result = run_app([str(tmp_path / "nope")], {}, tmp_path / "log", timeout_s=5, stop=threading.Event())
    assert result.error.startswith("cannot start") and result.returncode == -1


def test_job_listing_shows_state_attempts_outputs_and_error():
    job = Job(
        id=3,
        group_key="study:1.2",
        route="spleen-ct",
        series_uids=("1.2.3",),
        state="failed",
        attempts=3,
        send_attempts=0,
        error="exit 2: spleen_seg_app: error: no CT series\nmore",
        next_try_at=0,
        created_at=0,
        updated_at=0,
        finished_at=None,
    )
    header, line = format_jobs([job], {3: (0, 1)}, now=0).splitlines()
    assert header.split()[:5] == ["id", "state", "route", "attempts", "outputs"]
    assert line.split()[:5] == ["3", "failed", "spleen-ct", "3", "0/1"]
    assert line.endswith("study:1.2  exit 2: spleen_seg_app: error: no CT series")


def test_job_listing_shows_which_job_superseded_which():
    first = Job(1, "study:1.2", "spleen-ct", ("1.2.3",), "done", 1, 0, None, 0, 0, 0, None)
    rerun = Job(2, "study:1.2", "spleen-ct", ("1.2.3",), "done", 1, 0, None, 0, 0, 0, None, 1, "1.2.9", "1.2.8")
    header, line1, line2 = format_jobs([first, rerun], {}, now=0).splitlines()
    assert "supersedes" in header and "superseded by" in header
    assert line1.split()[-3:] == ["-", "2", "study:1.2"]
    assert line2.split()[-3:] == ["1", "-", "study:1.2"]


def test_an_app_stopped_at_its_timeout_leaves_its_folders_empty_and_its_log(tmp_path: Path):
    output, work = tmp_path / "output", tmp_path / "work"
    script = f"import pathlib, time; pathlib.Path({str(output / 'seg.dcm')!r}).write_bytes(b'partial'); print('wrote', flush=True); time.sleep(60)"
    for folder in (output, work):
        folder.mkdir()
    (work / "scratch").write_bytes(b"x")
    result = run_app(
        [sys.executable, "-c", script],
        {},
        tmp_path / "attempt-1.log",
        timeout_s=3,
        stop=threading.Event(),
        grace_s=1,
        partial=(output, work),
    )
    assert result.error == "stopped: timeout after 3 s"
    assert list(output.iterdir()) == [] and list(work.iterdir()) == []
    assert "wrote" in (tmp_path / "attempt-1.log").read_text()


def test_an_app_that_ends_normally_keeps_its_outputs(tmp_path: Path):
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "seg.dcm").write_bytes(b"whole")
    result = run_app(["true"], {}, tmp_path / "log", timeout_s=30, stop=threading.Event(), partial=(tmp_path / "output",))
    assert result.error is None and (tmp_path / "output" / "seg.dcm").read_bytes() == b"whole"
